"""Calibrations: what "normal" means for a user's machine, fitted on their clips, and their files.

A calibration is a scorer (``anomaly.scorers``: the model's window scorer or, by default, a ``Reference``
of the user's clips) fitted on normal recordings, tied to one bundle. Its file is one ``.npz`` holding the
scorer's arrays, its held-out normal scores and a JSON ``meta`` entry naming the encoder (by sha256) and
preprocessing it was made with, so that any other model refuses it, and its method (``SCORERS``):

- format 3, ``method: "reference"``: a ``Reference`` and its familiarity check (the default);
- format 2: the window scorer with a standardiser and recipe of its own, thresholds from k-fold held-out
  clip scores; format 1: the same with the bundle's recipe and standardiser.

Every file is checked on load (``calibration_problems``): a forged or damaged one is refused in one line.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly.bundle import Bundle
from anomaly.errors import BundleError, CalibrationError, CalibrationFileError
from anomaly.familiarity import Familiarity
from anomaly.safenpz import CALIBRATION_MAX_BYTES, CALIBRATION_MAX_ELEMENTS, read_npz_checked
from anomaly.scorers import SCORERS, Scorer
from anomaly.scoring import Thresholds
from anomaly.sound import Sound

KIND = "gearbox-sound-check calibration"
CALIBRATION_FORMAT_VERSION = 3
READABLE_CALIBRATION_VERSIONS = (1, 2, 3)
# Fewer user clips than this cannot give a spread for the thresholds.
MIN_CALIBRATION_CLIPS = 3
# Below this many clips the thresholds are wide and we say so.
ROUGH_CALIBRATION_CLIPS = 10


@dataclass
class Calibration:
    """A scorer fitted on a user's own normal clips, and what its file says of it (``meta``)."""

    scorer: Scorer
    meta: dict

    @property
    def thresholds(self) -> Thresholds:
        return self.scorer.thresholds

    @property
    def normal_scores(self) -> np.ndarray:
        return self.scorer.normal_scores

    @property
    def familiarity(self) -> Familiarity | None:
        return self.scorer.familiarity

    @property
    def method(self) -> str:
        return self.scorer.method

    @property
    def n_clips(self) -> int:
        return int(self.meta.get("n_clips", len(self.normal_scores)))

    def named(self, name: str | None) -> Calibration:
        """The same calibration under a name people recognise ("Pump 3, east hall")."""
        clean = " ".join(str(name or "").split())[:MAX_NAME_CHARS] or None
        return Calibration(self.scorer, dict(self.meta, name=clean))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, thresholds=self.thresholds.to_dict())
        with open(path, "wb") as fh:
            np.savez(
                fh,
                meta=np.asarray(json.dumps(meta)),
                normal_scores=np.asarray(self.normal_scores, dtype=np.float64),
                **self.scorer.to_arrays(),
            )
        return path


def check_clip_count(n_clips: int) -> None:
    """Refuse a calibration on fewer than ``MIN_CALIBRATION_CLIPS`` usable clips."""
    if n_clips < MIN_CALIBRATION_CLIPS:
        raise CalibrationError(
            "calibration",
            f"{n_clips} usable normal clip(s); at least {MIN_CALIBRATION_CLIPS} are needed "
            f"({ROUGH_CALIBRATION_CLIPS} or more for tighter thresholds)",
        )


def fit_calibration(
    bundle: Bundle,
    clips: Sequence[Sound | np.ndarray],
    *,
    method: str = "reference",
    domains: Sequence[str] | None = None,
    skipped: Sequence[str] = (),
    name: str | None = None,
    **options,
) -> Calibration:
    """Fit the scorer ``method`` (``SCORERS``) on normal clips (``Sound``s; log-mels in dB for mel-only
    recipes) and wrap it as a calibration of ``bundle``; ``options`` go to the scorer's ``fit``."""
    if method not in SCORERS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {sorted(SCORERS)}")
    check_clip_count(len(clips))
    params = bundle.params
    sounds = [c if isinstance(c, Sound) else Sound(np.asarray(c), params.sr, params.hop_length) for c in clips]
    try:
        scorer, meta = SCORERS[method].fit(
            bundle, sounds, domains=list(domains) if domains is not None else ["user"] * len(sounds), **options
        )
    except ValueError as exc:  # copies of one recording, or a recipe that needs what the clips lack
        raise CalibrationError("calibration", str(exc)) from None
    meta = {
        "kind": KIND,
        "encoder_sha256": bundle.encoder_sha256,
        "preprocessing": bundle.config["preprocessing"],
        "n_clips": len(sounds),
        "skipped": list(skipped),
        **meta,
        "rough": len(sounds) < ROUGH_CALIBRATION_CLIPS,
        "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
    }
    return Calibration(scorer, meta).named(name)


# Scores are distances relative to those of normal recordings (about 1 for a normal one); a threshold a
# thousand times that is no calibration anybody made, and near float's range it overflows the page.
MAX_THRESHOLD = 1000.0
MAX_NAME_CHARS = 80
MAX_CALIBRATION_CLIPS = 1_000_000
# Arrays named like this divide or weigh distances: zero or negative values make every score NaN or inf.
_POSITIVE_ARRAYS = ("scale", "scales", "spread", "std")


def calibration_problems(arrays: dict[str, np.ndarray], meta: dict) -> list[str]:
    """What makes a calibration's values impossible, checked on every array whatever its name and kind:
    every number finite, scales and spreads positive, thresholds finite with 0 < maintenance < severe <=
    ``MAX_THRESHOLD``, a plausible clip count, and a name and date that are short plain text."""
    problems = []
    for key, array in sorted(arrays.items()):
        if array.dtype.kind not in "biufc" or array.size == 0:
            continue
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            problems.append(f"{key} holds NaN or infinite values")
        elif key.endswith(_POSITIVE_ARRAYS) and not (array > 0).all():
            problems.append(f"{key} holds zero or negative scales")
        elif key.endswith("n_clips") and not ((array >= 1) & (array <= MAX_CALIBRATION_CLIPS)).all():
            problems.append(f"{key} is not a plausible number of recordings")
    thresholds = meta.get("thresholds")
    levels = [thresholds.get(k) for k in ("maintenance", "severe")] if isinstance(thresholds, dict) else []
    if len(levels) != 2 or not all(_is_number(v) and math.isfinite(v) for v in levels):
        problems.append("its thresholds are not two finite numbers")
    elif not 0 < levels[0] < levels[1] <= MAX_THRESHOLD:
        problems.append(
            f"its thresholds ({levels[0]:.3g}, {levels[1]:.3g}) are not 0 < maintenance < severe <= "
            f"{MAX_THRESHOLD:g}"
        )
    n_clips = meta.get("n_clips")
    if n_clips is not None and not (_is_number(n_clips) and 1 <= n_clips <= MAX_CALIBRATION_CLIPS):
        problems.append("its number of recordings is not plausible")
    name = meta.get("name")
    if name is not None and not (isinstance(name, str) and len(name) <= MAX_NAME_CHARS and name.isprintable()):
        problems.append(f"its name is not plain text of at most {MAX_NAME_CHARS} characters")
    created = meta.get("created")
    if created is not None:
        try:
            _dt.datetime.fromisoformat(created if isinstance(created, str) and len(created) <= 40 else "")
        except ValueError:
            problems.append("its date is not a date")
    return problems


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_calibration_values(name: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Raise ``CalibrationFileError`` (one line) when ``calibration_problems`` finds any."""
    problems = calibration_problems(arrays, meta)
    if problems:
        more = f" (and {len(problems) - 2} more problems)" if len(problems) > 2 else ""
        raise CalibrationFileError(
            f"{name}: not a usable calibration: {'; '.join(problems[:2])}{more}; calibrate again"
        )



def load_calibration(path: str | Path, bundle: Bundle) -> Calibration:
    """Read a calibration file and refuse it (``BundleError``, or ``CalibrationFileError`` for impossible
    values, one line each) unless it is this tool's and was made with this bundle's encoder."""
    path = Path(path)
    name = path.name
    arrays = read_npz_checked(path, max_bytes=CALIBRATION_MAX_BYTES, max_elements=CALIBRATION_MAX_ELEMENTS)
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError) as exc:
        raise BundleError(f"{name}: not a calibration file of this tool ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{name}: not a calibration file of this tool (its meta is not a JSON object)")
    check_calibration_values(name, arrays, meta)
    if meta.get("kind") != KIND:
        raise BundleError(f"{name}: not a calibration file of this tool")
    if meta.get("format_version") not in READABLE_CALIBRATION_VERSIONS:
        raise BundleError(f"{name}: calibration format version {meta.get('format_version')!r} is not supported")
    if meta.get("encoder_sha256") != bundle.encoder_sha256:
        raise BundleError(
            f"{name}: this calibration was made with another model (encoder "
            f"{str(meta.get('encoder_sha256'))[:12]}...), not the one loaded ({bundle.encoder_sha256[:12]}...); "
            "calibrate again with this model"
        )
    if meta.get("preprocessing") != bundle.config["preprocessing"]:
        raise BundleError(f"{name}: this calibration was made with different preprocessing; calibrate again")
    # Files before format 3 name no method: they hold the model's window scorer.
    method = meta.get("method", "window")
    if method not in SCORERS:
        raise BundleError(f"{name}: calibration method {method!r} is not known to this version")
    try:
        thresholds = Thresholds.from_dict(meta["thresholds"])
        scorer = SCORERS[method].from_arrays(arrays, meta, bundle, thresholds)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{name}: the calibration does not fit this model or is damaged ({exc})") from None
    return Calibration(scorer, meta)
