"""Serving limits for a 2-vCPU Space: what one request may cost, and how long uploads are kept.

The page's words (``views``), its handlers and ``app.py`` read them here, as does the runtime.
"""

from collections.abc import Mapping

from anomaly import decoding

MAX_SECONDS = decoding.MAX_SECONDS  # longest recording scored, the CLI's limit too
MAX_FILE_SIZE = "50mb"  # enforced by gradio on every upload
MAX_BATCH_FILES = 100
MAX_CALIBRATION_FILES = 200
# Uploads and generated files are deleted this long after they were made (checked every CACHE_SWEEP_S).
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 300, 900
ENV_CACHE_SWEEP = "GEARBOX_CACHE_SWEEP"  # "SWEEP,AGE" in seconds (anomaly.config)
# An upload that no call has named is deleted sooner (anomaly.ui.uploads): anyone can post files without
# ever calling an endpoint. The page uploads a file when it is chosen, so this is also how long a visitor
# may wait between choosing a file and pressing Analyze.
UNUSED_UPLOAD_MAX_AGE_S = 300


def client_address(forwarded: str | None, peer: str | None, proxy_hops: int) -> str:
    """Who sent a request, for the per-visitor limits.

    Behind ``proxy_hops`` proxies (a Space's: 1) it is the address the outermost proxy saw: the
    ``proxy_hops``-th entry of ``X-Forwarded-For`` from the end. Entries before it are whatever the client
    wrote itself (a flooder could rotate them to dodge every per-visitor limit). With no proxy the header is
    not trusted at all and the peer's address is the visitor.

    >>> client_address("1.2.3.4, 198.51.100.7", "10.0.0.1", 1)
    '198.51.100.7'
    >>> client_address("1.2.3.4", "203.0.113.9", 0)
    '203.0.113.9'
    """
    if proxy_hops > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxy_hops, len(hops))]
    return peer or "?"


def cache_sweep(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``delete_cache`` for the Blocks: (every how many seconds, files older than how many seconds)."""
    from anomaly.config import Settings

    return Settings.from_environ(environ).cache_sweep or (CACHE_SWEEP_S, CACHE_MAX_AGE_S)
