"""The artifact bundle: encoder, decoder, scorer arrays and ``config.json``, verified on load.

A bundle is a folder::

    config.json    format version, preprocessing, thresholds, labels, training data, metrics,
                   library versions and the sha256 of every other file
    encoder.keras  the encoder sub-model (embedding + bottleneck code)
    decoder.keras  the decoder, for the anomaly map
    arrays.npz     scorer state, input normalisation, reconstruction-error statistics and the
                   held-out normal scores behind the thresholds (plain arrays, no pickle)

Calibration files, fitted on a user's own clips, are described in ``anomaly.calibration``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.config import DEFAULT_BUNDLE  # noqa: F401 - where callers have always found it
from anomaly.embedding import check_recipe
from anomaly.errors import BundleError
from anomaly.features import FeatureParams
from anomaly.scoring import LABELS, MahalanobisScorer, Thresholds

FORMAT_VERSION = 1
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
    _network: object = field(default=None, repr=False)

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

    def network(self):
        """The encoder and decoder compiled for scoring (``anomaly.model.CompiledEncoder``), built once and
        shared by every scorer of this bundle."""
        if self._network is None:
            from anomaly.model import CompiledEncoder

            self._network = CompiledEncoder(*self.models())
        return self._network

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
