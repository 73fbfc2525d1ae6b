"""Few-shot adaptation, measured: calibrate on the first K normal clips of a machine, score all the others.

The protocol behind ``python -m anomaly evaluate DIR --fewshot K [K ...]``:

- The normals to calibrate on come from ``DIR/train`` if it exists (DCASE layout), else from the labelled
  clips themselves (``DIR/test``, or everything below ``DIR``: DCASE names or plain ``normal/`` and
  ``abnormal/`` folders).
- Per domain (source/target in DCASE 2022+ names; other layouts have one), the first K of those normals in
  file-name order are the calibration clips. K is a number, ``"half"`` (half of that domain's normals, at
  least one) or ``"all"``.
- Every labelled clip that is not a calibration clip is scored by the detector calibrated on them
  (``Detector.fit_calibration``), and AUC and pAUC are reported per domain as in ``auc_report``, each
  entry with ``n_calibration``, the number of clips that domain was calibrated on.

Clips that cannot be read are left out of both sides with a warning, so K counts usable clips. Sounds
are cached per file (``cache``), so several K and recipes cost one pass over the audio.

Examples
--------
>>> reports = evaluate_fewshot(detector, "data/fan", ["5", "half"])  # doctest: +SKIP
>>> reports["5"]["source"]["auc"]  # doctest: +SKIP
0.93
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from anomaly.dcase import parse_name
from anomaly.errors import AudioInputError
from anomaly.evaluation import auc_report, test_files
from anomaly.reference import Recipe
from anomaly.sound import Sound
from anomaly.training import training_files

if TYPE_CHECKING:
    from anomaly.detector import Detector

log = logging.getLogger("anomaly")

K_WORDS = ("half", "all")


def parse_k(text: str | int) -> str:
    """Check a K of the protocol and return it in its canonical text form (``"5"``, ``"half"``, ``"all"``).

    Raises
    ------
    ValueError
        neither a positive whole number nor one of ``K_WORDS``.
    """
    value = str(text).strip().lower()
    if value in K_WORDS:
        return value
    if value.isdigit() and int(value) > 0:
        return str(int(value))
    raise ValueError(f"K must be a positive whole number, 'half' or 'all', not {text!r}")


@dataclass(frozen=True)
class FewshotSplit:
    """Which clips one K calibrates on and which it scores (never a calibration clip)."""

    k: str
    calibration: tuple[Path, ...]
    scored: tuple[Path, ...]
    n_calibration: dict[str, int]


def protocol_files(test_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """The normals to calibrate on and the labelled clips to score, before any K is applied.

    Returns ``(pool, labelled)``: ``pool`` holds ``DIR/train``'s normal clips if that folder exists, else
    the labelled normals; ``labelled`` holds every clip whose name or folder says normal or anomaly.
    """
    test_dir = Path(test_dir)
    labelled = test_files(test_dir)
    if (test_dir / "train").is_dir():
        pool = training_files(test_dir)
    else:
        pool = [p for p in labelled if parse_name(p).label == "normal"]
    return pool, labelled


def spread_order(n: int) -> list[int]:
    """``range(n)`` in farthest-first order from 0 (ties: the lower index): 0, n-1, the middle, ...

    Calibration groups taken in this order cover the whole range (of speeds, or of takes in time) with
    few of them, so the groups left to score lie between calibrated ones.
    """
    order = [0] if n else []
    while len(order) < n:
        gaps = [min(abs(i - j) for j in order) for i in range(n)]
        order.append(int(np.argmax(gaps)))
    return order


def split_fewshot(
    pool: Sequence[Path],
    labelled: Sequence[Path],
    k: str | int,
    *,
    group_of: Callable[[Path], str] | None = None,
) -> FewshotSplit:
    """Calibrate on the first K normals of each domain in ``pool`` (by file name); score the rest.

    With ``group_of`` (a clip's take or speed, read from its name), calibration clips are taken group by
    group in ``spread_order`` (all of a group's clips in name order before the next group), and no clip of
    a calibration group is scored: calibration and scored clips then never come from the same take or speed.
    A domain with fewer than K normals is calibrated on all of them, with a warning.
    """
    k = parse_k(k)
    by_domain: dict[str, list[Path]] = {}
    for path in pool:
        by_domain.setdefault(parse_name(path).domain, []).append(Path(path))
    calibration: list[Path] = []
    counts: dict[str, int] = {}
    for domain in sorted(by_domain):
        group = sorted(by_domain[domain], key=lambda p: (p.name, str(p)))
        if group_of is not None:
            keys = sorted({group_of(p) for p in group})
            ranked = {keys[i]: r for r, i in enumerate(spread_order(len(keys)))}
            group.sort(key=lambda p: ranked[group_of(p)])  # stable: name order within a group
        if k == "all":
            n = len(group)
        elif k == "half":
            n = max(1, len(group) // 2)
        else:
            n = int(k)
            if n > len(group):
                log.warning(
                    "K=%s: the %s domain has only %d normal clips to calibrate on; using all of them",
                    k,
                    domain,
                    len(group),
                )
        calibration += group[:n]
        counts[domain] = min(n, len(group))
    chosen = {p.resolve() for p in calibration}
    taken = {group_of(p) for p in calibration} if group_of is not None else set()
    scored = tuple(
        Path(p)
        for p in labelled
        if Path(p).resolve() not in chosen and (group_of is None or group_of(Path(p)) not in taken)
    )
    return FewshotSplit(k=k, calibration=tuple(calibration), scored=scored, n_calibration=counts)


def load_sounds(
    detector: Detector,
    files: Iterable[Path],
    *,
    cache: dict[Path, Sound | AudioInputError] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[Path, Sound | AudioInputError]:
    """The decoded ``Sound`` of each file (log-mel and waveform), or the reason it cannot be read, kept in
    ``cache``."""
    cache = {} if cache is None else cache
    missing = [path for path in dict.fromkeys(Path(f) for f in files) if path not in cache]
    specs, errors = detector.decode_files(missing, progress=progress)
    for i, path in enumerate(missing):
        if i in errors:
            log.warning("skipping %s", errors[i])
        cache[path] = errors.get(i, specs[i])
    return cache


def score_clips(detector: Detector, files: Sequence[Path], sounds_by_file: dict) -> np.ndarray:
    """Clip scores of ``files`` under ``detector``'s active calibration, through the path a user's upload
    takes (``Detector.analyze_sound``: band check, windows or reference segments, score)."""
    return np.array([detector.analyze_sound(sounds_by_file[Path(f)], name=Path(f).name).score for f in files])


def evaluate_split(
    detector: Detector,
    split: FewshotSplit,
    specs_by_file: dict,
    *,
    recipe: Sequence[str] | None = None,
    reference_recipe: Recipe | None = None,
    refit_standardizer: bool = True,
    n_components: int | None = None,
) -> dict:
    """Calibrate ``detector`` on the split's calibration clips, score the others, report AUC per domain.

    With a window ``recipe`` (or ``refit_standardizer=False``) the model's window scorer is refitted
    (calibration format 2); otherwise a ``Reference`` is fitted (``reference_recipe``, default the chosen
    one). Returns ``auc_report``'s dict; each domain's entry also holds ``n_calibration``.
    """
    if recipe is None and refit_standardizer:
        options = {"method": "reference", "recipe": reference_recipe}
    else:
        options = {
            "method": "window",
            "domains": [parse_name(p).domain for p in split.calibration],
            "recipe": recipe,
            "refit_standardizer": refit_standardizer,
            "n_components": n_components,
        }
    calibration = detector.fit_calibration([specs_by_file[p] for p in split.calibration], **options)
    scores = score_clips(detector.with_calibration(calibration), split.scored, specs_by_file)
    report = auc_report([parse_name(p) for p in split.scored], scores)
    for domain, entry in report.items():
        if domain != "mean":
            entry["n_calibration"] = split.n_calibration.get(domain, 0)
    return report


def evaluate_fewshot(
    detector: Detector,
    test_dir: str | Path,
    ks: Sequence[str | int],
    *,
    recipe: Sequence[str] | None = None,
    reference_recipe: Recipe | None = None,
    refit_standardizer: bool = True,
    n_components: int | None = None,
    cache: dict[Path, Sound | AudioInputError] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict]:
    """The few-shot protocol for each K on one folder: ``{K: auc_report with n_calibration}``.

    Parameters
    ----------
    detector : a ``Detector`` (its own calibration, if any, is not used: each K gets a fresh one).
    test_dir : DCASE layout (``train/`` and ``test/``), a folder of DCASE-named clips, or ``normal/`` and
        ``abnormal/`` folders.
    ks : numbers of clips per domain, ``"half"`` or ``"all"``.
    recipe, reference_recipe, refit_standardizer, n_components : see ``evaluate_split``.
    cache : decoded sounds per file, filled on first use; pass the same dict to reuse them.

    Raises
    ------
    AudioInputError
        no labelled clips, or a K that leaves fewer than ``MIN_CALIBRATION_CLIPS`` clips to calibrate on or
        nothing to compare (no normal or no anomalous clip left to score).
    """
    ks = [parse_k(k) for k in ks]
    pool, labelled = protocol_files(test_dir)
    if not labelled:
        raise AudioInputError(
            str(test_dir), "no labelled clips (names or folders must say normal or anomaly)"
        )
    loaded = load_sounds(detector, dict.fromkeys([*pool, *labelled]), cache=cache, progress=progress)
    usable = [p for p in pool if not isinstance(loaded[p], AudioInputError)]
    scorable = [p for p in labelled if not isinstance(loaded[p], AudioInputError)]
    reports: dict[str, dict] = {}
    for k in ks:
        split = split_fewshot(usable, scorable, k)
        report = evaluate_split(
            detector,
            split,
            loaded,
            recipe=recipe,
            reference_recipe=reference_recipe,
            refit_standardizer=refit_standardizer,
            n_components=n_components,
        )
        if not report:
            raise AudioInputError(
                str(test_dir), f"K={k} leaves no normal and anomalous clips of one domain to compare"
            )
        log.info("K=%s: calibrated on %d clips, scored %d", k, len(split.calibration), len(split.scored))
        reports[k] = report
    return reports
