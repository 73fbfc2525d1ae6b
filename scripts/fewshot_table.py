"""Few-shot adaptation table: every candidate calibration recipe on every real set, same protocol.

Usage::

    python scripts/fewshot_table.py                     # markdown table on stdout
    python scripts/fewshot_table.py --json /tmp/fewshot.json

The protocol is ``anomaly.fewshot`` (``python -m anomaly evaluate DIR --fewshot K``): calibrate on the
first K normal clips of each domain, score every other clip, AUC / pAUC (max_fpr 0.1) per domain.

- DCASE 2020 slider id_00: K = 5, 10, 20 and all 75 clips of ``train/``, scored on ``test/``.
- MIMII fan id_00 and set-b (``normal/``, ``abnormal/``): K = 5 and half of the normals, scored on the
  remaining normals and all abnormal clips.
- Synthetic gearbox corpus (``python -m anomaly synth DIR --seed 5 --train 20 --test 20``, written if
  missing): its ``test/`` folder, K = 3 and 10 per domain, target-domain AUC shown.

"At half" means K = half for the MIMII sets and the full train set for the slider. Real recordings are read
from ``/work/shared/data`` by default and never written anywhere. The run is deterministic (fixed clip
order, full-SVD PCA, Ledoit-Wolf covariance, CPU inference).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from anomaly.dcase import parse_name  # noqa: E402
from anomaly.detector import Detector  # noqa: E402
from anomaly.embedding import CALIBRATION_RECIPE  # noqa: E402
from anomaly.evaluation import auc_report  # noqa: E402
from anomaly.fewshot import evaluate_fewshot, load_sounds, protocol_files, score_clips, split_fewshot  # noqa: E402

DATA = Path("/work/shared/data")
MODEL = "model"  # stands for the bundle's own recipe in CANDIDATES

# (label, recipe, refit the standardiser, PCA size or None for Detector.default_components)
CANDIDATES: list[tuple[str, tuple[str, ...] | None, bool, int | None]] = [
    ("no calibration (model as trained)", None, False, None),
    ("model recipe, model standardiser (calibration before v2)", (MODEL,), False, None),
    ("model recipe, refitted standardiser", (MODEL,), True, None),
    ("encoder_avg", ("encoder_avg",), True, None),
    ("encoder_max", ("encoder_max",), True, None),
    ("encoder_avg + encoder_max", ("encoder_avg", "encoder_max"), True, None),
    ("logmel_mean", ("logmel_mean",), True, None),
    ("logmel_std", ("logmel_std",), True, None),
    ("logmel_max", ("logmel_max",), True, None),
    ("logmel_p95", ("logmel_p95",), True, None),
    ("recon_mean", ("recon_mean",), True, None),
    ("logmel_mean + logmel_std", ("logmel_mean", "logmel_std"), True, None),
    ("logmel_mean + logmel_max", ("logmel_mean", "logmel_max"), True, None),
    ("logmel_mean + logmel_std + logmel_max", ("logmel_mean", "logmel_std", "logmel_max"), True, None),
    (
        "logmel_mean + logmel_std + logmel_max + logmel_p95",
        ("logmel_mean", "logmel_std", "logmel_max", "logmel_p95"),
        True,
        None,
    ),
    ("encoder_avg + logmel_mean + logmel_std", ("encoder_avg", "logmel_mean", "logmel_std"), True, None),
    ("encoder_max + logmel_mean + logmel_std", ("encoder_max", "logmel_mean", "logmel_std"), True, None),
    ("logmel_mean + logmel_std + recon_mean", ("logmel_mean", "logmel_std", "recon_mean"), True, None),
    ("logmel_mean + logmel_std, PCA 8", ("logmel_mean", "logmel_std"), True, 8),
    ("logmel_mean + logmel_std, PCA 64", ("logmel_mean", "logmel_std"), True, 64),
]


def data_sets(args: argparse.Namespace) -> list[dict]:
    """The sets, their K values, the domain whose AUC is shown and which K counts as "half"."""
    return [
        {
            "name": "slider id_00",
            "dir": args.slider,
            "ks": ["5", "10", "20", "all"],
            "domain": "source",
            "half": "all",
        },
        {"name": "fan id_00", "dir": args.fan_id00, "ks": ["5", "half"], "domain": "source", "half": "half"},
        {"name": "fan set-b", "dir": args.fan_set_b, "ks": ["5", "half"], "domain": "source", "half": "half"},
        {
            "name": "synthetic target",
            "dir": args.synth / "test",
            "ks": ["3", "10"],
            "domain": "target",
            "half": None,
        },
    ]


def uncalibrated(detector: Detector, test_dir: Path, ks: list[str], cache: dict) -> dict[str, dict]:
    """The model as trained, scored on exactly the clips each K's protocol scores."""
    pool, labelled = protocol_files(test_dir)
    load_sounds(detector, dict.fromkeys([*pool, *labelled]), cache=cache)
    pool = [p for p in pool if isinstance(cache[p], np.ndarray)]
    labelled = [p for p in labelled if isinstance(cache[p], np.ndarray)]
    out = {}
    for k in ks:
        split = split_fewshot(pool, labelled, k)
        out[k] = auc_report([parse_name(p) for p in split.scored], score_clips(detector, split.scored, cache))
        for domain, entry in out[k].items():
            if domain != "mean":
                entry["n_calibration"] = 0
    return out


def measure(detector: Detector, sets: list[dict]) -> dict:
    """``{candidate label: {set name: {K: report}}}`` for every candidate and set."""
    caches = {s["name"]: {} for s in sets}
    model_recipe = tuple(detector.bundle.config["embedding"]["recipe"])
    results: dict = {}
    for label, recipe, refit, n_components in CANDIDATES:
        results[label] = {}
        for s in sets:
            cache = caches[s["name"]]
            if recipe is None:
                reports = uncalibrated(detector, s["dir"], s["ks"], cache)
            else:
                reports = evaluate_fewshot(
                    detector,
                    s["dir"],
                    s["ks"],
                    recipe=model_recipe if recipe == (MODEL,) else recipe,
                    refit_standardizer=refit,
                    n_components=n_components,
                    cache=cache,
                )
            results[label][s["name"]] = reports
        logging.getLogger("fewshot_table").info("measured %s", label)
    return results


def markdown(results: dict, sets: list[dict], default_label: str) -> str:
    """Recipes as rows, sets x K as columns, "AUC / pAUC"; the default row in bold; summary columns."""
    calibrated = next(v for k, v in results.items() if not k.startswith("no calibration"))
    headers, keys = [], []
    for s in sets:
        for k in s["ks"]:
            n = calibrated[s["name"]][k][s["domain"]]["n_calibration"]
            tag = f"K={n}" if k.isdigit() else f"K={k} ({n})"
            headers.append(f"{s['name']} {tag}")
            keys.append((s["name"], k, s["domain"]))
    lines = [
        "| recipe | " + " | ".join(headers) + " | mean AUC, real, at half | min AUC, real, at half |",
        "|---|" + "---|" * (len(headers) + 2),
    ]
    for label, per_set in results.items():
        cells = []
        for name, k, domain in keys:
            entry = per_set[name][k][domain]
            cells.append(f"{entry['auc']:.2f} / {entry['pauc']:.2f}")
        at_half = [per_set[s["name"]][s["half"]][s["domain"]]["auc"] for s in sets if s["half"]]
        row = [label, *cells, f"{np.mean(at_half):.2f}", f"{np.min(at_half):.2f}"]
        if label == default_label:
            row = [f"**{c}**" for c in row]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[1] / "artifacts")
    parser.add_argument("--slider", type=Path, default=DATA / "dcase2020-slider-id00")
    parser.add_argument("--fan-id00", type=Path, default=DATA / "mimii-fan" / "id00")
    parser.add_argument("--fan-set-b", type=Path, default=DATA / "mimii-fan" / "set-b")
    parser.add_argument(
        "--synth", type=Path, default=Path("/tmp/fewshot-synth"), help="synthetic corpus (written if missing)"
    )
    parser.add_argument("--json", type=Path, help="also write every report as JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # Each calibration logs its own progress; the table is what this script is for.
    logging.getLogger("anomaly").setLevel(logging.ERROR)

    if not (args.synth / "test").is_dir():
        from anomaly.synth import write_corpus

        write_corpus(args.synth, seed=5, n_train=20, n_test=20)
    detector = Detector.load(args.bundle)
    config = detector.bundle.config
    sets = data_sets(args)
    results = measure(detector, sets)
    default_label = " + ".join(CALIBRATION_RECIPE)
    print(
        f"Model: `{args.bundle.name}/`, trained on {config['training']['data']!r}, "
        f"encoder.keras sha256 {config['files']['encoder.keras'][:12]}..., recipe "
        f"{'+'.join(config['embedding']['recipe'])}.\n"
    )
    print(markdown(results, sets, default_label))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
