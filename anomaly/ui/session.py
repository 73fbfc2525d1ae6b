"""What one visitor changed, and how a calibration is kept in their browser across reloads.

A ``Session`` lives in ``gr.State`` (server side, per tab). A calibration also goes into ``gr.BrowserState``
(the browser's localStorage) as a ``stored_calibration``: the calibration file's bytes, their sha256, its name
and the encoder it was made with, signed with HMAC-SHA256 under a secret that never leaves the server
(``store_secret``). gradio's own ``BrowserState`` secret is sent to every visitor in ``/config``, so it only
keeps one model's entries apart from another's; the signature is what makes an entry trustworthy. On the
next visit ``restore_calibration`` checks the model, the signature and the checksum before the file is read
again (and validated like any calibration file), so an entry made with another model, damaged, or written by
anyone but this server is dropped with a sentence instead of being used.

Forgetting empties the store, and an emptied store's entry is removed from localStorage (``browser_store``):
gradio's ``BrowserState`` writes only a truthy value, so on its own it would keep the old entry, and the old
calibration would come back on the next visit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from anomaly.calibration import Calibration
from anomaly.detector import Detector
from anomaly.errors import BundleError, CalibrationFileError

STORAGE_KEY = "gearbox-sound-check-calibration"
STORED_FORMAT = 2  # 2: signed by the server
# The signing secret: from this variable (a Space's secret), else made once and kept in the app's data folder.
SECRET_ENV = "GEARBOX_STORE_SECRET"
DATA_DIR_ENV = "GEARBOX_DATA_DIR"
SECRET_FILE = "browser-store.key"
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


def browser_store(storage_key: str, secret: str) -> gr.BrowserState:
    """A ``gr.BrowserState`` under ``storage_key`` whose localStorage entry goes when a handler empties it
    (returns None). Call inside the Blocks."""
    store = gr.BrowserState(None, storage_key=storage_key, secret=secret)
    # gradio skips writing a falsy value (``if (value) localStorage.setItem(...)``) but still fires "change":
    # the removal happens there, in the browser, before any later visit reads the entry.
    remove = (
        "(value) => { if (value === null || value === undefined) { try { localStorage.removeItem("
        f"{json.dumps(storage_key)}); }} catch (e) {{}} }} return []; }}"
    )
    store.change(None, inputs=[store], js=remove, queue=False, api_visibility="private")
    return store


def detector_for(shared: Detector, session: Session | None) -> Detector:
    """The shared detector with this visitor's calibration and thresholds (cheap: the model is shared)."""
    if session is None:
        return shared
    detector = shared.with_calibration(session.calibration) if session.calibration else shared
    return detector.with_thresholds(*session.manual) if session.manual else detector


def detector_with_file(shared: Detector, calibration_file: str | Path | None, session: Session | None) -> Detector:
    """The detector an API call asked for: the calibration file sent with it (read and validated like an
    uploaded one; ``BundleError`` or ``CalibrationFileError`` with a sentence when refused), else this
    visitor's own (the page sends no file)."""
    if not calibration_file:
        return detector_for(shared, session)
    return shared.with_calibration(shared.load_calibration(calibration_file))


def base_detector(shared: Detector, session: Session | None) -> Detector:
    """This visitor's detector before hand-set thresholds: what "reset" goes back to."""
    return detector_for(shared, session.without_manual() if session else None)


def storage_secret(detector: Detector) -> str:
    """gradio's key for the browser-side store. It is public (gradio sends it in ``/config``): it keeps
    another model from reading this one's entry, and nothing more; ``store_secret`` signs the entries."""
    return hashlib.sha256(f"{STORAGE_KEY}:{detector.bundle.encoder_sha256}".encode()).hexdigest()[:32]


def data_dir() -> Path:
    """The app's own folder for what it keeps between runs: ``GEARBOX_DATA_DIR``, else the XDG data folder."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "gearbox-sound-check"


def store_secret(folder: Path | None = None) -> bytes:
    """The server's secret for signing browser-kept calibrations.

    ``GEARBOX_STORE_SECRET`` when set (a Space keeps it among its secrets, so that entries survive a
    restart); otherwise 32 random bytes made on first use and kept, readable by the owner only (0600), in
    ``folder`` (default ``data_dir()``), so that every process of this installation signs alike.
    """
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    folder = Path(folder or data_dir())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / SECRET_FILE
    if not path.is_file():
        # Written aside, then linked into place: linking fails if another process got there first, so
        # every process ends up with the one secret, and nobody reads a half-written file.
        fresh = folder / f".{SECRET_FILE}.{secrets.token_hex(8)}"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(fresh, path)
        except FileExistsError:
            pass
        finally:
            fresh.unlink()
    os.chmod(path, 0o600)  # in case it was copied with looser rights
    return path.read_text().strip().encode()


def _signature(stored: dict, secret: bytes) -> str:
    # Everything but the file itself (its sha256 stands for it) and the signature, in a canonical order.
    signed = {k: v for k, v in stored.items() if k not in ("file", "signature")}
    return hmac.new(secret, json.dumps(signed, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def stored_calibration(
    path: str | Path, calibration: Calibration, detector: Detector, secret: bytes
) -> dict | None:
    """What the browser keeps of a saved calibration file, signed with ``secret`` (None when it is too big to
    keep)."""
    data = Path(path).read_bytes()
    if len(data) > MAX_STORED_BYTES:
        return None
    stored = {
        "format": STORED_FORMAT,
        "name": calibration.meta.get("name"),
        "created": calibration.meta.get("created"),
        "n_clips": calibration.n_clips,
        "encoder_sha256": detector.bundle.encoder_sha256,
        "sha256": hashlib.sha256(data).hexdigest(),
        "file": base64.b64encode(data).decode("ascii"),
    }
    return {**stored, "signature": _signature(stored, secret)}


def restore_calibration(stored: object, detector: Detector, scratch: Path, secret: bytes) -> Calibration:
    """The calibration a browser kept, checked against this model, the server's signature and its checksum,
    then read and validated like any calibration file.

    Raises ``BundleError`` with a sentence for the visitor when it cannot be used.
    """
    if not isinstance(stored, dict) or stored.get("format") != STORED_FORMAT:
        raise BundleError("the calibration kept in this browser is from an older version; calibrate again")
    if stored.get("encoder_sha256") != detector.bundle.encoder_sha256:
        raise BundleError("the calibration kept in this browser was made with another model; calibrate again")
    signature = stored.get("signature")
    if not isinstance(signature, str) or not hmac.compare_digest(signature, _signature(stored, secret)):
        raise CalibrationFileError(
            "the calibration kept in this browser was altered or damaged (this server did not sign it as it "
            "is); calibrate again"
        )
    try:
        data = base64.b64decode(str(stored.get("file", "")), validate=True)
    except ValueError:
        data = b""
    if not data or hashlib.sha256(data).hexdigest() != stored.get("sha256"):
        raise BundleError("the calibration kept in this browser is damaged; calibrate again")
    scratch.write_bytes(data)
    return detector.load_calibration(scratch)
