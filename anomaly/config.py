"""Where the model comes from, and the other settings the environment gives: read in one place.

``Settings.from_environ()`` reads the environment variables below, once per call, into a frozen value;
entry points read it once at start and hand it on, and a caller (a test, a notebook, another service)
injects its own ``Settings`` instead of changing ``os.environ``. Nothing here runs at import except finding
the bundled model's folder.

Environment variables
---------------------
ANOMALY_BUNDLE
    A local bundle folder; wins over everything else.
ANOMALY_HUB_REPO, ANOMALY_HUB_REVISION
    ``user/repo`` of a Hub model repo holding a bundle, and the tag, branch or commit to pin (default
    ``main``). Unset or empty: the bundled model, without touching the network.
HF_ENDPOINT
    The Hub's address (huggingface_hub's own variable; read here too so that it can be injected).
GEARBOX_STORE_SECRET, GEARBOX_DATA_DIR, XDG_DATA_HOME
    The app's secret for signing calibrations kept in browsers, and its folder for what it keeps between
    runs (default ``$XDG_DATA_HOME/gearbox-sound-check``, else ``~/.local/share/gearbox-sound-check``).
GEARBOX_UPLOAD_BUDGET
    ``REQUESTS,MEGABYTES``: how many uploads, and how many megabytes, one client may send to the app within
    its upload window (default: ``anomaly.ui.uploads``'s own).
GEARBOX_UNUSED_UPLOAD_S
    Seconds an upload is kept when no call uses it (default ``anomaly.ui.limits.UNUSED_UPLOAD_MAX_AGE_S``).
GEARBOX_CACHE_SWEEP
    ``SWEEP,AGE`` in seconds: how often the app's file cache is swept and how old a file must be to go
    (default ``anomaly.ui.limits``'s own; tests set a few seconds to see the sweep at work).
GEARBOX_PROXY_HOPS, SPACE_ID
    How many proxies stand in front of the app and add to ``X-Forwarded-For`` (default 1 on a Space, where
    ``SPACE_ID`` is set, else 0: the header is ignored). Per-visitor limits are kept by the address the
    outermost proxy saw; what a client writes in the header itself is not trusted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_BUNDLE = "ANOMALY_BUNDLE"
ENV_REPO = "ANOMALY_HUB_REPO"
ENV_REVISION = "ANOMALY_HUB_REVISION"
ENV_ENDPOINT = "HF_ENDPOINT"
ENV_STORE_SECRET = "GEARBOX_STORE_SECRET"
ENV_DATA_DIR = "GEARBOX_DATA_DIR"
ENV_UPLOAD_BUDGET = "GEARBOX_UPLOAD_BUDGET"
ENV_UNUSED_UPLOAD_S = "GEARBOX_UNUSED_UPLOAD_S"
ENV_PROXY_HOPS = "GEARBOX_PROXY_HOPS"
ENV_CACHE_SWEEP = "GEARBOX_CACHE_SWEEP"

_PACKAGE = Path(__file__).resolve().parent


def bundled_model_dir(package: Path = _PACKAGE) -> Path:
    """The demo model shipped with the code.

    An installed wheel carries it inside the package (``anomaly/artifacts/``, mapped there by
    pyproject.toml); a checkout keeps it at the top level, beside the package (``artifacts/``).
    """
    inside = package / "artifacts"
    return inside if (inside / "config.json").is_file() else package.parent / "artifacts"


DEFAULT_BUNDLE = bundled_model_dir()


def _data_dir(environ: Mapping[str, str]) -> Path:
    chosen = _text(environ, ENV_DATA_DIR)
    if chosen:
        return Path(chosen)
    base = _text(environ, "XDG_DATA_HOME")
    return (Path(base) if base else Path.home() / ".local" / "share") / "gearbox-sound-check"


def _text(environ: Mapping[str, str], name: str) -> str | None:
    """A variable's value, with an empty or blank setting counted as unset."""
    return environ.get(name, "").strip() or None


def _positive_pair(environ: Mapping[str, str], name: str, form: str) -> tuple[int, int] | None:
    text = _text(environ, name)
    if text is None:
        return None
    try:
        first, second = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{name} must be two whole numbers, {form}; got {text!r}") from None
    if first <= 0 or second <= 0:
        raise ValueError(f"{name} must be positive; got {text!r}")
    return first, second


def _upload_budget(environ: Mapping[str, str]) -> tuple[int, int] | None:
    pair = _positive_pair(environ, ENV_UPLOAD_BUDGET, "REQUESTS,MEGABYTES")
    return None if pair is None else (pair[0], pair[1] * 2**20)


def _unused_upload_s(environ: Mapping[str, str]) -> float | None:
    text = _text(environ, ENV_UNUSED_UPLOAD_S)
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{ENV_UNUSED_UPLOAD_S} must be a positive number of seconds; got {text!r}")
    return seconds


def _proxy_hops(environ: Mapping[str, str]) -> int:
    text = _text(environ, ENV_PROXY_HOPS)
    if text is None:
        return 1 if _text(environ, "SPACE_ID") else 0
    if not text.isdigit() or int(text) > 10:
        raise ValueError(f"{ENV_PROXY_HOPS} must be a whole number of proxies from 0 to 10; got {text!r}")
    return int(text)


@dataclass(frozen=True)
class Settings:
    """Where to load the model from, and the app's secret and data folder.

    Attributes
    ----------
    bundle_dir : Path or None
        A local bundle folder (``ANOMALY_BUNDLE``); when set, the Hub is not asked.
    hub_repo, hub_revision : str or None
        The Hub repo and revision to load (``ANOMALY_HUB_REPO``, ``ANOMALY_HUB_REVISION``).
    hub_endpoint : str or None
        The Hub's URL (``HF_ENDPOINT``); None: huggingface_hub's default.
    bundled : Path
        The fallback model shipped with the code.
    store_secret : str or None
        ``GEARBOX_STORE_SECRET``.
    data_dir : Path
        ``GEARBOX_DATA_DIR``, else the XDG data folder.
    upload_budget : (int, int) or None
        ``GEARBOX_UPLOAD_BUDGET``: uploads and bytes per client and window; None: the app's default.
    unused_upload_s : float or None
        ``GEARBOX_UNUSED_UPLOAD_S``; None: the app's default.
    proxy_hops : int
        ``GEARBOX_PROXY_HOPS``: proxies in front of the app (1 on a Space, else 0).
    cache_sweep : (int, int) or None
        ``GEARBOX_CACHE_SWEEP``: seconds between sweeps and age swept; None: the app's default.

    Examples
    --------
    >>> Settings.from_environ({"ANOMALY_HUB_REPO": " you/gearbox-model "}).hub_repo
    'you/gearbox-model'
    >>> Settings(bundle_dir=Path("my_bundle")).bundle_dir
    PosixPath('my_bundle')
    """

    bundle_dir: Path | None = None
    hub_repo: str | None = None
    hub_revision: str | None = None
    hub_endpoint: str | None = None
    bundled: Path = DEFAULT_BUNDLE
    store_secret: str | None = field(default=None, repr=False)
    data_dir: Path = field(default_factory=lambda: _data_dir({}))
    upload_budget: tuple[int, int] | None = None
    unused_upload_s: float | None = None
    proxy_hops: int = 0
    cache_sweep: tuple[int, int] | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives (``os.environ`` unless ``environ`` is given)."""
        env = os.environ if environ is None else environ
        bundle = _text(env, ENV_BUNDLE)
        return cls(
            bundle_dir=Path(bundle) if bundle else None,
            hub_repo=_text(env, ENV_REPO),
            hub_revision=_text(env, ENV_REVISION),
            hub_endpoint=_text(env, ENV_ENDPOINT),
            store_secret=env.get(ENV_STORE_SECRET) or None,
            data_dir=_data_dir(env),
            upload_budget=_upload_budget(env),
            unused_upload_s=_unused_upload_s(env),
            proxy_hops=_proxy_hops(env),
            cache_sweep=_positive_pair(env, ENV_CACHE_SWEEP, "SWEEP,AGE in seconds"),
        )
