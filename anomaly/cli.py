"""Command line of the gearbox sound check: ``python -m anomaly COMMAND --help`` for each command.

Progress and diagnostics go to stderr through ``logging``; results go to stdout. Bad input is one line on
stderr naming the file and the problem, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from anomaly.embedding import BLOCKS, DEFAULT_RECIPE
from anomaly.errors import AudioInputError, GearboxError

log = logging.getLogger("anomaly")

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


class UsageError(GearboxError):
    """Options that cannot go together, or an output that cannot be written: exit 2 with one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ...``) and exit 2, like every other refusal."""

    def error(self, message: str):
        print(f"error: {self.prog.removeprefix('python -m anomaly').strip() or 'usage'}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _threshold(text: str) -> float:
    """A threshold given on the command line: a finite number in (0, MAX_THRESHOLD]."""
    from anomaly.calibration import MAX_THRESHOLD

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= MAX_THRESHOLD):
        raise argparse.ArgumentTypeError(f"{text!r}: a threshold is a number above 0 and at most {MAX_THRESHOLD:g}")
    return value


def _synth(args: argparse.Namespace) -> int:
    from anomaly import synth

    if args.examples:
        from PIL import Image

        from anomaly.features import FeatureParams, log_mel_file
        from anomaly.images import log_mel_to_image

        synth.generate_examples(args.out_dir, seed=args.seed)
        # The image input's example: the same clips as 8-bit spectrograms (see anomaly.features).
        params = FeatureParams()
        for stem in ("normal_source", "fault_tooth"):
            image = log_mel_to_image(log_mel_file(Path(args.out_dir) / f"{stem}.wav", params), params)
            Image.fromarray(image, mode="L").save(
                Path(args.out_dir) / f"spectrogram_{stem}.png", optimize=True
            )
    else:
        synth.write_corpus(args.out_dir, seed=args.seed, n_train=args.train, n_test=args.test)
    return 0


def _train(args: argparse.Namespace) -> int:
    from anomaly.training import train_bundle

    config = train_bundle(
        args.data_dir,
        args.out,
        seed=args.seed,
        epochs=args.epochs,
        n_components=args.components,
        recipe=tuple(b.strip() for b in args.recipe.split(",") if b.strip()),
        description=args.description,
        synthetic=args.synthetic,
    )
    print(json.dumps({"bundle": str(args.out), "thresholds": config["thresholds"]}))
    return 0


def _load_detector(args: argparse.Namespace):
    from anomaly.detector import Detector

    detector = Detector.load(args.bundle, calibration=getattr(args, "calibration", None))
    maintenance, severe = getattr(args, "maintenance", None), getattr(args, "severe", None)
    try:
        return detector.with_thresholds(maintenance, severe)
    except ValueError:
        t = detector.thresholds
        raise UsageError(
            f"--maintenance {maintenance if maintenance is not None else t.maintenance:g} must be below "
            f"--severe {severe if severe is not None else t.severe:g}"
            + (" (the other one is the model's or the calibration's)" if None in (maintenance, severe) else "")
        ) from None


def _max_seconds(args: argparse.Namespace) -> float | None:
    """The app's duration limit (and with it the sample-rate and decoded-size limits), unless
    ``--no-limits``: then any length is read, piece by piece in bounded memory."""
    from anomaly.decoding import MAX_SECONDS

    return None if getattr(args, "no_limits", False) else MAX_SECONDS


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    from anomaly.decoding import MAX_SECONDS

    p.add_argument(
        "--no-limits",
        action="store_true",
        help=f"read recordings of any length and size (trusted archives); by default, as in the app, at most "
        f"{MAX_SECONDS:g} s and 96 kHz stereo's worth of samples per recording",
    )


def _expand(paths: list[str]) -> list[Path]:
    from anomaly.dcase import list_audio

    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(list_audio(p) if p.is_dir() else [p])
    return out


def _predict(args: argparse.Namespace) -> int:
    detector = _load_detector(args)
    files = _expand(args.files)
    failed = 0
    results = detector.analyze_many(files, names=[str(f) for f in files], max_seconds=_max_seconds(args))
    for result in results:
        if isinstance(result, AudioInputError):
            failed += 1
            print(f"error: {result}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.to_json()))
        else:
            print(f"{result.file}\t{result.score:.3f}\t{result.percentile:5.1f}%\t{result.label}")
    return EXIT_BAD_INPUT if failed else 0


def _calibrate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.parent.is_dir():  # said before minutes of work, and no folder is made on a typo
        raise UsageError(f"--out {args.out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; give a file name ending in .npz")
    detector = _load_detector(args)
    files = _expand(args.normals)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            log.info("embedding normal clips: %d/%d", done, total)

    calibration = detector.calibrate(files, progress=progress, name=args.name, max_seconds=_max_seconds(args))
    try:
        calibration.save(out)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write it ({exc.strerror or type(exc).__name__})") from None
    t = calibration.thresholds
    log.info(
        "calibrated on %d clips: maintenance %.3f, severe %.3f%s",
        calibration.n_clips,
        t.maintenance,
        t.severe,
        " (wide: fewer than 10 clips)" if calibration.meta.get("rough") else "",
    )
    print(
        json.dumps({"calibration": str(args.out), "n_clips": calibration.n_clips, "thresholds": t.to_dict()})
    )
    return 0


def _fewshot_k(text: str) -> str:
    from anomaly.fewshot import parse_k

    try:
        return parse_k(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _evaluate_fewshot(args: argparse.Namespace) -> int:
    from anomaly.fewshot import evaluate_fewshot

    for option, given in (("--calibration", args.calibration), ("--record", args.record)):
        if given:
            print(f"error: {option} does not go with --fewshot (each K calibrates anew)", file=sys.stderr)
            return EXIT_USAGE
    recipe = None
    if args.recipe:
        from anomaly.embedding import check_recipe

        try:
            recipe = check_recipe([b.strip() for b in args.recipe.split(",") if b.strip()])
        except ValueError as exc:
            print(f"error: --recipe: {exc}", file=sys.stderr)
            return EXIT_USAGE
    detector = _load_detector(args)
    reports = evaluate_fewshot(detector, args.test_dir, args.fewshot, recipe=recipe)
    if not args.json:
        print(f"recipe: {','.join(recipe) if recipe else 'reference (the default)'}")
        for k, report in reports.items():
            counts = ", ".join(f"{d} {e['n_calibration']}" for d, e in report.items() if d != "mean")
            print(f"K={k} (calibrated on {counts})")
            for domain, entry in report.items():
                line = f"  {domain:8s} AUC {entry['auc']:.3f}  pAUC {entry['pauc']:.3f}"
                if "n_normal" in entry:
                    line += f"  ({entry['n_normal']} normal, {entry['n_anomaly']} anomalous scored)"
                print(line)
    if args.json:
        print(json.dumps(reports))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from anomaly.dcase import parse_name
    from anomaly.evaluation import auc_report, test_files

    if args.fewshot:
        return _evaluate_fewshot(args)
    if args.recipe:
        print("error: --recipe goes with --fewshot only", file=sys.stderr)
        return EXIT_USAGE
    detector = _load_detector(args)
    files = test_files(args.test_dir)
    if not files:
        raise AudioInputError(args.test_dir, "no labelled clips (names must say normal or anomaly)")
    results = detector.analyze_many(files, max_seconds=_max_seconds(args))
    infos, scores = [], []
    for f, r in zip(files, results, strict=True):
        if isinstance(r, AudioInputError):
            print(f"error: {r}", file=sys.stderr)
            continue
        infos.append(parse_name(f))
        scores.append(r.score)
    report = auc_report(infos, scores)
    if args.record:
        from anomaly.bundle import read_config, write_config

        bundle_dir = Path(args.bundle) if args.bundle else detector.bundle.path
        config = read_config(bundle_dir)
        config["metrics"] = {"test_set": args.record, **report}
        write_config(bundle_dir, config)
        log.info("metrics recorded in %s/config.json", bundle_dir)
    if not args.json:
        for domain, entry in report.items():
            line = f"{domain:8s} AUC {entry['auc']:.3f}  pAUC {entry['pauc']:.3f}"
            if "n_normal" in entry:
                line += f"  ({entry['n_normal']} normal, {entry['n_anomaly']} anomalous)"
            print(line)
            for kind, sub in (entry.get("faults") or {}).items():
                print(f"  {kind:14s} AUC {sub['auc']:.3f}  pAUC {sub['pauc']:.3f}")
    if args.json:
        print(json.dumps(report))
    return 0


def _realbench(args: argparse.Namespace) -> int:
    from anomaly import realbench
    from anomaly.reference import Recipe

    try:
        recipe = Recipe.parse(args.recipe) if args.recipe else None
    except ValueError as exc:
        print(f"error: --recipe: {exc}", file=sys.stderr)
        return 2
    detector = _load_detector(args)
    result = realbench.run(
        detector,
        args.data_dir,
        recipe=recipe,
        candidates=args.candidates,
        progress=lambda name: log.info("real set %s", name),
    )
    print(realbench.format_report(result))
    if args.json:
        print(json.dumps(result))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from anomaly.hub import publish

    url = publish(args.bundle_dir, args.repo_id, private=args.private, token=args.token or None)
    print(url)
    return 0


def _score_archive(args: argparse.Namespace) -> int:
    from anomaly import archive
    from anomaly.detector import find_bundle

    if not Path(args.root).is_dir():  # before a cluster is started for nothing
        raise AudioInputError(args.root, "no such folder")
    bundle = find_bundle(args.bundle)
    rules = archive.read_manifest(args.manifest) if args.manifest else []
    out = Path(args.out)
    csv_path = None
    if args.csv is not None:
        csv_path = Path(args.csv) if args.csv else out.with_suffix(".csv")
    with archive.dask_client(args.scheduler, workers=args.workers, quiet=not args.verbose) as client:
        link = archive.dashboard_link(client, local=not args.scheduler)
        workers = len(client.nthreads())
        where = f"the Dask scheduler at {args.scheduler}" if args.scheduler else "a local Dask cluster"
        log.info(
            "scoring on %s: %d worker%s%s",
            where,
            workers,
            "" if workers == 1 else "s",
            f", dashboard {link}" if link else "",
        )
        summary = archive.score_archive(
            args.root,
            out,
            client,
            bundle=bundle,
            rules=rules,
            csv_path=csv_path,
            files_per_task=args.files_per_task,
            checkpoint_s=args.checkpoint_seconds,
            max_seconds=args.max_seconds or None,
            retry_errors=args.retry_errors,
        )
    log.info(
        "%s: %d rows (%d scored now, %d of them errors; %d already scored)",
        out,
        summary.rows,
        summary.scored,
        summary.errors,
        summary.already_scored,
    )
    print(json.dumps(summary.to_json()))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _bench(args: argparse.Namespace) -> int:
    from anomaly.bench import run_benchmark

    return run_benchmark(args)


def _add_model_args(p: argparse.ArgumentParser, *, thresholds: bool = True, calibration: bool = True) -> None:
    p.add_argument(
        "--bundle",
        metavar="DIR",
        help="model bundle folder (default: ANOMALY_HUB_REPO if set, else the bundled artifacts/)",
    )
    if calibration:
        p.add_argument("--calibration", metavar="FILE", help="calibration file made by `calibrate`")
    if thresholds:
        p.add_argument("--maintenance", type=_threshold, help="override the NEEDS MAINTENANCE threshold")
        p.add_argument("--severe", type=_threshold, help="override the SEVERE ANOMALY threshold")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m anomaly", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a deterministic synthetic gearbox corpus in DCASE layout")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    p.add_argument(
        "--train", type=int, default=100, help="normal source-domain training clips (0: test only)"
    )
    p.add_argument("--test", type=int, default=20, help="normal and anomalous test clips per domain")
    p.add_argument("--examples", action="store_true", help="write the bundled example clips instead")
    p.set_defaults(func=_synth)

    p = sub.add_parser("train", help="train a bundle on normal clips (DCASE layout or a plain folder)")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="folder to write the bundle to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--components", type=int, default=32, help="PCA size (capped by the data)")
    p.add_argument(
        "--recipe",
        default=",".join(DEFAULT_RECIPE),
        help=f"comma-separated embedding blocks from {', '.join(BLOCKS)} (default: %(default)s)",
    )
    p.add_argument("--description", help="what the training data is, for config.json and the model card")
    p.add_argument("--synthetic", action="store_true", help="mark the training data as synthetic")
    p.set_defaults(func=_train)

    p = sub.add_parser("predict", help="score recordings; --json prints one object per line")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders")
    _add_model_args(p)
    _add_limit_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_predict)

    p = sub.add_parser("calibrate", help="refit scorer and thresholds on your own machine's normal clips")
    p.add_argument("normals", nargs="+", metavar="NORMAL_FILE_OR_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="calibration file to write (.npz)")
    p.add_argument("--name", help='a name people recognise, e.g. "Pump 3, east hall"')
    _add_model_args(p, thresholds=False, calibration=False)
    _add_limit_args(p)
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("evaluate", help="AUC and pAUC (max_fpr 0.1) per domain and fault kind")
    p.add_argument("test_dir", metavar="TEST_DIR")
    _add_model_args(p, thresholds=False)
    _add_limit_args(p)
    p.add_argument("--json", action="store_true", help="last line: the report as JSON")
    p.add_argument("--record", metavar="TEST_SET", help="store the metrics in the bundle's config.json")
    p.add_argument(
        "--fewshot",
        nargs="+",
        type=_fewshot_k,
        metavar="K",
        help="few-shot protocol: for each K (a number, 'half' or 'all'), calibrate on the first K normal "
        "clips of each domain (by name; from TEST_DIR/train if it exists, else the labelled normals) "
        "and score every other clip; --json keys the reports by K",
    )
    p.add_argument(
        "--recipe",
        metavar="BLOCKS",
        help=f"with --fewshot: comma-separated embedding blocks to calibrate on, from {', '.join(BLOCKS)} "
        "(default: the calibration recipe)",
    )
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "realbench",
        help="few-shot adaptation on every real machine in DATA, as recorded and level-normalised: AUC per set, "
        "the three worst, familiarity",
    )
    p.add_argument(
        "data_dir",
        nargs="?",
        default=None,
        metavar="DATA",
        help="folder of the real sets (default: ../shared/data beside the project)",
    )
    p.add_argument(
        "--candidates",
        action="store_true",
        help="also measure every candidate recipe at the goal K in both passes, pick by the mean of the three "
        "worst sets and check by leaving each set out (about 20 min)",
    )
    p.add_argument(
        "--recipe",
        metavar="RECIPE",
        help="the reference recipe to measure, as 'blocks / distance / fusion' (default: the chosen one)",
    )
    p.add_argument("--json", action="store_true", help="last line: the results as JSON")
    _add_model_args(p, thresholds=False, calibration=False)
    p.set_defaults(func=_realbench)

    p = sub.add_parser("publish", help="upload a bundle with a model card to a Hugging Face model repo")
    p.add_argument("bundle_dir", metavar="BUNDLE")
    p.add_argument("--repo-id", required=True, metavar="ID")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=os.environ.get("HF_TOKEN"), help="Hub token (default: HF_TOKEN)")
    p.set_defaults(func=_publish)

    p = sub.add_parser(
        "score-archive",
        help="score every recording below a folder on a Dask cluster (local by default) into a Parquet table",
        description="Score every recording below ROOT, each against its machine's calibration: the first "
        "matching rule of --manifest, else the calibration.npz of the nearest folder above it, else the "
        "bundled model. One row per file in --out (a file that cannot be scored is a row with its error); "
        "rerun with the same --out to score only what is new or changed. See docs/scale.md.",
    )
    p.add_argument("root", metavar="ROOT", help="the archive's folder (walked recursively)")
    p.add_argument("--out", required=True, metavar="FILE", help="the Parquet table to write or resume")
    p.add_argument(
        "--csv",
        nargs="?",
        const="",
        metavar="FILE",
        help="also write the table as CSV (default name: --out with .csv)",
    )
    p.add_argument(
        "--manifest",
        metavar="FILE",
        help='CSV (pattern,calibration) or TOML ([calibrations] "pattern" = "file"): which calibration '
        "scores which files; 'bundled' for the bundled model; the first matching rule wins",
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--workers", type=_positive_int, help="local worker processes (default: one per core)")
    p.add_argument(
        "--files-per-task",
        type=_positive_int,
        default=16,
        metavar="N",
        help="files per Dask task (default: %(default)s)",
    )
    p.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="write the rows received so far at least this often (default: %(default)s)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        metavar="S",
        help="longer recordings become error rows, which bounds a worker's memory (0: no limit; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--retry-errors", action="store_true", help="also score again the files whose row is an error"
    )
    _add_model_args(p, thresholds=False, calibration=False)
    p.set_defaults(func=_score_archive)

    p = sub.add_parser("bench", help="speed and memory numbers on this machine")
    p.add_argument("--json", action="store_true", help="last line: the numbers as JSON")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (and fewer archive files)")
    p.add_argument(
        "--only",
        nargs="+",
        choices=("engine", "live", "app", "archive"),
        help="measure only these parts (default: all)",
    )
    _add_model_args(p, thresholds=False, calibration=False)
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except AudioInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except GearboxError as exc:  # a bundle, calibration file or Hub problem, or options that do not go together
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file or folder the command was pointed at cannot be read or written
        print(f"error: {exc.filename or ''}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
