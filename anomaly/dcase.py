"""DCASE Task 2 file names: build them for the synthetic corpus and read them back.

Names look like ``section_00_source_train_normal_0000_volt_1.0_wt_30.wav`` (DCASE 2022+) or, for
anomalies, ``section_00_target_test_anomaly_0007_volt_1.3_wt_120_fault_tooth.wav``. Older DCASE 2020
names such as ``normal_id_00_00000098.wav`` and plain folders ``normal/`` and ``abnormal/`` are read too,
so that real data sets can be evaluated without renaming.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from anomaly.decoding import AUDIO_EXTENSIONS

AUDIO_SUFFIXES = AUDIO_EXTENSIONS  # a folder lists what load_audio reads

_DCASE = re.compile(
    r"^section_(?P<section>\d+)_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d+)(?P<rest>(?:_[^_]+_[^_]+)*)$"
)
_DCASE2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<section>\d+)_(?P<index>\d+)$")


@dataclass(frozen=True)
class ClipInfo:
    """What a file name says about a clip."""

    domain: str = "source"
    split: str | None = None
    label: str | None = None  # "normal", "anomaly" or None when the name does not say
    section: str = "00"
    index: int | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def fault(self) -> str | None:
        return self.attributes.get("fault")


def format_name(
    domain: str,
    split: str,
    label: str,
    index: int,
    attributes: dict[str, object],
    section: int = 0,
    suffix: str = ".wav",
) -> str:
    """Build a DCASE file name.

    Examples
    --------
    >>> format_name("source", "train", "normal", 0, {"volt": 1.0, "wt": 30})
    'section_00_source_train_normal_0000_volt_1.0_wt_30.wav'
    """
    parts = [f"section_{section:02d}", domain, split, label, f"{index:04d}"]
    for key, value in attributes.items():
        parts += [key, _format_value(value)]
    return "_".join(parts) + suffix


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if value == round(value, 1) else f"{value:g}"
    return str(value)


def parse_name(path: str | Path) -> ClipInfo:
    """Read domain, split, label and attributes from a clip's path.

    Examples
    --------
    >>> info = parse_name("section_00_target_test_anomaly_0007_volt_1.3_wt_120_fault_tooth.wav")
    >>> info.domain, info.label, info.attributes["volt"], info.fault
    ('target', 'anomaly', '1.3', 'tooth')
    """
    path = Path(path)
    stem = path.stem
    m = _DCASE.match(stem)
    if m:
        tokens = [t for t in m.group("rest").split("_") if t]
        attributes = dict(zip(tokens[0::2], tokens[1::2], strict=False))
        return ClipInfo(
            domain=m.group("domain"),
            split=m.group("split"),
            label=m.group("label"),
            section=m.group("section"),
            index=int(m.group("index")),
            attributes=attributes,
        )
    m = _DCASE2020.match(stem)
    if m:
        return ClipInfo(label=m.group("label"), section=m.group("section"), index=int(m.group("index")))
    parent = path.parent.name.lower()
    if parent in ("normal", "abnormal", "anomaly", "anomalous"):
        return ClipInfo(label="normal" if parent == "normal" else "anomaly")
    return ClipInfo()


def list_audio(folder: str | Path) -> list[Path]:
    """Audio files below ``folder`` (recursively), sorted by path so that runs are repeatable."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
