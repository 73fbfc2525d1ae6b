"""Where the model comes from: a pinned Hugging Face Hub repo, its local cache, or the bundled folder.

``resolve_bundle`` picks the bundle folder at start-up. With ``ANOMALY_HUB_REPO`` unset it returns the
bundled ``artifacts/`` folder without touching the network. With it set, it asks the Hub (time-boxed, so
an unreachable Hub cannot stall start-up), downloads the snapshot into the standard Hugging Face cache
and verifies every checksum; a Hub that cannot be reached falls back to the cached copy, and anything
that fails verification falls back to the bundled model. Every outcome carries a sentence saying which
model was chosen and why.

``publish`` uploads a verified bundle with a rendered model card in one commit; ``render_model_card``
builds that card from the bundle's ``config.json``.

Environment variables
---------------------
ANOMALY_HUB_REPO
    ``user/repo`` of a model repo holding a bundle. Unset or empty: use the bundled model.
ANOMALY_HUB_REVISION
    Tag, branch or full commit sha to pin (default ``main``). Pin a tag or sha in production so that a
    new upload cannot change the model under a running service.
HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN
    Read by ``huggingface_hub`` itself (endpoint, cache location, offline mode, credentials).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from anomaly.bundle import BUNDLE_FILES, DEFAULT_BUNDLE, verify_bundle
from anomaly.errors import BundleError, HubError
from anomaly.features import FeatureParams
from anomaly.scoring import LABELS

log = logging.getLogger("anomaly")

ENV_REPO = "ANOMALY_HUB_REPO"
ENV_REVISION = "ANOMALY_HUB_REVISION"
DEFAULT_REVISION = "main"

CARD_TAGS = ["audio", "anomaly-detection", "machine-condition-monitoring", "dcase", "gearbox"]
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
    with the next best source, and the returned ``message`` says what happened.

    Parameters
    ----------
    repo_id : str, optional
        Hub model repo (``user/repo``). None: read ``ANOMALY_HUB_REPO`` and ``ANOMALY_HUB_REVISION``.
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
    >>> resolved = resolve_bundle()  # ANOMALY_HUB_REPO unset: no network at all
    >>> resolved.source
    'bundled'
    """
    bundled = Path(bundled)
    if repo_id is None:
        repo_id = os.environ.get(ENV_REPO, "").strip() or None
        if revision is None:
            revision = os.environ.get(ENV_REVISION, "").strip() or None
    if not repo_id:
        return _bundled(
            bundled, None, f"no Hub repo set ({ENV_REPO}); using the bundled model in {_show(bundled)}"
        )
    revision = revision or DEFAULT_REVISION

    api = HfApi(endpoint=endpoint, token=token)

    def fall_back(exc: Exception, what: str) -> ResolvedBundle:
        # The Hub said no (no such repo or revision, no access): a stale cached copy would hide that
        # mistake, so go straight to the bundled model. Otherwise it may just be unreachable: try the cache.
        if _is_refusal(exc):
            return _bundled(
                bundled,
                repo_id,
                f"Hub {repo_id} @ {revision} {what} ({_reason(exc, timeout_s)}); "
                f"using the bundled model in {_show(bundled)}",
                warn=True,
            )
        return _from_cache(repo_id, revision, bundled, _reason(exc, timeout_s), cache_dir)

    try:
        # A single request with a hard timeout decides whether the Hub is there at all. snapshot_download
        # alone would wait up to 10 s per call and retry, which is too long for start-up.
        info = api.model_info(repo_id, revision=revision, timeout=timeout_s)
    except Exception as exc:  # every failure has a fallback; the reason is reported
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
    except Exception as exc:  # as above: fall back, say why
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
    except Exception as exc:  # no usable cache is a normal outcome here
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


def _is_refusal(exc: BaseException) -> bool:
    """True when the Hub answered and said no (missing repo or revision, no access, bad id).

    Those are configuration mistakes: a stale cached copy would hide them, so they go straight to the
    bundled model. Server errors (5xx) count as unreachable, like the network errors.
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


# --- model card -------------------------------------------------------------------------------------


def render_model_card(config: dict, repo_id: str) -> ModelCard:
    """The model card (``README.md``) for a bundle, from its ``config.json``.

    Parameters
    ----------
    config : dict
        The bundle's config (``verify_bundle`` returns it). ``config["metrics"]`` is the report of
        ``python -m anomaly evaluate --record``: ``{"test_set": ..., "<domain>": {"auc", "pauc",
        "n_normal", "n_anomaly", "faults": {"<kind>": {"auc", "pauc", ...}}}, "mean": {...}}``.
    repo_id : str
        The Hub repo the card is for (used in the usage examples).

    Returns
    -------
    huggingface_hub.ModelCard
        Metadata and text; ``str(card)`` is the file content. No network is used.
    """
    data = ModelCardData(
        license="apache-2.0",
        library_name="keras",
        tags=list(CARD_TAGS),
        pipeline_tag="audio-classification",
    )
    sections = [
        f"# Gearbox sound check: {repo_id}",
        _card_model(config),
        _card_training(config),
        _card_metrics(config),
        _card_thresholds(config),
        _card_preprocessing(config),
        _card_intended_use(),
        _card_limitations(config),
        _card_usage(repo_id),
        _card_files(config),
    ]
    body = "\n\n".join(s.strip() for s in sections) + "\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _card_model(config: dict) -> str:
    labels = config.get("labels") or list(LABELS)
    scorer = config.get("scorer") or {}
    embedding = config.get("embedding") or {}
    lines = [
        "## What this model is",
        "",
        "An unsupervised anomalous sound detector for gearboxes, in the style of DCASE Task 2 (machine "
        "condition monitoring). It learns only from recordings of normal operation and scores how far a new "
        "recording is from them.",
        "",
        "Pipeline: audio -> log-mel spectrogram -> convolutional autoencoder encoder (embedding per "
        "window) -> PCA -> Mahalanobis distance, the minimum over the reference domains (DCASE's source "
        "and target) -> "
        f"clip score ({scorer.get('clip_score', 'max over windows')}) -> calibrated 3-level label: "
        + ", ".join(f"**{label}**" for label in labels)
        + ".",
        "",
        "The decoder is shipped too: the reconstruction error per time-frequency cell draws the anomaly map "
        "that shows where in time and frequency a recording departs from normal.",
    ]
    details = []
    if embedding.get("dim"):
        details.append(
            f"- Embedding: {embedding['dim']} values per window ({embedding.get('pooling', 'pooled')})"
        )
    if scorer.get("n_components"):
        details.append(f"- PCA components: {scorer['n_components']}")
    if scorer.get("domains"):
        details.append(f"- Reference domains: {', '.join(map(str, scorer['domains']))}")
    if scorer.get("method"):
        details.append(f"- Scorer: {scorer['method']}")
    if details:
        lines += ["", *details]
    return "\n".join(lines)


def _card_training(config: dict) -> str:
    training = config.get("training") or {}
    lines = ["## Training data", ""]
    if training.get("synthetic"):
        lines += [
            "**This model is trained on synthetic data**: the project's own synthetic gearbox corpus "
            "(simulated shaft and gear-mesh harmonics, sidebands, motor hum and background noise at several "
            "speeds and loads), not on recordings of a real machine. It demonstrates the method; adapt it "
            "to your machine with `calibrate` before relying on its labels.",
            "",
        ]
    if training.get("data"):
        lines += [f"Data: {training['data']}", ""]
    rows = [(key, value) for key, value in training.items() if key not in ("data", "synthetic")]
    if rows:
        lines += [f"- {key}: {_plain(value)}" for key, value in rows]
    elif not training:
        lines.append("Not recorded in config.json.")
    return "\n".join(lines)


def _card_metrics(config: dict) -> str:
    metrics = config.get("metrics")
    lines = ["## Metrics", ""]
    if not metrics:
        lines.append("Not evaluated: config.json holds no metrics for this bundle.")
        return "\n".join(lines)
    domains = {k: v for k, v in metrics.items() if isinstance(v, dict) and "auc" in v}
    if metrics.get("test_set"):
        lines += [f"Test set: {metrics['test_set']}", ""]
    lines += [
        f"AUC and partial AUC (max FPR {metrics.get('max_fpr', 0.1)}) per domain, DCASE 2022+ rules: each "
        "domain's normal clips "
        "against all anomalous clips.",
        "",
        "| Domain | AUC | pAUC | Normal clips | Anomalous clips |",
        "|---|---|---|---|---|",
    ]
    for domain, entry in domains.items():
        lines.append(
            f"| {domain} | {_num(entry.get('auc'))} | {_num(entry.get('pauc'))} | "
            f"{entry.get('n_normal', '')} | {entry.get('n_anomaly', '')} |"
        )
    fault_rows = [
        (domain, kind, sub)
        for domain, entry in domains.items()
        for kind, sub in (entry.get("faults") or {}).items()
    ]
    if fault_rows:
        lines += ["", "Per fault kind:", "", "| Domain | Fault | AUC | pAUC |", "|---|---|---|---|"]
        lines += [
            f"| {domain} | {kind} | {_num((sub or {}).get('auc'))} | {_num((sub or {}).get('pauc'))} |"
            for domain, kind, sub in fault_rows
        ]
    return "\n".join(lines)


def _card_thresholds(config: dict) -> str:
    t = config.get("thresholds") or {}
    method = t.get("method", "?")
    how = {
        "gamma": "a gamma distribution fitted to held-out normal scores, cut at its {q} quantile",
        "empirical": "the empirical {q} quantile of held-out normal scores",
        "manual": "set by hand",
    }.get(method, f"method {method}" + (", quantile {q}" if t.get("maintenance_quantile") else ""))
    labels = config.get("labels") or list(LABELS)
    return "\n".join(
        [
            "## Thresholds",
            "",
            "| Label | Score from | How it was set |",
            "|---|---|---|",
            f"| {labels[1]} | {_num(t.get('maintenance'))} | {how.format(q=t.get('maintenance_quantile'))} |",
            f"| {labels[2]} | {_num(t.get('severe'))} | {how.format(q=t.get('severe_quantile'))} |",
            "",
            f"Scores below the maintenance threshold are {labels[0]}. The score is a Mahalanobis distance "
            "in the PCA space of normal embeddings to the nearest reference domain, divided by that domain's "
            "typical normal distance (1.0 = a typical normal window); not a probability." + _quantile_note(t),
        ]
    )


def _quantile_note(thresholds: dict) -> str:
    quantile = thresholds.get("maintenance_quantile")
    if not isinstance(quantile, (int, float)):
        return ""
    return (
        f" About {100 * quantile:g}% of normal recordings score below the maintenance threshold; "
        "override the thresholds with `--maintenance` / `--severe` or refit them with `calibrate`."
    )


def _card_preprocessing(config: dict) -> str:
    params = config.get("preprocessing") or FeatureParams().to_dict()
    lines = [
        "## Preprocessing",
        "",
        "Every path (training, calibration, prediction, the app) uses these parameters, read from "
        "config.json:",
        "",
        "| Parameter | Value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {_plain(value)} |" for key, value in params.items()]
    return "\n".join(lines)


def _card_intended_use() -> str:
    return "\n".join(
        [
            "## Intended use",
            "",
            "- A demonstration of unsupervised anomalous sound detection.",
            "- Screening gearbox recordings: which recordings sound unlike normal operation and deserve a "
            "closer look, with a map of where in time and frequency.",
            "- **Not a safety system.** Do not use it to decide that a machine is safe to run; a NORMAL "
            "label is not a guarantee.",
        ]
    )


def _card_limitations(config: dict) -> str:
    synthetic = bool((config.get("training") or {}).get("synthetic"))
    data = (
        "Trained on synthetic data: real gearboxes, microphones and rooms differ, so scores on real "
        "recordings are not calibrated until you run `calibrate` on your own normal recordings."
        if synthetic
        else "Trained on one data set: another machine, microphone position or room shifts the scores; "
        "run `calibrate` on your own normal recordings."
    )
    return "\n".join(
        [
            "## Limitations",
            "",
            f"- {data}",
            "- Adapt to your machine with `python -m anomaly calibrate NORMAL_CLIPS --out my.npz` (a handful "
            "of normal recordings; 10 or more give usable thresholds), then pass `--calibration my.npz`.",
            "- Conventions of DCASE: 10 s clips, 16 kHz, mono. Other rates are resampled and stereo is "
            "downmixed, but the model has only seen this format.",
            "- Only normal sounds were used for training; fault kinds it has never heard may score low.",
        ]
    )


def _card_usage(repo_id: str) -> str:
    return "\n".join(
        [
            "## How to use",
            "",
            "Run the app with this model (pin a tag or commit for reproducible results):",
            "",
            "```bash",
            f"ANOMALY_HUB_REPO={repo_id} ANOMALY_HUB_REVISION=main python app.py",
            "```",
            "",
            "Score recordings from the command line:",
            "",
            "```bash",
            f"ANOMALY_HUB_REPO={repo_id} python -m anomaly predict recording.wav --json",
            "```",
            "",
            "The files are checked against the sha256 sums in config.json on every load; a copy that does "
            "not match is refused and the bundled model is used instead.",
        ]
    )


def _card_files(config: dict) -> str:
    files = config.get("files") or {}
    what = {
        "encoder.keras": "encoder sub-model (embedding)",
        "decoder.keras": "decoder, for the anomaly map",
        "arrays.npz": "scorer state, input normalisation and held-out normal scores (no pickle)",
    }
    lines = [
        "## Files",
        "",
        "| File | What | sha256 |",
        "|---|---|---|",
        "| config.json | preprocessing, thresholds, training data, metrics, checksums | |",
    ]
    lines += [f"| {name} | {what.get(name, '')} | `{digest}` |" for name, digest in files.items()]
    return "\n".join(lines)


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _plain(value: object) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


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
