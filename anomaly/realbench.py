"""The real-machine benchmark: the few-shot protocol over every real set, and how the default was chosen.

``python -m anomaly realbench [DATA]`` (``DATA`` defaults to ``../shared/data``) runs the protocol of
``anomaly.fewshot`` (calibrate on the first K normals by file name, score every other labelled clip, AUC
and pAUC with max_fpr 0.1) on each of the seven real machines at K = 3, 5, 10 and half, and prints AUC and
pAUC per set, the worst set and the mean at each set's goal K, and the recipe used. With ``--candidates``
it also measures every candidate recipe at the goal K, picks the one with the best worst set (ties: the best
mean), and checks that choice by leaving each set out in turn (``leave_one_set_out``).

Nothing here is random: the same files give the same numbers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly.errors import AudioInputError
from anomaly.reference import CLIP_BLOCKS, DISTANCES, FUSIONS, Recipe

log = logging.getLogger("anomaly")

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
KS = ("3", "5", "10", "half")
# Tolerance of the leave-one-set-out check: the choice made without a set must be within this of the best
# candidate on that set.
LOSO_TOLERANCE = 0.03


@dataclass(frozen=True)
class RealSet:
    name: str
    folder: str
    goal_k: str
    what: str


SETS = (
    RealSet("fan-id00", "mimii-fan/id00", "10", "MIMII fan id_00, 8 channels downmixed"),
    RealSet("fan-set-b", "mimii-fan/set-b", "half", "MIMII fan, another id, 10 normals"),
    RealSet("slider", "dcase2020-slider-id00", "10", "DCASE 2020 slider id_00 (train/ normals)"),
    RealSet("vmc", "vmc", "10", "vertical machining centre, 1 s clips, tool touching = anomalous"),
    RealSet("machine1", "machines-48k/machine1", "3", "48 kHz industrial machine 1"),
    RealSet("machine2", "machines-48k/machine2", "3", "48 kHz industrial machine 2"),
    RealSet("machine3", "machines-48k/machine3", "3", "48 kHz industrial machine 3"),
)


def candidate_recipes(max_blocks: int = 3) -> list[Recipe]:
    """Every recipe of one to ``max_blocks`` blocks, with each distance and fusion (one fusion for a
    single block, where they agree)."""
    out = []
    for n in range(1, max_blocks + 1):
        for blocks in itertools.combinations(CLIP_BLOCKS, n):
            for distance in DISTANCES:
                for fusion in FUSIONS if n > 1 else FUSIONS[:1]:
                    out.append(Recipe(blocks, distance, fusion))
    return out


def select(table: Mapping[str, Mapping[str, float]], exclude: str | None = None) -> str:
    """The candidate with the best worst set (ties: best mean, then name), over all sets but ``exclude``.

    ``table[candidate][set]`` is an AUC.
    """

    def key(candidate: str) -> tuple[float, float, str]:
        values = [v for s, v in table[candidate].items() if s != exclude]
        return (-min(values), -float(np.mean(values)), candidate)

    return min(table, key=key)


def leave_one_set_out(table: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """For each set: the choice made without it, its AUC there, the best AUC there, and whether it is
    within ``LOSO_TOLERANCE`` of the best."""
    sets = list(next(iter(table.values())))
    rows = []
    for held in sets:
        choice = select(table, exclude=held)
        best = max(table[c][held] for c in table)
        got = table[choice][held]
        rows.append(
            {
                "set": held,
                "choice": choice,
                "auc": got,
                "best": best,
                "ok": bool(got >= best - LOSO_TOLERANCE),
            }
        )
    return rows


def labels_at(detector, folder: Path, k: str, recipe: Recipe, cache: dict) -> dict:
    """What the labels say at K: calibration clips scored by their own calibration, the other normals and
    the anomalies, as shares labelled NEEDS MAINTENANCE or worse and SEVERE ANOMALY."""
    from anomaly.dcase import parse_name
    from anomaly.fewshot import load_log_mels, protocol_files, score_clips, split_fewshot

    pool, labelled = protocol_files(folder)
    specs = load_log_mels(detector, [*pool, *labelled], cache=cache)
    pool = [p for p in pool if not isinstance(specs[p], AudioInputError)]
    labelled = [p for p in labelled if not isinstance(specs[p], AudioInputError)]
    split = split_fewshot(pool, labelled, k)
    calibration = detector.calibrate_specs([specs[p] for p in split.calibration], recipe=recipe)
    t = calibration.thresholds
    adapted = detector.with_calibration(calibration)

    def shares(paths) -> dict:
        scores = score_clips(adapted, paths, specs)
        if not len(scores):
            return {"n": 0}
        return {
            "n": int(len(scores)),
            "maintenance_or_worse": float(np.mean(scores >= t.maintenance)),
            "severe": float(np.mean(scores >= t.severe)),
        }

    normals = [p for p in split.scored if parse_name(p).label == "normal"]
    anomalies = [p for p in split.scored if parse_name(p).label == "anomaly"]
    return {
        "thresholds": [round(t.maintenance, 3), round(t.severe, 3)],
        "calibration_clips": shares(split.calibration),
        "other_normals": shares(normals),
        "anomalies": shares(anomalies),
    }


def run(
    detector,
    data_dir: str | Path | None = None,
    *,
    recipe: Recipe | None = None,
    ks: Sequence[str] = KS,
    candidates: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the benchmark; returns ``{"recipe", "sets": {name: {K: {auc, pauc, ...}}}, "goal": {...},
    "candidates": {...} (with ``candidates``)}``."""
    from anomaly.fewshot import evaluate_fewshot

    data_dir = Path(data_dir or DEFAULT_DATA)
    recipe = recipe or Recipe()
    caches: dict[str, dict] = {}
    results: dict[str, dict] = {}
    for real in SETS:
        folder = data_dir / real.folder
        if not folder.is_dir():
            raise AudioInputError(str(folder), "real set not found; pass the data folder as DATA")
        if progress:
            progress(real.name)
        cache = caches.setdefault(real.name, {})
        per_k = {}
        for k in ks:
            try:
                report = evaluate_fewshot(detector, folder, [k], reference_recipe=recipe, cache=cache)[k]
            except AudioInputError as exc:  # e.g. K = 10 on a set with 10 normals: nothing left to score
                per_k[k] = {"error": exc.problem}
                continue
            domain = next(d for d in report if d != "mean")
            per_k[k] = report[domain]
        results[real.name] = per_k
    labels = {
        s.name: labels_at(detector, data_dir / s.folder, s.goal_k, recipe, caches[s.name]) for s in SETS
    }
    goal = {
        s.name: results[s.name][s.goal_k]
        for s in SETS
        if "auc" in results[s.name].get(s.goal_k, {})
    }
    aucs = [v["auc"] for v in goal.values()]
    out = {
        "recipe": recipe.name,
        "sets": results,
        "goal": {
            "k": {s.name: s.goal_k for s in SETS},
            "auc": {name: v["auc"] for name, v in goal.items()},
            "pauc": {name: v["pauc"] for name, v in goal.items()},
            "worst_set": min(goal, key=lambda n: goal[n]["auc"]),
            "worst_auc": float(min(aucs)),
            "mean_auc": float(np.mean(aucs)),
            "labels": labels,
        },
    }
    if candidates:
        table: dict[str, dict[str, float]] = {}
        for cand in candidate_recipes():
            row = {}
            for real in SETS:
                report = evaluate_fewshot(
                    detector, data_dir / real.folder, [real.goal_k], reference_recipe=cand, cache=caches[real.name]
                )[real.goal_k]
                row[real.name] = next(v for d, v in report.items() if d != "mean")["auc"]
            table[cand.name] = row
        chosen = select(table)
        out["candidates"] = {
            "table": table,
            "chosen": chosen,
            "chosen_is_default": chosen == recipe.name,
            "leave_one_set_out": leave_one_set_out(table),
        }
    return out


def format_report(result: dict) -> str:
    """The benchmark as Markdown tables (what docs/benchmarks.md shows)."""
    ks = list(next(iter(result["sets"].values())))
    lines = [
        f"Recipe: `{result['recipe']}`. Cells: AUC / pAUC (max_fpr 0.1); **bold** = the set's goal K.",
        "",
        "| set | " + " | ".join(f"K={k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for real in SETS:
        cells = []
        for k in ks:
            entry = result["sets"][real.name].get(k, {})
            if "auc" not in entry:
                cells.append("n/a")
                continue
            text = f"{entry['auc']:.2f} / {entry['pauc']:.2f}"
            cells.append(f"**{text}**" if k == real.goal_k else text)
        lines.append(f"| {real.name} | " + " | ".join(cells) + " |")
    goal = result["goal"]
    lines += [
        "",
        f"At each set's goal K: worst set **{goal['worst_set']}** AUC **{goal['worst_auc']:.2f}**, "
        f"mean AUC **{goal['mean_auc']:.3f}**.",
    ]
    lines += [
        "",
        "Labels at the goal K (share labelled NEEDS MAINTENANCE or worse / SEVERE ANOMALY):",
        "",
        "| set | thresholds | calibration clips | other normals | anomalies |",
        "|---|---|---|---|---|",
    ]
    for name, lab in goal["labels"].items():
        cells = [
            f"{lab[g]['maintenance_or_worse']:.0%} / {lab[g]['severe']:.0%} of {lab[g]['n']}" if lab[g]["n"] else "none"
            for g in ("calibration_clips", "other_normals", "anomalies")
        ]
        lines.append(f"| {name} | {lab['thresholds'][0]:.2f} / {lab['thresholds'][1]:.2f} | " + " | ".join(cells) + " |")
    if "candidates" in result:
        cands = result["candidates"]
        table = cands["table"]
        names = [s.name for s in SETS]
        ranked = sorted(table, key=lambda c: (-min(table[c].values()), -np.mean(list(table[c].values())), c))
        lines += [
            "",
            f"Candidates at the goal K ({len(table)}; top 10 by worst set, then mean). Chosen: `{cands['chosen']}`.",
            "",
            "| recipe | " + " | ".join(names) + " | worst | mean |",
            "|---|" + "---|" * (len(names) + 2),
        ]
        for c in ranked[:10]:
            row = table[c]
            lines.append(
                f"| `{c}` | "
                + " | ".join(f"{row[n]:.2f}" for n in names)
                + f" | {min(row.values()):.2f} | {np.mean(list(row.values())):.3f} |"
            )
        lines += ["", "Leave one set out (the choice made without the set, measured on it):", ""]
        lines += ["| left out | choice without it | its AUC there | best there | within 0.03 |", "|---|---|---|---|---|"]
        for r in cands["leave_one_set_out"]:
            lines.append(
                f"| {r['set']} | `{r['choice']}` | {r['auc']:.2f} | {r['best']:.2f} | {'yes' if r['ok'] else 'no'} |"
            )
    return "\n".join(lines)
