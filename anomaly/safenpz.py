"""Arrays from ``.npz`` files a user hands us, read only after their size and kinds are checked."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from anomaly.errors import BundleError

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

