"""What one visitor changed, and how a calibration is kept in their browser across reloads.

A ``Session`` lives in ``gr.State`` (server side, per tab). A calibration also goes into ``gr.BrowserState``
(the browser's localStorage) as a ``stored_calibration``: the calibration file's bytes, their sha256, its name
and the encoder it was made with. On the next visit ``restore_calibration`` checks both checksums before the
file is read again, so a calibration made with another model, or damaged on the way, is dropped with a
sentence instead of being used.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from anomaly.bundle import Calibration
from anomaly.detector import Detector
from anomaly.errors import BundleError

STORAGE_KEY = "gearbox-sound-check-calibration"
STORED_FORMAT = 1
# localStorage holds about 5 MB per site; a calibration on 200 clips is far below that, but a stored value
# that grew beyond this is not kept rather than failing in the browser.
MAX_STORED_BYTES = 3_000_000


@dataclass(frozen=True)
class Session:
    """What one visitor changed: a calibration on their own clips and thresholds set by hand."""

    calibration: Calibration | None = None
    manual: tuple[float, float] | None = None

    def without_manual(self) -> Session:
        return replace(self, manual=None)


def detector_for(shared: Detector, session: Session | None) -> Detector:
    """The shared detector with this visitor's calibration and thresholds (cheap: the model is shared)."""
    if session is None:
        return shared
    detector = shared.with_calibration(session.calibration) if session.calibration else shared
    return detector.with_thresholds(*session.manual) if session.manual else detector


def base_detector(shared: Detector, session: Session | None) -> Detector:
    """This visitor's detector before hand-set thresholds: what "reset" goes back to."""
    return detector_for(shared, session.without_manual() if session else None)


def storage_secret(detector: Detector) -> str:
    """The browser-side store's key: tied to the model, so another model never reads this one's calibration."""
    return hashlib.sha256(f"{STORAGE_KEY}:{detector.bundle.encoder_sha256}".encode()).hexdigest()[:32]


def stored_calibration(path: str | Path, calibration: Calibration, detector: Detector) -> dict | None:
    """What the browser keeps of a saved calibration file (None when it is too big to keep)."""
    data = Path(path).read_bytes()
    if len(data) > MAX_STORED_BYTES:
        return None
    return {
        "format": STORED_FORMAT,
        "name": calibration.meta.get("name"),
        "created": calibration.meta.get("created"),
        "n_clips": calibration.n_clips,
        "encoder_sha256": detector.bundle.encoder_sha256,
        "sha256": hashlib.sha256(data).hexdigest(),
        "file": base64.b64encode(data).decode("ascii"),
    }


def restore_calibration(stored: object, detector: Detector, scratch: Path) -> Calibration:
    """The calibration a browser kept, checked against its checksum and this model.

    Raises ``BundleError`` with a sentence for the visitor when it cannot be used.
    """
    if not isinstance(stored, dict) or stored.get("format") != STORED_FORMAT:
        raise BundleError("the calibration kept in this browser is from an older version; calibrate again")
    if stored.get("encoder_sha256") != detector.bundle.encoder_sha256:
        raise BundleError("the calibration kept in this browser was made with another model; calibrate again")
    try:
        data = base64.b64decode(str(stored.get("file", "")), validate=True)
    except ValueError:
        data = b""
    if not data or hashlib.sha256(data).hexdigest() != stored.get("sha256"):
        raise BundleError("the calibration kept in this browser is damaged; calibrate again")
    scratch.write_bytes(data)
    return detector.load_calibration(scratch)
