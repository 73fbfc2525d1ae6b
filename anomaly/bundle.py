"""The artifact bundle: encoder, decoder, scorer arrays and ``config.json``, verified on load.

A bundle is a folder::

    config.json    format version, preprocessing, thresholds, labels, training data, metrics,
                   library versions and the sha256 of every other file
    encoder.keras  the encoder sub-model (embedding + bottleneck code)
    decoder.keras  the decoder, for the anomaly map
    arrays.npz     scorer state, input normalisation, reconstruction-error statistics and the
                   held-out normal scores behind the thresholds (plain arrays, no pickle)

A calibration file (``calibrate``) is one ``.npz`` holding a refitted scorer, its thresholds and held-out
scores, and a JSON ``meta`` entry naming the encoder (by sha256), preprocessing and embedding recipe it was
made with, so that it is refused by any other model. Since format version 2 it may also hold its own
standardiser (``embed_mean``, ``embed_std``, fitted on the user's clips); then its recipe may differ from
the bundle's. Version 1 files (the bundle's recipe and standardiser) are still read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.config import DEFAULT_BUNDLE  # noqa: F401 - where callers have always found it
from anomaly.embedding import check_recipe
from anomaly.errors import BundleError, CalibrationFileError
from anomaly.familiarity import Familiarity
from anomaly.features import FeatureParams
from anomaly.reference import Recipe, Reference
from anomaly.scoring import LABELS, MahalanobisScorer, Thresholds

FORMAT_VERSION = 1
CALIBRATION_FORMAT_VERSION = 3
# Version 1 files carry no standardiser and use the bundle's recipe, version 2 files a window recipe and
# standardiser of their own; both mean the same today. Version 3 holds a ``Reference`` (anomaly.reference).
READABLE_CALIBRATION_VERSIONS = (1, 2, 3)
BUNDLE_FILES = ("encoder.keras", "decoder.keras", "arrays.npz")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("tensorflow-cpu", "keras", "numpy", "scikit-learn", "scipy", "librosa", "soundfile"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


@dataclass
class Bundle:
    """A verified bundle: its config, arrays and where it came from. Models are loaded lazily."""

    path: Path
    config: dict
    arrays: dict[str, np.ndarray]
    source: str = "bundled"
    revision: str | None = None
    # The Hub repo that was asked for (None when none was), and one sentence on which model was loaded
    # and why (e.g. "the Hub could not be reached; using the bundled model").
    repo_id: str | None = None
    reason: str | None = None
    _models: tuple | None = field(default=None, repr=False)

    @property
    def params(self) -> FeatureParams:
        return FeatureParams.from_dict(self.config["preprocessing"])

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds.from_dict(self.config["thresholds"])

    @property
    def scorer(self) -> MahalanobisScorer:
        return MahalanobisScorer.from_arrays(self.arrays)

    @property
    def encoder_sha256(self) -> str:
        return self.config["files"]["encoder.keras"]

    def models(self):
        """The encoder and decoder, loaded once."""
        if self._models is None:
            from anomaly.model import load_models

            try:
                self._models = load_models(self.path / "encoder.keras", self.path / "decoder.keras")
            except Exception as exc:  # Keras raises many types for a broken archive
                raise BundleError(f"{self.path}: the model files cannot be loaded ({exc})") from exc
            encoder = self._models[0]
            shape = tuple(int(s) for s in encoder.inputs[0].shape[1:3])
            expected = (self.params.n_mels, self.params.window_frames)
            if shape != expected:
                raise BundleError(
                    f"{self.path}: the encoder takes {shape[0]}x{shape[1]} windows but config.json "
                    f"describes {expected[0]}x{expected[1]}; the preprocessing does not match the model"
                )
        return self._models


def save_bundle(
    out_dir: str | Path, *, encoder, decoder, arrays: dict[str, np.ndarray], config: dict
) -> Path:
    """Write a bundle, filling in format version, library versions and checksums."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder.save(out / "encoder.keras")
    decoder.save(out / "decoder.keras")
    np.savez(out / "arrays.npz", **arrays)
    config = dict(config)
    config["format_version"] = FORMAT_VERSION
    config.setdefault("created", _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat())
    config.setdefault("labels", list(LABELS))
    config["libraries"] = library_versions()
    write_config(out, config)
    return out


def write_config(bundle_dir: str | Path, config: dict) -> None:
    """Write ``config.json`` with fresh checksums of the bundle's files."""
    bundle_dir = Path(bundle_dir)
    config = dict(config)
    config["files"] = {name: sha256_file(bundle_dir / name) for name in BUNDLE_FILES}
    (bundle_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")


def read_config(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / "config.json"
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no config.json; this folder is not a model bundle")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path}: config.json holds {json.dumps(config)[:40]}, not a JSON object")
    return config


# Sections read as objects (``config[section].get(...)``) wherever they are used.
_OBJECT_SECTIONS = ("preprocessing", "thresholds", "embedding", "files", "training", "metrics", "libraries")


def check_config(
    config: dict, *, where: str = "config.json", required: tuple[str, ...] = ("preprocessing", "thresholds")
) -> None:
    """Validate what a bundle's models are built from, as a whole, before anything is built.

    ``required`` sections must be there; the others are checked when present (a bundle that is only
    resolved and published, never loaded, needs no embedding recipe). Raises ``BundleError`` with one
    line naming the section and every problem in it.
    """
    for section in _OBJECT_SECTIONS:
        if section in config and not isinstance(config[section], dict):
            raise BundleError(f"{where} has invalid {section}: {section} must be a JSON object")
    sections = {
        "preprocessing": FeatureParams.from_dict,
        "thresholds": Thresholds.from_dict,
        "embedding": lambda e: check_recipe(e["recipe"]),
    }
    for section, check in sections.items():
        if section not in config:
            if section in required:
                raise BundleError(f"{where} has no {section!r} section")
            continue
        try:
            check(config[section])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise BundleError(f"{where} has invalid {section}: {detail}") from None


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check format version, preprocessing and the sha256 of every file; return the config."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: the model bundle folder does not exist")
    config = read_config(bundle_dir)
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{bundle_dir}: bundle format version {version!r} is not supported (this code reads version "
            f"{FORMAT_VERSION}); retrain or update the code"
        )
    check_config(config, where=f"{bundle_dir}: config.json")
    files = config.get("files") or {}
    for name in BUNDLE_FILES:
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{bundle_dir}: {name} is missing")
        expected = files.get(name)
        if not expected:
            raise BundleError(f"{bundle_dir}: config.json lists no checksum for {name}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{bundle_dir}: {name} does not match its checksum (sha256 {actual[:12]}..., "
                f"expected {expected[:12]}...); the file is corrupted or was changed"
            )
    return config


def load_bundle(
    bundle_dir: str | Path,
    *,
    source: str = "bundled",
    revision: str | None = None,
    repo_id: str | None = None,
    reason: str | None = None,
) -> Bundle:
    """Verify and read a bundle (the Keras models load on first use)."""
    bundle_dir = Path(bundle_dir)
    config = verify_bundle(bundle_dir)
    check_config(config, where=f"{bundle_dir}: config.json", required=("embedding",))
    try:
        with np.load(bundle_dir / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle_dir}: arrays.npz cannot be read ({exc})") from None
    missing = {"scorer_components", "norm_mean", "norm_std", "embed_mean", "embed_std", "calibration_scores"}
    missing -= set(arrays)
    if missing:
        raise BundleError(f"{bundle_dir}: arrays.npz lacks {sorted(missing)}")
    return Bundle(
        path=bundle_dir,
        config=config,
        arrays=arrays,
        source=source,
        revision=revision,
        repo_id=repo_id,
        reason=reason,
    )


# --- arrays from files a user hands us ---------------------------------------------------------------

# A calibration holds a scorer for one embedding (PCA components, per-domain means and covariances), its
# held-out scores and a standardiser: well under 1 MB today. The ceilings leave room for richer ones and
# keep a hostile file (a 2 GB array of zeros compresses to 2 MB) from being allocated.
CALIBRATION_MAX_BYTES = 64 * 2**20
CALIBRATION_MAX_ELEMENTS = 8_000_000
# numpy dtype kinds a calibration may hold: booleans, numbers and text (never objects, i.e. pickles).
_PLAIN_KINDS = set("biufcUS")
# A calibration is a few dozen arrays; the zip directory is counted before any member is read, so that an
# archive of 200,000 empty members costs nothing (listing them took 22 s of CPU).
CALIBRATION_MAX_MEMBERS = 256


def read_npz_checked(
    path: str | Path,
    *,
    max_bytes: int,
    max_elements: int,
    max_members: int = CALIBRATION_MAX_MEMBERS,
    name: str | None = None,
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, after checking the file and each array's header against limits.

    The number of members (from the zip's end record, before its directory is parsed), then the zip
    directory and each member's ``.npy`` header (shape and dtype) are read first; nothing is
    loaded unless the file is a zip of ``.npy`` members holding plain arrays (no objects) whose sizes,
    summed, stay within ``max_elements`` and ``max_bytes`` (in memory), and the file itself within
    ``max_bytes``. A refusal is a ``BundleError`` naming ``name`` (default: the file's name) and the limit.

    Examples
    --------
    >>> arrays = read_npz_checked("calibration.npz", max_bytes=2**26, max_elements=10**7)  # doctest: +SKIP
    """
    import zipfile

    path = Path(path)
    name = name or path.name
    not_ours = f"{name}: not a calibration file of this tool"
    if not path.is_file():
        raise BundleError(f"{name}: calibration file not found")
    size = path.stat().st_size
    if size > max_bytes:
        raise BundleError(
            f"{name}: the file is {size / 2**20:.0f} MB; at most {max_bytes / 2**20:.0f} MB is read"
        )
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{not_ours} (not an .npz archive)")
    members_said = _zip_member_count(path)
    if members_said is None or members_said > max_members:
        said = "too many to count" if members_said is None else f"{members_said:,}"
        raise BundleError(f"{name}: the archive holds {said} arrays; at most {max_members} are read")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            headers = {}
            for member in members:
                if not member.filename.endswith(".npy") or member.is_dir():
                    raise BundleError(f"{not_ours} (it holds {member.filename!r}, not an array)")
                with archive.open(member) as fh:
                    headers[member.filename] = _npy_header(fh)
            elements = nbytes = 0
            for member_name, (shape, dtype) in headers.items():
                if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None:
                    raise BundleError(f"{not_ours} ({member_name[:-4]} holds {dtype} values)")
                count = math.prod(shape)
                elements += count
                nbytes += count * dtype.itemsize
            if elements > max_elements or nbytes > max_bytes:
                raise BundleError(
                    f"{name}: the arrays hold {elements:,} values ({nbytes / 2**20:,.0f} MB in memory); a "
                    f"calibration file may hold at most {max_elements:,} values and {max_bytes / 2**20:.0f} MB"
                )
            arrays = {}
            for member in members:
                with archive.open(member) as fh:
                    arrays[member.filename[:-4]] = np.lib.format.read_array(fh, allow_pickle=False)
            return arrays
    except BundleError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        # Damaged archive or array data: say so without numpy's wording (which talks about pickles).
        raise BundleError(f"{not_ours} (damaged: {type(exc).__name__})") from None


def _zip_member_count(path: Path) -> int | None:
    """How many members a zip's end-of-central-directory record says it holds, reading only the file's tail;
    None when the record is not found or defers to ZIP64 (65,535 members or more)."""
    import struct

    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        tail_size = min(size, 22 + 0xFFFF)  # the record (22 bytes) plus the longest zip comment
        fh.seek(size - tail_size)
        tail = fh.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return None
    total = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    return None if total == 0xFFFF else total


def _npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` header, reading nothing of the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"npy format version {version}")
    return tuple(int(n) for n in shape), np.dtype(dtype)


# --- calibration files ------------------------------------------------------------------------------


@dataclass
class Calibration:
    """A scorer and thresholds refitted on a user's own normal clips, tied to one encoder.

    ``meta["recipe"]`` names the embedding blocks the scorer was fitted on; ``standardizer`` holds the
    ``embed_mean`` and ``embed_std`` fitted on the user's clips, or is None when the bundle's standardiser
    (and so the bundle's recipe) is used.
    """

    scorer: MahalanobisScorer | None
    thresholds: Thresholds
    normal_scores: np.ndarray
    meta: dict
    standardizer: dict[str, np.ndarray] | None = None
    reference: Reference | None = None
    familiarity: Familiarity | None = None

    @property
    def n_clips(self) -> int:
        return int(self.meta.get("n_clips", len(self.normal_scores)))

    @property
    def recipe(self) -> tuple[str, ...]:
        return tuple(self.meta["recipe"])

    def named(self, name: str | None) -> Calibration:
        """The same calibration under a name people recognise ("Pump 3, east hall")."""
        clean = " ".join(str(name or "").split())[:80] or None
        return Calibration(
            self.scorer,
            self.thresholds,
            self.normal_scores,
            dict(self.meta, name=clean),
            self.standardizer,
            self.reference,
            self.familiarity,
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, thresholds=self.thresholds.to_dict())
        with open(path, "wb") as fh:
            np.savez(
                fh,
                meta=np.asarray(json.dumps(meta)),
                normal_scores=np.asarray(self.normal_scores, dtype=np.float64),
                **(self.scorer.to_arrays() if self.scorer is not None else {}),
                **(self.standardizer or {}),
                **(self.reference.to_arrays() if self.reference is not None else {}),
                **(self.familiarity.to_arrays() if self.familiarity is not None else {}),
            )
        return path


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
    """Read a calibration file and refuse it unless it was made with this bundle's encoder."""
    path = Path(path)
    name = path.name
    arrays = read_npz_checked(path, max_bytes=CALIBRATION_MAX_BYTES, max_elements=CALIBRATION_MAX_ELEMENTS)
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
        check_calibration_values(name, arrays, meta)
        if meta.get("format_version") == 3 and meta.get("method") == "reference":
            return _reference_calibration(name, arrays, meta, bundle)
        scorer = MahalanobisScorer.from_arrays(arrays)
        thresholds = Thresholds.from_dict(meta["thresholds"])
        normal_scores = np.asarray(arrays["normal_scores"], dtype=np.float64)
        standardizer = (
            {k: np.asarray(arrays[k], dtype=np.float64) for k in ("embed_mean", "embed_std")}
            if "embed_mean" in arrays
            else None
        )
    except (ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{name}: not a calibration file of this tool ({type(exc).__name__}: {exc})"
        ) from None
    if meta.get("kind") != "gearbox-sound-check calibration":
        raise BundleError(f"{name}: not a calibration file of this tool")
    if meta.get("format_version") not in READABLE_CALIBRATION_VERSIONS:
        raise BundleError(
            f"{name}: calibration format version {meta.get('format_version')!r} is not supported"
        )
    if meta.get("encoder_sha256") != bundle.encoder_sha256:
        raise BundleError(
            f"{name}: this calibration was made with another model (encoder "
            f"{str(meta.get('encoder_sha256'))[:12]}...), not the one loaded ({bundle.encoder_sha256[:12]}...); "
            "calibrate again with this model"
        )
    try:
        check_recipe(meta.get("recipe") or ())
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{name}: the calibration names no valid embedding recipe ({exc})") from None
    if standardizer is None and meta.get("recipe") != list(bundle.config["embedding"]["recipe"]):
        raise BundleError(
            f"{name}: this calibration uses the embedding recipe {meta.get('recipe')}, the model uses "
            f"{bundle.config['embedding']['recipe']}; calibrate again"
        )
    if meta.get("preprocessing") != bundle.config["preprocessing"]:
        raise BundleError(f"{name}: this calibration was made with different preprocessing; calibrate again")
    if standardizer is None:
        dim = bundle.scorer.components_.shape[1]
    else:
        dim = len(standardizer["embed_mean"])
        if standardizer["embed_std"].shape != (dim,) or not (standardizer["embed_std"] > 0).all():
            raise BundleError(f"{name}: the calibration's standardiser is damaged")
    if scorer.components_.shape[1] != dim:
        raise BundleError(f"{name}: the embedding size does not match this model")
    return Calibration(
        scorer=scorer,
        thresholds=thresholds,
        normal_scores=normal_scores,
        meta=meta,
        standardizer=standardizer,
    )


def _reference_calibration(name: str, arrays: dict, meta: dict, bundle: Bundle) -> Calibration:
    """A version 3 calibration: a ``Reference`` of the user's normal clips and its familiarity check."""
    if meta.get("kind") != "gearbox-sound-check calibration":
        raise BundleError(f"{name}: not a calibration file of this tool")
    if meta.get("encoder_sha256") != bundle.encoder_sha256:
        raise BundleError(
            f"{name}: this calibration was made with another model (encoder "
            f"{str(meta.get('encoder_sha256'))[:12]}...), not the one loaded ({bundle.encoder_sha256[:12]}...); "
            "calibrate again with this model"
        )
    if meta.get("preprocessing") != bundle.config["preprocessing"]:
        raise BundleError(f"{name}: this calibration was made with different preprocessing; calibrate again")
    try:
        recipe = Recipe.from_dict(meta["reference_recipe"])
        reference = Reference.from_arrays(arrays, recipe, sr=bundle.params.sr, hop_length=bundle.params.hop_length)
        familiarity = Familiarity.from_arrays(arrays)
        thresholds = Thresholds.from_dict(meta["thresholds"])
        normal_scores = np.asarray(arrays["normal_scores"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{name}: the calibration is damaged ({type(exc).__name__}: {exc})") from None
    n_mels = bundle.params.n_mels
    if reference.spectrum_mean_.shape != (n_mels,) or (
        familiarity is not None and familiarity.mean_.shape[1:] != (n_mels,)
    ):
        raise BundleError(f"{name}: the calibration's band count does not match this model")
    return Calibration(None, thresholds, normal_scores, meta, None, reference, familiarity)
