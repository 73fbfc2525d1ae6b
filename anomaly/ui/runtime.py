"""The model every visitor shares and the scratch folder for downloads (the serving limits are ``limits``)."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.detector import Detector
from anomaly.ui.lanes import LiveSeats, Priority
from anomaly.ui.limits import CACHE_MAX_AGE_S
from anomaly.ui.session import store_secret
from anomaly.ui.streams import ChunkLog, upload_folder

log = logging.getLogger("anomaly.ui")


@dataclass
class Runtime:
    """The shared detector (the model loads once) and a folder for the files handed out for download.

    ``Runtime.load()`` resolves the model as ``Detector.load()`` does: env ``ANOMALY_BUNDLE`` (a local
    bundle folder), else the Hub repo in ``ANOMALY_HUB_REPO`` pinned by ``ANOMALY_HUB_REVISION``, else the
    bundled ``artifacts/``.
    """

    detector: Detector
    # Interactive calls first (anomaly.ui.lanes); who is streaming a microphone now.
    priority: Priority = field(default_factory=Priority)
    live_seats: LiveSeats = field(default_factory=LiveSeats)
    # The live chunks posted but not yet heard (anomaly.ui.streams), in gradio's upload folder.
    live_chunks: ChunkLog = field(default_factory=lambda: ChunkLog(upload_folder()))
    _outputs: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    _secret: bytes | None = field(default=None, repr=False)

    @classmethod
    def load(cls, bundle_dir: str | Path | None = None) -> Runtime:
        return cls(Detector.load(bundle_dir))

    @property
    def model_message(self) -> str:
        """One sentence on which model was loaded and why (the bundle says it)."""
        return self.detector.bundle.reason or f"model: {self.detector.model_info['source']}"

    @property
    def store_secret(self) -> bytes:
        """The secret that signs calibrations kept in visitors' browsers (read or made on first use)."""
        if self._secret is None:
            self._secret = store_secret()
        return self._secret

    def output_path(self, filename: str) -> Path:
        """A fresh path for a downloadable file, in its own folder so that it keeps a readable name.

        Files older than ``CACHE_MAX_AGE_S`` are pruned on every call; gradio copies what it serves into
        its own cache, which ``delete_cache`` sweeps.
        """
        if self._outputs is None:
            # The pid in the name lets a later start tell a dead run's folder from a running one's.
            self._outputs = tempfile.TemporaryDirectory(prefix=f"{OUTPUTS_PREFIX}{os.getpid()}-")
        root = Path(self._outputs.name)
        cutoff = time.time() - CACHE_MAX_AGE_S
        for old in root.iterdir():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:  # another request pruned it first
                pass
        folder = root / uuid.uuid4().hex
        folder.mkdir()
        return folder / filename

    def prepare_to_serve(self) -> float:
        """Tune the process for serving, sweep what killed runs left, make a stop (SIGTERM, as a Space and
        ``docker stop`` send) clean up like Ctrl-C, and run every path once; returns the warm-up's seconds."""
        cap_malloc_arenas()
        sweep_dead_outputs()
        stop_cleanly_on_sigterm()
        return warm_up(self.detector)


OUTPUTS_PREFIX = "gearbox-sound-check-"


def sweep_dead_outputs(root: str | Path | None = None) -> list[Path]:
    """Remove the download folders of runs that are gone (killed before they could clean up); returns them.

    A folder is ``gearbox-sound-check-<pid>-...``: it is left alone while that process lives.
    """
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{OUTPUTS_PREFIX}*"):
        pid = folder.name.removeprefix(OUTPUTS_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)) or not folder.is_dir():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        log.info("removed %d folder(s) left by stopped runs", len(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stop_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt: gradio then closes the server and Python removes the temporary
    folders on the way out (a bare SIGTERM ends the process on the spot and leaves them behind)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def warm_up(detector: Detector) -> float:
    """Run every path once (decode, log-mel, both compiled networks, the pictures, the live path) so that
    tracing the tf.functions and librosa's first calls (numba) are paid before the first visitor."""
    import soundfile as sf

    from anomaly import charts
    from anomaly.live import LiveSession
    from anomaly.synth import synthesize_clip
    from anomaly.ui import views
    from anomaly.waveform import resample

    started = time.perf_counter()
    seconds = max(3.0, 1.5 * detector.params.window_seconds)
    wave, _ = synthesize_clip("source", "normal", 0, duration_s=seconds, sr=detector.params.sr)
    buffer = io.BytesIO()
    sf.write(buffer, wave, detector.params.sr, format="WAV", subtype="PCM_16")
    explained = detector.analyze(buffer.getvalue(), name="warm-up.wav", explain=True)
    detector.analyze(buffer.getvalue(), name="warm-up.wav")
    views.spectrogram(explained, detector.params, show_map=True)
    views.timeline(explained, detector.params)
    live = LiveSession(detector.params)
    live.feed(np.repeat(wave, 3), 3 * detector.params.sr, detector)
    # A rate that is no multiple of the model's (44.1 kHz: most uploads, most browsers' microphones) goes
    # through librosa's resampler, whose first use imports and compiles librosa's numba kernels: 11 to 25 s
    # in a fresh install, which four live listeners once spent waiting for their first verdict.
    resample(np.zeros(4410, np.float32), 44100, detector.params.sr)
    charts.live_timeline(*live.timeline(), detector.thresholds, live.window_s, now_s=live.heard_s)
    return time.perf_counter() - started


def cap_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX=2`` does (an explicit setting of it wins).

    glibc gives each new thread its own arena and keeps what is freed in it; gradio runs handlers on a pool
    of threads, so under concurrent requests resident memory grew by about 110 MB in a load test and kept
    creeping. With 2 arenas it stays flat, at no cost in latency.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):  # not Linux with glibc: nothing to cap
        pass
