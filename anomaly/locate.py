"""Which model bundle to load: the folder asked for, else the Hub repo the settings name, else the bundled
model (``anomaly.config.Settings`` reads them from the environment)."""

from __future__ import annotations

from pathlib import Path

from anomaly.bundle import Bundle, load_bundle
from anomaly.config import Settings


def find_bundle(bundle_dir: str | Path | None = None, *, settings: Settings | None = None) -> Bundle:
    """The bundle ``Detector.load`` uses, verified, without loading its network: ``bundle_dir`` if given,
    else ``settings`` (default: the environment, see ``Settings``): its local folder, else its Hub repo,
    else the bundled model.
    """
    settings = settings or Settings.from_environ()
    bundle_dir = bundle_dir or settings.bundle_dir
    if bundle_dir is not None:
        reason = f"model from the folder {Path(bundle_dir).name}/ (ANOMALY_BUNDLE or --bundle)"
        return load_bundle(bundle_dir, source="local", revision=None, reason=reason)
    from anomaly.hub import resolve_bundle  # huggingface_hub only when no local folder was asked for

    resolved = resolve_bundle(
        settings.hub_repo, settings.hub_revision, bundled=settings.bundled, endpoint=settings.hub_endpoint
    )
    return load_bundle(
        resolved.path,
        source=resolved.source,
        revision=resolved.revision,
        repo_id=resolved.repo_id,
        reason=resolved.message,
    )
