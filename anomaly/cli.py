"""Command line of the gearbox sound check: ``python -m anomaly COMMAND --help`` for each command.

Progress and diagnostics go to stderr through ``logging``; results go to stdout. Bad input is one line on
stderr naming the file and the problem, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from anomaly.commands import (
    EXIT_BAD_INPUT,
    EXIT_USAGE,
    bench_command,
    calibrate_command,
    evaluate_command,
    predict_command,
    publish_command,
    realbench_command,
    score_archive_command,
    synth_command,
    train_command,
)
from anomaly.embedding import BLOCKS, DEFAULT_RECIPE
from anomaly.errors import AudioInputError, GearboxError


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



def _add_limit_args(p: argparse.ArgumentParser) -> None:
    from anomaly.decoding import MAX_SECONDS

    p.add_argument(
        "--no-limits",
        action="store_true",
        help=f"read recordings of any length and size (trusted archives); by default, as in the app, at most "
        f"{MAX_SECONDS:g} s and 96 kHz stereo's worth of samples per recording",
    )


def _fewshot_k(text: str) -> str:
    from anomaly.fewshot import parse_k

    try:
        return parse_k(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


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
    p.set_defaults(func=synth_command)

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
    p.set_defaults(func=train_command)

    p = sub.add_parser("predict", help="score recordings; --json prints one object per line")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders")
    _add_model_args(p)
    _add_limit_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=predict_command)

    p = sub.add_parser("calibrate", help="refit scorer and thresholds on your own machine's normal clips")
    p.add_argument("normals", nargs="+", metavar="NORMAL_FILE_OR_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="calibration file to write (.npz)")
    p.add_argument("--name", help='a name people recognise, e.g. "Pump 3, east hall"')
    _add_model_args(p, thresholds=False, calibration=False)
    _add_limit_args(p)
    p.set_defaults(func=calibrate_command)

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
    p.set_defaults(func=evaluate_command)

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
    p.set_defaults(func=realbench_command)

    p = sub.add_parser("publish", help="upload a bundle with a model card to a Hugging Face model repo")
    p.add_argument("bundle_dir", metavar="BUNDLE")
    p.add_argument("--repo-id", required=True, metavar="ID")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=os.environ.get("HF_TOKEN"), help="Hub token (default: HF_TOKEN)")
    p.set_defaults(func=publish_command)

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
    p.set_defaults(func=score_archive_command)

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
    p.set_defaults(func=bench_command)
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
