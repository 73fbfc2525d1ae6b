"""The commands of ``python -m anomaly``: one function per verb, taking the parsed arguments.

``anomaly.cli`` parses the command line and turns our errors into one line and an exit code; each verb here
imports what it needs when it runs (``predict`` loads no web stack, ``score-archive`` starts Dask), prints
its results on stdout and logs its progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from anomaly.errors import AudioInputError, GearboxError

log = logging.getLogger("anomaly")

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


class UsageError(GearboxError):
    """Options that cannot go together, or an output that cannot be written: exit 2 with one line."""


def synth_command(args: argparse.Namespace) -> int:
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


def train_command(args: argparse.Namespace) -> int:
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


def _expand(paths: list[str]) -> list[Path]:
    from anomaly.dcase import list_audio

    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(list_audio(p) if p.is_dir() else [p])
    return out


def predict_command(args: argparse.Namespace) -> int:
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
            for note in result.notes:  # a file cut short, a low-rate codec: on stderr, the table stays a table
                print(f"note: {result.file}: {note}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0


def calibrate_command(args: argparse.Namespace) -> int:
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
        print(f"recipe: {','.join(recipe or detector.calibration_recipe)}")
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


def evaluate_command(args: argparse.Namespace) -> int:
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


def realbench_command(args: argparse.Namespace) -> int:
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


def publish_command(args: argparse.Namespace) -> int:
    from anomaly.hub import publish

    url = publish(args.bundle_dir, args.repo_id, private=args.private, token=args.token or None)
    print(url)
    return 0


def score_archive_command(args: argparse.Namespace) -> int:
    from anomaly import archive
    from anomaly.archive_folder import read_manifest
    from anomaly.locate import find_bundle

    if not Path(args.root).is_dir():  # before a cluster is started for nothing
        raise AudioInputError(args.root, "no such folder")
    bundle = find_bundle(args.bundle)
    rules = read_manifest(args.manifest) if args.manifest else []
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


def bench_command(args: argparse.Namespace) -> int:
    from anomaly.bench import run_benchmark

    return run_benchmark(args)

