"""Where the model comes from: a pinned Hugging Face Hub repo, its local cache, or the bundled folder.

``resolve_bundle`` picks the bundle folder at start-up. With no repo (``ANOMALY_HUB_REPO`` unset, read by
``anomaly.config``) it returns the bundled ``artifacts/`` folder without touching the network. With one, it
asks the Hub (time-boxed, so an unreachable Hub cannot stall start-up), downloads the snapshot into the
standard Hugging Face cache and verifies every checksum; a Hub that cannot be reached (network errors,
timeouts, server errors) falls back to the cached copy, then to the bundled model, and anything that fails
verification falls back to the bundled model. A Hub that answers no (a malformed or unknown repo id, an
unknown revision, no access) is a ``HubError``: a mistyped setting must not quietly serve the demo model.
Every outcome carries a sentence saying which model was chosen and why.

``publish`` uploads a verified bundle with its model card (``anomaly.card.render_model_card``) in one
commit.

The repo and revision come from ``anomaly.config`` (``ANOMALY_HUB_REPO``, ``ANOMALY_HUB_REVISION``); pin
a tag or sha in production so that a new upload cannot change the model under a running service.
``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` are read by ``huggingface_hub`` itself.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from anomaly.bundle import BUNDLE_FILES, verify_bundle
from anomaly.card import render_model_card
from anomaly.config import DEFAULT_BUNDLE, ENV_REPO, ENV_REVISION
from anomaly.errors import BundleError, HubError

log = logging.getLogger("anomaly")

DEFAULT_REVISION = "main"

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class ResolvedBundle:
    """Which bundle folder to load, where it came from and a sentence saying so.

    Attributes
    ----------
    path : Path
        The bundle folder (verified, except for the bundled one, which ``load_bundle`` verifies).
    source : str
        ``"hub"`` (downloaded now), ``"hub-cache"`` (Hub unreachable, cached copy) or ``"bundled"``.
    revision : str or None
        The commit sha of a Hub copy; None for the bundled model.
    repo_id : str or None
        The Hub repo asked for, if any (also set when it fell back to the bundled model).
    message : str
        A human sentence for logs and the app's status line.
    """

    path: Path
    source: str
    revision: str | None
    repo_id: str | None
    message: str


def resolve_bundle(
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    bundled: Path = DEFAULT_BUNDLE,
    timeout_s: float = 2.5,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    download_timeout_s: float = 300.0,
) -> ResolvedBundle:
    """Choose the model bundle: the pinned Hub revision, its cached copy, or the bundled folder.

    Never raises for network or verification problems: each of them is logged as a warning and answered
    with the next best source, and the returned ``message`` says what happened. Raises ``HubError`` when
    the Hub answers that the repo id is malformed, or that the repo or revision does not exist or is not
    accessible: that is a setting to fix, not an outage to ride out.

    Parameters
    ----------
    repo_id : str, optional
        Hub model repo (``user/repo``). None or empty: the bundled model, without any request.
    revision : str, optional
        Tag, branch or full commit sha; default ``main``.
    bundled : Path
        The fallback bundle folder shipped with the code.
    timeout_s : float
        Time-box for the reachability check; an unreachable or silent Hub costs at most about this long.
    endpoint : str, optional
        Hub URL; default ``HF_ENDPOINT`` as read by ``huggingface_hub`` when it was imported.
    cache_dir : str or Path, optional
        Hugging Face cache folder; default the standard one (``HF_HUB_CACHE`` / ``HF_HOME``).
    token : str or bool, optional
        Hub token for private repos; default the one ``huggingface_hub`` finds (``HF_TOKEN``, login).
    download_timeout_s : float
        Upper bound on the download itself once the Hub has answered, so that a Hub that stops answering
        half-way cannot hang start-up either.

    Returns
    -------
    ResolvedBundle

    Examples
    --------
    >>> resolved = resolve_bundle()  # no repo: no network at all
    >>> resolved.source
    'bundled'
    """
    bundled = Path(bundled)
    repo_id = (repo_id or "").strip() or None
    if not repo_id:
        return _bundled(
            bundled, None, f"no Hub repo set ({ENV_REPO}); using the bundled model in {_show(bundled)}"
        )
    revision = (revision or "").strip() or DEFAULT_REVISION

    api = HfApi(endpoint=endpoint, token=token)

    def fall_back(exc: Exception, what: str) -> ResolvedBundle:
        # The Hub said no (no such repo or revision, no access, a malformed id): a stale cached copy or the
        # demo model would hide that mistake, so it is the operator's error. Otherwise the Hub may just be
        # unreachable: try the cache.
        if _is_refusal(exc):
            raise HubError(
                f"Hub repo {repo_id} @ {revision} {what}: {_reason(exc, timeout_s)} "
                f"(check {ENV_REPO} and {ENV_REVISION})"
            ) from None
        return _from_cache(repo_id, revision, bundled, _reason(exc, timeout_s), cache_dir)

    try:
        # A single request with a hard timeout decides whether the Hub is there at all. snapshot_download
        # alone would wait up to 10 s per call and retry, which is too long for start-up.
        info = api.model_info(repo_id, revision=revision, timeout=timeout_s)
    except _hub_errors() as exc:
        return fall_back(exc, "is not available")

    try:
        path = _download(
            repo_id,
            revision,
            endpoint=endpoint,
            cache_dir=cache_dir,
            token=token,
            etag_timeout=timeout_s,
            deadline_s=download_timeout_s,
        )
    except _hub_errors() as exc:
        return fall_back(exc, "could not be downloaded")

    sha = path.name if _COMMIT_SHA.fullmatch(path.name) else info.sha
    failure = _verification_failure(path)
    if failure:
        return _bundled(
            bundled,
            repo_id,
            f"Hub copy of {repo_id} @ {_short(sha)} failed verification ({failure}); "
            f"using the bundled model in {_show(bundled)}",
            warn=True,
        )
    pinned = "" if revision == sha else f"revision {revision}, "
    message = f"model from the Hub: {repo_id} @ {_short(sha)} ({pinned}verified)"
    log.info(message)
    return ResolvedBundle(path=path, source="hub", revision=sha, repo_id=repo_id, message=message)


def _download(
    repo_id: str,
    revision: str,
    *,
    endpoint: str | None,
    cache_dir: str | Path | None,
    token: str | bool | None,
    etag_timeout: float,
    deadline_s: float,
) -> Path:
    """``snapshot_download`` in a daemon thread, given up on after ``deadline_s``.

    huggingface_hub has no overall timeout (the tree listing has none at all), so the deadline is ours. A
    download given up on may finish in the background; it only ever writes to the cache.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["path"] = huggingface_hub.snapshot_download(
                repo_id,
                revision=revision,
                repo_type="model",
                endpoint=endpoint,
                cache_dir=cache_dir,
                token=token,
                etag_timeout=etag_timeout,
            )
        except BaseException as exc:  # handed to the calling thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"hub-download {repo_id}", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise TimeoutError(f"the download did not finish within {deadline_s:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return Path(str(outcome["path"]))


def _from_cache(
    repo_id: str, revision: str, bundled: Path, reason: str, cache_dir: str | Path | None
) -> ResolvedBundle:
    """The Hub did not answer: use the cached snapshot of ``revision`` if there is a good one."""
    try:
        path = Path(
            huggingface_hub.snapshot_download(
                repo_id, revision=revision, repo_type="model", cache_dir=cache_dir, local_files_only=True
            )
        )
    except (OSError, EntryNotFoundError) as exc:  # no usable cache is a normal outcome here
        log.debug("no cached copy of %s @ %s: %s", repo_id, revision, exc)
        return _bundled(
            bundled,
            repo_id,
            f"Hub {repo_id} unreachable ({reason}) and no cached copy of {revision}; "
            f"using the bundled model in {_show(bundled)}",
            warn=True,
        )
    sha = path.name if _COMMIT_SHA.fullmatch(path.name) else None
    failure = _verification_failure(path)
    if failure:
        return _bundled(
            bundled,
            repo_id,
            f"Hub {repo_id} unreachable ({reason}) and the cached copy failed verification "
            f"({failure}); using the bundled model in {_show(bundled)}",
            warn=True,
        )
    message = (
        f"Hub {repo_id} unreachable ({reason}); using the cached copy {repo_id} @ {_short(sha)} (verified)"
    )
    log.warning(message)
    return ResolvedBundle(path=path, source="hub-cache", revision=sha, repo_id=repo_id, message=message)


def _verification_failure(path: Path) -> str | None:
    """None if the snapshot verifies; else why not, after evicting it from the cache so that the next
    attempt downloads it again instead of reusing the damaged files."""
    try:
        verify_bundle(path)
    except BundleError as exc:
        _evict(path)
        return _strip_path(exc, path)
    return None


def _bundled(bundled: Path, repo_id: str | None, message: str, *, warn: bool = False) -> ResolvedBundle:
    log.log(logging.WARNING if warn else logging.INFO, message)
    return ResolvedBundle(path=bundled, source="bundled", revision=None, repo_id=repo_id, message=message)


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What the Hub and the network raise: huggingface_hub's errors, and the HTTP client's and the
    operating system's network errors (refused, DNS, timeouts; ``OSError`` also holds HfHubHTTPError and
    the offline mode's refusal). Anything else is a bug and keeps its traceback."""
    return (OSError, HFValidationError, EntryNotFoundError, *_transport_errors())


def _is_refusal(exc: BaseException) -> bool:
    """True when the Hub answered and said no (missing repo or revision, no access), or the repo id is not
    one at all. Those are configuration mistakes. Server errors (5xx) count as unreachable, like the
    network errors.
    """
    if isinstance(exc, HFValidationError):
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code < 500
    return False


def _reason(exc: BaseException, timeout_s: float) -> str:
    """A short reason for a message: the first line of the error, or the timeout."""
    if isinstance(exc, TimeoutError) and str(exc):
        return str(exc)
    if "Timeout" in type(exc).__name__:
        return f"no answer within {timeout_s:g} s"
    # The Hub's 404s read "404 Client Error." on their first line: name the actual problem instead.
    if isinstance(exc, RevisionNotFoundError):
        return "no such branch, tag or commit"
    if isinstance(exc, GatedRepoError):
        return "gated repo: accept its conditions and set HF_TOKEN"
    if isinstance(exc, RepositoryNotFoundError):
        return "repository not found, or private and no valid HF_TOKEN"
    if isinstance(exc, HFValidationError):
        return f"not a repo id ({str(exc).strip().splitlines()[0] if str(exc).strip() else 'user/name'})"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _strip_path(exc: BaseException, path: Path) -> str:
    """A BundleError message without the long cache path in front."""
    return str(exc).removeprefix(f"{path}: ")


def _evict(snapshot: Path) -> None:
    """Remove a snapshot that failed verification, with its blobs, so that the next start downloads it again.

    huggingface_hub trusts a cached file whose name matches the server's ETag, so a copy corrupted in
    transit would otherwise be reused for ever.
    """
    try:
        for entry in snapshot.rglob("*"):
            if entry.is_symlink():
                blob = entry.resolve()
                entry.unlink()
                blob.unlink(missing_ok=True)
        shutil.rmtree(snapshot, ignore_errors=True)
    except OSError as exc:
        log.debug("could not remove the bad snapshot %s: %s", snapshot, exc)


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "?"


def _show(path: Path) -> str:
    """A folder as users know it: relative to the working directory when it is inside it."""
    try:
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path)
    return shown.rstrip("/") + "/"


# --- publishing -------------------------------------------------------------------------------------


def publish(
    bundle_dir: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    tag: str | None = None,
) -> str:
    """Upload a verified bundle and its model card to a Hub model repo, in one commit.

    Parameters
    ----------
    bundle_dir : str or Path
        The bundle folder; refused with ``BundleError`` unless ``verify_bundle`` accepts it.
    repo_id : str
        ``user/repo``; created if it does not exist.
    revision : str, optional
        Branch to commit to (default ``main``); created from ``main`` if missing.
    private : bool
        Create the repo private (ignored if it exists).
    token : str, optional
        Hub token with write access; default the one ``huggingface_hub`` finds.
    endpoint : str, optional
        Hub URL; default ``HF_ENDPOINT``.
    commit_message : str, optional
        Default: "Upload gearbox sound check bundle".
    tag : str, optional
        Tag the new commit (for example ``v1``) so that users can pin it with ``ANOMALY_HUB_REVISION``.

    Returns
    -------
    str
        The commit URL; its last path segment is the commit sha.
    """
    bundle_dir = Path(bundle_dir)
    config = verify_bundle(bundle_dir)
    try:
        commit = _upload(
            HfApi(endpoint=endpoint, token=token),
            bundle_dir,
            config,
            repo_id,
            private=private,
            revision=revision,
            tag=tag,
            commit_message=commit_message,
        )
    except HfHubHTTPError as exc:
        raise HubError(f"{repo_id}: the Hub refused the upload ({_first_line(exc)})") from None
    except (OSError, *_transport_errors()) as exc:  # connection refused, DNS, timeouts
        raise HubError(f"{repo_id}: the Hub cannot be reached ({_first_line(exc)})") from None
    log.info("published %s to %s @ %s", bundle_dir, repo_id, commit.oid[:7])
    return commit.commit_url


def _upload(api, bundle_dir: Path, config: dict, repo_id: str, *, private, revision, tag, commit_message):
    """The commit behind ``publish``: repo (and branch), the bundle's files and the model card, a tag."""
    api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
    if revision and revision != DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    card = render_model_card(config, repo_id)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=bundle_dir / name)
        for name in ("config.json", *BUNDLE_FILES)
    ]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode()))
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or "Upload gearbox sound check bundle",
        repo_type="model",
        revision=revision,
    )
    if tag:
        api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="model")
    return commit


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's own network errors: huggingface_hub 2.x speaks through ``httpx2`` (older ones
    through ``httpx``), whose errors are not ``OSError``."""
    found = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)
