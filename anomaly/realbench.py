"""The real-machine benchmark: the few-shot protocol over every real set, and how the default was chosen.

``python -m anomaly realbench [DATA]`` (``DATA`` defaults to ``../shared/data``) runs the protocol of
``anomaly.fewshot`` on each of the eleven real machines at K = 3, 5 and 10: calibrate on K normals, score
every other labelled clip through the path an upload takes, AUC and pAUC (max_fpr 0.1). Where the names say
how a set was recorded, calibration and scored clips never share a take (``desk-fan``) or a speed (the two
motors): a new day's recording is harder than the next second of the same one.

Two passes: the clips as recorded, and every clip brought to the same level (``LEVEL_DBFS``), so that a
recipe that only hears loudness shows itself. For each pass: AUC per set and K, and at each set's goal K the
mean of the three worst sets (``worst3``), the worst set and the mean; the labels the goal K gives; and how
often the machine's own new normals are called unfamiliar after adapting, and other machines' clips are not.

With ``--candidates`` every candidate recipe is measured at the goal K in both passes and ranked by
``select``: the mean of the three worst sets, in the worse of the two passes; ties by the same mean in the
level-normalised pass, then by the mean (each rounded, so that a difference of noise does not decide). The choice is checked by leaving
each set out in turn (``leave_one_set_out``), and the report says which sets separate the candidates.

Nothing here is random: the same files give the same numbers.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly.bands import shared_bands
from anomaly.dcase import parse_name
from anomaly.errors import AudioInputError
from anomaly.evaluation import auc_report
from anomaly.fewshot import load_sounds, protocol_files, split_fewshot
from anomaly.reference import CLIP_BLOCKS, DISTANCES, FUSIONS, Recipe
from anomaly.sound import Sound

log = logging.getLogger("anomaly")

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
KS = ("3", "5", "10")
PASSES = ("recorded", "level")
# The level every clip is brought to in the level-normalised pass (RMS, dB below full scale).
LEVEL_DBFS = -30.0
# Tolerance of the leave-one-set-out check: the choice made without a set must be within this of the best
# candidate on that set.
LOSO_TOLERANCE = 0.03
# How many of each other machine's clips are shown to a calibration to see whether it calls them unfamiliar.
OTHER_MACHINE_CLIPS = 6


@dataclass(frozen=True)
class RealSet:
    name: str
    folder: str
    goal_k: str
    what: str
    # A regular expression whose first group, matched on a file's stem, names its take or speed: calibration
    # and scored clips then come from different ones.
    group: str | None = None

    def group_of(self) -> Callable[[Path], str] | None:
        if self.group is None:
            return None
        pattern = re.compile(self.group)

        def group_of(path: Path) -> str:
            m = pattern.match(Path(path).stem)
            return m.group(1) if m else Path(path).stem

        return group_of


SETS = (
    RealSet("fan-id00", "mimii-fan/id00", "10", "MIMII fan id_00, 8 channels downmixed"),
    RealSet("fan-set-b", "mimii-fan/set-b", "5", "MIMII fan, another id, 10 normals"),
    RealSet("fan-id02-0db", "mimii-fan-id02-0db", "5", "MIMII fan id_02 at 0 dB SNR (factory noise as loud)"),
    RealSet("desk-fan", "desk-fan", "10", "desk fan, phone-grade microphone; split by take", r"^[^_]+_([^_]+)_\d+$"),
    RealSet("bldc-motor-m1", "bldc-motor-m1", "3", "brushless motor 1, damaged propeller; split by speed", r"^(rpm\d+)$"),
    RealSet("bldc-motor-m2", "bldc-motor-m2", "3", "brushless motor 2, damaged propeller; split by speed", r"^(rpm\d+)$"),
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


def worst3(values: Sequence[float]) -> float:
    """Mean of the three lowest values (of all of them, when there are fewer)."""
    return float(np.mean(sorted(values)[:3]))


def _rank_key(
    candidate: str,
    table: Mapping[str, Mapping[str, float]],
    level_table: Mapping[str, Mapping[str, float]] | None,
    exclude: str | None,
) -> tuple:
    recorded = worst3([v for s, v in table[candidate].items() if s != exclude])
    level = worst3([v for s, v in level_table[candidate].items() if s != exclude]) if level_table else recorded
    mean = float(np.mean([v for s, v in table[candidate].items() if s != exclude]))
    return (-round(min(recorded, level), 2), -round(level, 2), -round(mean, 3), candidate)


def select(
    table: Mapping[str, Mapping[str, float]],
    level_table: Mapping[str, Mapping[str, float]] | None = None,
    exclude: str | None = None,
) -> str:
    """The candidate with the best mean of its three worst sets, in the worse of the two passes (to 0.01);
    ties: the same mean in the level-normalised pass (``level_table``, to 0.01), then the mean AUC as
    recorded (to 0.001), then name; over all sets but ``exclude``. ``table[candidate][set]`` is an AUC.

    Neither one odd set (the single worst) nor the easy sets (the mean) decide alone, and a recipe that
    hears only loudness cannot win on the recordings as they are: it has to hear the faults in both passes
    (the goal is set for both). Without ``level_table`` the recordings as they are decide.
    """
    return min(table, key=lambda c: _rank_key(c, table, level_table, exclude))


def ranking(
    table: Mapping[str, Mapping[str, float]], level_table: Mapping[str, Mapping[str, float]] | None = None
) -> list[str]:
    """Every candidate, best first, in ``select``'s order."""
    return sorted(table, key=lambda c: _rank_key(c, table, level_table, None))


def leave_one_set_out(
    table: Mapping[str, Mapping[str, float]], level_table: Mapping[str, Mapping[str, float]] | None = None
) -> list[dict]:
    """For each set: the choice made without it, its AUC there, the best AUC there, and whether it is
    within ``LOSO_TOLERANCE`` of the best."""
    sets = list(next(iter(table.values())))
    rows = []
    for held in sets:
        choice = select(table, level_table, exclude=held)
        best = max(table[c][held] for c in table)
        got = table[choice][held]
        rows.append({"set": held, "choice": choice, "auc": got, "best": best, "ok": bool(got >= best - LOSO_TOLERANCE)})
    return rows


def separating_sets(table: Mapping[str, Mapping[str, float]]) -> dict[str, dict]:
    """Per set, how far apart the candidates lie there: the 10th and 90th percentiles of their AUCs. A set
    whose candidates all score the same cannot help choose."""
    sets = list(next(iter(table.values())))
    out = {}
    for s in sets:
        values = np.array([table[c][s] for c in table])
        p10, p90 = np.percentile(values, [10, 90])
        out[s] = {"p10": float(p10), "p90": float(p90), "separates": bool(p90 - p10 >= 0.05)}
    return out


def level_normalised(sound: Sound, level_dbfs: float = LEVEL_DBFS) -> Sound:
    """The recording brought to ``level_dbfs`` RMS."""
    rms = float(np.sqrt(np.mean(np.square(sound.wave, dtype=np.float64))))
    return sound.scaled(level_dbfs - 20.0 * np.log10(max(rms, 1e-12)))


@dataclass
class LoadedSet:
    real: RealSet
    pool: list[Path]
    labelled: list[Path]
    sounds: dict[str, dict[Path, Sound]]  # pass -> file -> sound


def load_sets(detector, data_dir: Path, progress: Callable[[str], None] | None = None) -> list[LoadedSet]:
    out = []
    for real in SETS:
        folder = data_dir / real.folder
        if not folder.is_dir():
            raise AudioInputError(str(folder), "real set not found; pass the data folder as DATA")
        if progress:
            progress(real.name)
        pool, labelled = protocol_files(folder)
        loaded = load_sounds(detector, dict.fromkeys([*pool, *labelled]))
        ok = {p: s for p, s in loaded.items() if not isinstance(s, AudioInputError)}
        out.append(
            LoadedSet(
                real,
                [p for p in pool if p in ok],
                [p for p in labelled if p in ok],
                {"recorded": ok, "level": {p: level_normalised(s) for p, s in ok.items()}},
            )
        )
    return out


def evaluate(detector, data: LoadedSet, k: str, recipe: Recipe, pass_name: str, *, details: bool = False) -> dict:
    """Calibrate on K normals of one set, score the others: AUC, pAUC and counts (``details``: also the
    labels and the share of scored normals called unfamiliar)."""
    sounds = data.sounds[pass_name]
    split = split_fewshot(data.pool, data.labelled, k, group_of=data.real.group_of())
    calibration = detector.fit_calibration([sounds[p] for p in split.calibration], recipe=recipe)
    adapted = detector.with_calibration(calibration)
    analyses = [adapted.analyze_sound(sounds[p], name=p.name) for p in split.scored]
    infos = [parse_name(p) for p in split.scored]
    report = auc_report(infos, [a.score for a in analyses])
    if not report:
        return {"error": f"K={k} leaves no normal and anomalous clips to compare"}
    entry = dict(next(v for d, v in report.items() if d != "mean"))
    entry.pop("faults", None)
    entry["n_calibration"] = len(split.calibration)
    if details:
        t = calibration.thresholds
        is_normal = np.array([i.label == "normal" for i in infos])
        scores = np.array([a.score for a in analyses])
        familiar = np.array([a.familiar for a in analyses])
        entry["thresholds"] = [round(t.maintenance, 3), round(t.severe, 3)]
        entry["normals_maintenance_or_worse"] = float(np.mean(scores[is_normal] >= t.maintenance))
        entry["anomalies_maintenance_or_worse"] = float(np.mean(scores[~is_normal] >= t.maintenance))
        entry["anomalies_severe"] = float(np.mean(scores[~is_normal] >= t.severe))
        entry["normals_unfamiliar"] = float(np.mean(~familiar[is_normal]))
        entry["anomalies_unfamiliar"] = float(np.mean(~familiar[~is_normal]))
        entry["adapted"] = adapted
    return entry


def candidate_auc(detector, data: LoadedSet, recipe: Recipe, pass_name: str, cache: dict) -> float:
    """``evaluate(...)["auc"]`` at the set's goal K, faster for many recipes: the band check of each scored
    clip (``anomaly.bands.shared_bands``, what an upload goes through first) depends on the calibration clips,
    not on the recipe, so it runs once per set and pass (kept in ``cache``). The same numbers."""
    sounds = data.sounds[pass_name]
    split = split_fewshot(data.pool, data.labelled, data.real.goal_k, group_of=data.real.group_of())
    calibration = detector.fit_calibration([sounds[p] for p in split.calibration], recipe=recipe)
    key = (data.real.name, pass_name)
    if key not in cache:
        heard = []
        for p in split.scored:
            spec = sounds[p].log_mel
            level, profile, drop_db = calibration.scorer.band_levels(spec)
            log_mel, _, n_shared = shared_bands(spec, level, profile, drop_db, detector.params, name=p.name)
            heard.append((sounds[p].with_log_mel(log_mel), n_shared, p.name))
        cache[key] = heard
    scorer = calibration.scorer
    scores = [float(scorer.prepare(h, n, name=name).scores.max()) for h, n, name in cache[key]]
    report = auc_report([parse_name(p) for p in split.scored], scores)
    return float(next(v for d, v in report.items() if d != "mean")["auc"])


def other_machines_flagged(adapted, data: LoadedSet, everything: Sequence[LoadedSet], pass_name: str) -> float:
    """Share of other machines' clips (``OTHER_MACHINE_CLIPS`` of each) a calibration calls unfamiliar."""
    flagged = []
    for other in everything:
        if other.real.folder.split("/")[0] == data.real.folder.split("/")[0]:
            continue  # the MIMII fans are one machine type; the other ids are not "another machine" enough
        for p in sorted(other.labelled)[:OTHER_MACHINE_CLIPS]:
            try:
                flagged.append(not adapted.analyze_sound(other.sounds[pass_name][p], name=p.name).familiar)
            except AudioInputError:
                continue  # refused outright (too little of the band): not scored, so not a false "familiar"
    return float(np.mean(flagged)) if flagged else float("nan")


def _summary(per_set: Mapping[str, float]) -> dict:
    values = list(per_set.values())
    return {
        "worst3": worst3(values),
        "worst_set": min(per_set, key=per_set.get),
        "worst_auc": float(min(values)),
        "mean_auc": float(np.mean(values)),
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
    """Run the benchmark; returns ``{"recipe", "passes": {pass: {"sets": {name: {K: entry}}, "goal": ...}},
    "candidates": {...} (with ``candidates``)}``."""
    data_dir = Path(data_dir or DEFAULT_DATA)
    recipe = recipe or Recipe()
    loaded = load_sets(detector, data_dir, progress)
    passes = {}
    for pass_name in PASSES:
        sets: dict[str, dict] = {}
        goal: dict[str, dict] = {}
        for data in loaded:
            per_k = {}
            for k in ks:
                per_k[k] = evaluate(detector, data, k, recipe, pass_name)
            sets[data.real.name] = per_k
            entry = evaluate(detector, data, data.real.goal_k, recipe, pass_name, details=True)
            adapted = entry.pop("adapted")
            entry["other_machines_unfamiliar"] = other_machines_flagged(adapted, data, loaded, pass_name)
            goal[data.real.name] = entry
        aucs = {n: e["auc"] for n, e in goal.items()}
        passes[pass_name] = {"sets": sets, "goal": {"k": {s.name: s.goal_k for s in SETS}, "per_set": goal, **_summary(aucs)}}
    out = {"recipe": recipe.name, "passes": passes}
    if candidates:
        tables: dict[str, dict[str, dict[str, float]]] = {p: {} for p in PASSES}
        heard: dict = {}
        for cand in candidate_recipes():
            for pass_name in PASSES:
                tables[pass_name][cand.name] = {
                    d.real.name: candidate_auc(detector, d, cand, pass_name, heard) for d in loaded
                }
        out["candidates"] = candidates_summary(tables, recipe)
    return out


def candidates_summary(tables: Mapping[str, Mapping[str, Mapping[str, float]]], recipe: Recipe) -> dict:
    """The choice among candidates, from their AUC tables (``tables[pass][candidate][set]``): the chosen one,
    the ranking, the leave-one-set-out check and which sets separate them."""
    table, level_table = tables["recorded"], tables["level"]
    chosen = select(table, level_table)
    return {
        "tables": tables,
        "chosen": chosen,
        "chosen_is_default": chosen == recipe.name,
        "ranking": ranking(table, level_table),
        "leave_one_set_out": leave_one_set_out(table, level_table),
        "separating": {p: separating_sets(tables[p]) for p in PASSES},
    }


def format_report(result: dict) -> str:
    """The benchmark as Markdown tables (what docs/real-benchmark.md shows)."""
    names = [s.name for s in SETS]
    lines = [f"Recipe: `{result['recipe']}`. Cells: AUC / pAUC (max_fpr 0.1); **bold** = the set's goal K.", ""]
    for pass_name, title in (("recorded", "As recorded"), ("level", f"Every clip at {LEVEL_DBFS:g} dBFS")):
        res = result["passes"][pass_name]
        ks = list(next(iter(res["sets"].values())))
        lines += [f"### {title}", "", "| set | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for real in SETS:
            cells = []
            for k in ks:
                entry = res["sets"][real.name].get(k, {})
                if "auc" not in entry:
                    cells.append("n/a")
                    continue
                text = f"{entry['auc']:.2f} / {entry['pauc']:.2f}"
                cells.append(f"**{text}**" if k == real.goal_k else text)
            lines.append(f"| {real.name} | " + " | ".join(cells) + " |")
        g = res["goal"]
        lines += [
            "",
            f"At each set's goal K: mean of the three worst sets **{g['worst3']:.2f}**, worst set "
            f"**{g['worst_set']}** AUC **{g['worst_auc']:.2f}**, mean AUC **{g['mean_auc']:.3f}**.",
            "",
        ]
    lines += [
        "Labels and familiarity at the goal K, as recorded (shares: normals and anomalies at NEEDS MAINTENANCE or "
        "worse, anomalies at SEVERE; own new normals called unfamiliar; other machines' clips called unfamiliar):",
        "",
        "| set | K | thresholds | normals >= maint. | anomalies >= maint. | anomalies severe | own normals unfamiliar | other machines unfamiliar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        e = result["passes"]["recorded"]["goal"]["per_set"][name]
        if "auc" not in e:
            continue
        lines.append(
            f"| {name} | {e['n_calibration']} | {e['thresholds'][0]:.2f} / {e['thresholds'][1]:.2f} | "
            f"{e['normals_maintenance_or_worse']:.0%} of {e['n_normal']} | {e['anomalies_maintenance_or_worse']:.0%} "
            f"of {e['n_anomaly']} | {e['anomalies_severe']:.0%} | {e['normals_unfamiliar']:.0%} | "
            f"{e['other_machines_unfamiliar']:.0%} |"
        )
    if "candidates" in result:
        cands = result["candidates"]
        table, level_table = cands["tables"]["recorded"], cands["tables"]["level"]
        lines += [
            "",
            f"Candidates at the goal K ({len(table)}), top 12 by `select` (mean of the three worst sets in the "
            f"worse pass, then level-normalised, then mean). Chosen: `{cands['chosen']}`.",
            "",
            "| recipe | " + " | ".join(names) + " | worst 3 | worst 3 (level) | mean |",
            "|---|" + "---|" * (len(names) + 3),
        ]
        for c in cands["ranking"][:12]:
            row = table[c]
            lines.append(
                f"| `{c}` | "
                + " | ".join(f"{row[n]:.2f}" for n in names)
                + f" | {worst3(list(row.values())):.2f} | {worst3(list(level_table[c].values())):.2f} | "
                f"{np.mean(list(row.values())):.3f} |"
            )
        lines += ["", "Which sets separate the candidates (10th-90th percentile of the candidates' AUCs):", ""]
        lines += ["| set | as recorded | level-normalised |", "|---|---|---|"]
        sep = cands["separating"]
        for n in names:
            cells = [
                f"{sep[p][n]['p10']:.2f}-{sep[p][n]['p90']:.2f}" + (" (separates)" if sep[p][n]["separates"] else "")
                for p in PASSES
            ]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines += ["", "Leave one set out (the choice made without the set, measured on it):", ""]
        lines += ["| left out | choice without it | its AUC there | best there | within 0.03 |", "|---|---|---|---|---|"]
        for r in cands["leave_one_set_out"]:
            lines.append(
                f"| {r['set']} | `{r['choice']}` | {r['auc']:.2f} | {r['best']:.2f} | {'yes' if r['ok'] else 'no'} |"
            )
    return "\n".join(lines)
