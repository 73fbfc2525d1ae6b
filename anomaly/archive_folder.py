"""Which recordings an archive holds, and which calibration scores each (``score-archive``).

The folder is walked as a stream (``walk_audio``). A file is scored by the first rule of a manifest that
matches it (``read_manifest``); else by the ``calibration.npz`` of the nearest folder above it; else by the
bundled model (``CalibrationPlan``, which reads and checks each calibration once).
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import os
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anomaly.bundle import Bundle, sha256_file
from anomaly.calibration import load_calibration
from anomaly.errors import BundleError, GearboxError

log = logging.getLogger("anomaly")

CALIBRATION_FILE = "calibration.npz"  # in a folder: the calibration of every recording below it
BUNDLED = "bundled"  # in a manifest, and in the table's calibration column: the bundled model's own


# --- the folder ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """An audio file found below the root."""

    path: str  # absolute
    rel: str  # relative to the root, with /
    size_bytes: int
    mtime_ns: int


def walk_audio(root: str | Path) -> Iterator[Found]:
    """Every audio file below ``root`` (``anomaly.features.AUDIO_EXTENSIONS``), as a stream: one folder's
    entries at a time, subfolders in name order. Hidden files and folders (a leading dot) are skipped, and
    symbolic links to folders are not followed (no loops)."""
    from anomaly.decoding import AUDIO_EXTENSIONS

    root = Path(root)
    pending = [(str(root), "")]
    while pending:
        folder, prefix = pending.pop()
        subfolders = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subfolders.append(entry.name)
                        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS:
                            stat = entry.stat()
                            yield Found(entry.path, prefix + entry.name, stat.st_size, stat.st_mtime_ns)
                    except OSError as exc:  # a file removed or unreadable while walking
                        log.warning("skipping %s: %s", prefix + entry.name, exc.strerror or exc)
        except OSError as exc:
            log.warning("skipping the folder %s: %s", prefix or root, exc.strerror or exc)
            continue
        pending.extend(
            (os.path.join(folder, name), f"{prefix}{name}/") for name in sorted(subfolders, reverse=True)
        )


# --- which calibration scores which file ---------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One manifest line: files matching ``pattern`` are scored with ``calibration`` (None: the bundled model).

    A pattern with ``*``, ``?`` or ``[`` is a glob over the path relative to the root (``*`` also crosses
    folders: ``pump3/*.wav`` takes ``pump3/2026/a.wav`` too); any other pattern is a folder (every file below
    it) or one file.
    """

    pattern: str
    calibration: Path | None

    def matches(self, rel: str) -> bool:
        pattern = self.pattern.strip("/")
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(rel, pattern)
        return rel == pattern or rel.startswith(pattern + "/") or pattern in ("", ".")


def read_manifest(path: str | Path) -> list[Rule]:
    """Rules from a CSV (columns ``pattern`` and ``calibration``) or TOML (a ``[calibrations]`` table of
    ``"pattern" = "file"``) manifest, in order: the first rule that matches a file wins. A calibration is a
    file (relative paths from the manifest's folder) or ``bundled`` for the bundled model.

    Examples
    --------
    >>> # calibrations.toml
    >>> # [calibrations]
    >>> # "line1/pump3" = "cal/pump3.npz"
    >>> # "line2/*.flac" = "bundled"
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path.name}: the manifest cannot be read ({exc})") from None
    pairs: list[tuple[str, str]] = []
    if path.suffix.lower() == ".toml":
        try:
            table = tomllib.loads(text).get("calibrations")
        except tomllib.TOMLDecodeError as exc:
            raise BundleError(f"{path.name}: not valid TOML ({exc})") from None
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise BundleError(f'{path.name}: needs a [calibrations] table of "pattern" = "calibration file"')
        pairs = list(table.items())
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not {"pattern", "calibration"} <= set(reader.fieldnames or ()):
            raise BundleError(f"{path.name}: needs the columns pattern and calibration")
        pairs = [(row["pattern"] or "", row["calibration"] or "") for row in reader]
    else:
        raise BundleError(f"{path.name}: a manifest is a .csv or a .toml file")
    rules = []
    for pattern, calibration in pairs:
        calibration = calibration.strip()
        if not pattern.strip() or not calibration:
            raise BundleError(f"{path.name}: every rule needs a pattern and a calibration ({pattern!r})")
        target = None if calibration.lower() == BUNDLED else (path.parent / calibration).resolve()
        rules.append(Rule(pattern.strip(), target))
    return rules


@dataclass(frozen=True)
class Choice:
    """The calibration that scores a set of files, checked once against the model."""

    path: str | None  # absolute; None: the bundled model
    shown: str  # the table's calibration column
    machine: str
    sha256: str | None
    problem: str | None = None  # why it cannot be used: its files become error rows


class CalibrationPlan:
    """Which calibration scores each file (``choice``), each calibration read and checked once."""

    def __init__(self, root: Path, bundle: Bundle, rules: Sequence[Rule] = ()):
        self.root = root
        self.bundle = bundle
        self.rules = list(rules)
        self._folder_default: dict[str, Path | None] = {}
        self._choices: dict[Path | None, Choice] = {}

    def choice(self, rel: str) -> Choice:
        for rule in self.rules:
            if rule.matches(rel):
                return self._checked(rule.calibration, from_manifest=True)
        return self._checked(self._nearest(str(PurePosixPath(rel).parent)), from_manifest=False)

    def _nearest(self, folder: str) -> Path | None:
        """The ``calibration.npz`` of ``folder`` or of the nearest folder above it (None: there is none)."""
        folder = "" if folder == "." else folder
        if folder not in self._folder_default:
            own = self.root / folder / CALIBRATION_FILE
            if own.is_file():
                self._folder_default[folder] = own
            else:
                parent = str(PurePosixPath(folder).parent) if folder else None
                self._folder_default[folder] = None if parent is None else self._nearest(parent)
        return self._folder_default[folder]

    def _checked(self, path: Path | None, *, from_manifest: bool) -> Choice:
        if path in self._choices:
            return self._choices[path]
        if path is None:
            choice = Choice(None, BUNDLED, "bundled model", None)
        else:
            try:
                shown = path.relative_to(self.root).as_posix()
            except ValueError:
                shown = str(path)
            # Unnamed: a folder's own calibration is called after the folder, a manifest's after its file.
            if from_manifest:
                fallback = path.stem
            else:
                fallback = str(PurePosixPath(shown).parent)
                fallback = self.root.name if fallback == "." else fallback
            try:
                calibration = load_calibration(path, self.bundle)
                sha = sha256_file(path)
                choice = Choice(str(path), shown, calibration.meta.get("name") or fallback, sha)
            except (GearboxError, OSError) as exc:
                problem = f"the calibration {shown} cannot be used: {exc}"
                log.warning("%s; its files are error rows", problem)
                choice = Choice(str(path), shown, fallback, None, problem)
        self._choices[path] = choice
        return choice
