"""The model card and the app's About page: one template, two renderings.

The prose lives in ``templates/model_card.md``, a Jinja template rendered by huggingface_hub's
``ModelCard.from_template``. ``render_model_card`` renders it for the Hub (YAML metadata, the repo's usage,
the preprocessing table and the files with their checksums); ``about_markdown`` renders the same template for
the app's About tab, without the metadata and the Hub-only sections, so that the two cannot say different
things. This module only turns a bundle's ``config.json`` into the template's variables; it uses no network.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from anomaly.bands import MIN_BAND_HZ
from anomaly.calibration import MIN_CALIBRATION_CLIPS, ROUGH_CALIBRATION_CLIPS
from anomaly.decoding import AUDIO_FORMATS
from anomaly.features import MIN_SECONDS, FeatureParams
from anomaly.scoring import LABELS

TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"
CARD_TAGS = ["audio", "anomaly-detection", "machine-condition-monitoring", "dcase", "gearbox"]

_FILE_ROLES = {
    "encoder.keras": "encoder sub-model (embedding)",
    "decoder.keras": "decoder, for the anomaly map",
    "arrays.npz": "scorer state, input normalisation and held-out normal scores (no pickle)",
}
_THRESHOLD_METHODS = {
    "gamma": "a gamma distribution fitted to held-out normal scores, cut at its {q} quantile",
    "empirical": "the empirical {q} quantile of held-out normal scores",
    "manual": "set by hand",
}


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

    Examples
    --------
    >>> from anomaly.bundle import DEFAULT_BUNDLE, verify_bundle
    >>> card = render_model_card(verify_bundle(DEFAULT_BUNDLE), "you/gearbox-model")
    >>> card.data.pipeline_tag
    'audio-classification'
    """
    return _render(card_variables(config, hub=True, repo_id=repo_id))


def about_markdown(
    config: dict,
    *,
    model_line: str | None = None,
    max_seconds: float | None = None,
    max_file_mb: float | None = None,
    max_batch_files: int | None = None,
    upload_kept_minutes: int | None = None,
) -> str:
    """The app's About page: the model card's text without its metadata and Hub-only sections.

    Parameters
    ----------
    config : dict
        The active bundle's config (``Detector.bundle.config``).
    model_line : str, optional
        A sentence saying which model is loaded, shown under the training data.
    max_seconds, max_file_mb, max_batch_files, upload_kept_minutes : optional
        The app's own limits (longest recording, largest upload, files per batch, how long uploads are
        kept); each one left out is not mentioned.

    Returns
    -------
    str
        Markdown for ``gr.Markdown``.

    Examples
    --------
    >>> from anomaly.bundle import DEFAULT_BUNDLE, verify_bundle
    >>> text = about_markdown(verify_bundle(DEFAULT_BUNDLE), max_seconds=120)
    >>> "Adapt to my machine" in text
    True
    """
    variables = card_variables(
        config,
        hub=False,
        model_line=model_line,
        max_seconds=max_seconds,
        max_file_mb=max_file_mb,
        max_batch_files=max_batch_files,
        upload_kept_minutes=upload_kept_minutes,
    )
    return _render(variables).text.strip() + "\n"


def card_data() -> ModelCardData:
    """The card's YAML metadata (the same for every bundle)."""
    return ModelCardData(
        license="apache-2.0",
        library_name="keras",
        tags=list(CARD_TAGS),
        pipeline_tag="audio-classification",
    )


def card_variables(
    config: dict,
    *,
    hub: bool,
    repo_id: str | None = None,
    model_line: str | None = None,
    max_seconds: float | None = None,
    max_file_mb: float | None = None,
    max_batch_files: int | None = None,
    upload_kept_minutes: int | None = None,
) -> dict:
    """Everything the template reads, from a bundle's ``config.json`` (numbers formatted, prose left to the
    template). ``hub`` picks the Hub card (True) or the About page (False)."""
    labels = list(config.get("labels") or LABELS)
    training = config.get("training") or {}
    thresholds = config.get("thresholds") or {}
    params = FeatureParams.from_dict(config.get("preprocessing") or FeatureParams().to_dict())
    scorer = config.get("scorer") or {}
    embedding = config.get("embedding") or {}
    blocks = embedding.get("recipe") or ["encoder"]
    if isinstance(blocks, str):
        blocks = [blocks]
    method = thresholds.get("method", "?")
    how = _THRESHOLD_METHODS.get(
        method, f"method {method}" + (", quantile {q}" if thresholds.get("maintenance_quantile") else "")
    )
    maintenance_q = thresholds.get("maintenance_quantile")
    quantile_based = method in ("gamma", "empirical")
    return {
        "hub": hub,
        "repo_id": repo_id or "",
        "labels": labels,
        "synthetic": bool(training.get("synthetic")),
        "training_data": training.get("data") or "",
        "training_summary": _training_summary(training),
        "training_rows": [
            (key, _plain(value)) for key, value in training.items() if key not in ("data", "synthetic")
        ],
        "training_known": bool(training),
        "built": str(config.get("created") or "")[:10],
        "model_line": model_line or "",
        "min_calibration_clips": MIN_CALIBRATION_CLIPS,
        "rough_calibration_clips": ROUGH_CALIBRATION_CLIPS,
        "min_seconds": f"{MIN_SECONDS:g}",
        "max_seconds": f"{max_seconds:g}" if max_seconds else "",
        "max_file_mb": f"{max_file_mb:g}" if max_file_mb else "",
        "max_batch_files": max_batch_files or "",
        "upload_kept_minutes": upload_kept_minutes or "",
        "formats": AUDIO_FORMATS,
        "sr_khz": f"{params.sr / 1000:g}",
        "min_band_khz": f"{MIN_BAND_HZ / 1000:g}",
        "n_mels": params.n_mels,
        "window_seconds": f"{params.window_seconds:.0f}",
        "recipe": ", ".join(f"`{block}`" for block in blocks),
        "clip_score": scorer.get("clip_score", "max over windows"),
        "model_details": _model_details(scorer, embedding),
        "metrics": _metrics(config.get("metrics")),
        "maintenance": _num(thresholds.get("maintenance")),
        "severe": _num(thresholds.get("severe")),
        "maintenance_short": _num(thresholds.get("maintenance"), 2),
        "severe_short": _num(thresholds.get("severe"), 2),
        "maintenance_how": how.format(q=maintenance_q),
        "severe_how": how.format(q=thresholds.get("severe_quantile")),
        "maintenance_quantile": f"{100 * maintenance_q:g}" if _is_number(maintenance_q) else "",
        "maintenance_one_in": _one_in(maintenance_q) if quantile_based else "",
        "severe_one_in": _one_in(thresholds.get("severe_quantile")) if quantile_based else "",
        "preprocessing": [(key, _plain(value)) for key, value in params.to_dict().items()],
        "files": [
            (name, _FILE_ROLES.get(name, ""), digest) for name, digest in (config.get("files") or {}).items()
        ],
    }


def _render(variables: dict) -> ModelCard:
    return ModelCard.from_template(card_data(), template_path=str(TEMPLATE), **variables)


def _training_summary(training: dict) -> str:
    if not training.get("n_clips"):
        return ""
    parts = [f"{training['n_clips']} normal clips"]
    if "seed" in training:
        parts.append(f"seed {training['seed']}")
    if "epochs" in training:
        parts.append(f"{training['epochs']} epochs")
    return "Training: " + ", ".join(parts) + "."


def _model_details(scorer: dict, embedding: dict) -> list[str]:
    details = []
    if embedding.get("dim"):
        pooling = embedding.get("encoder_pooling") or embedding.get("pooling") or "pooled"
        details.append(f"Embedding: {embedding['dim']} values per window ({pooling})")
    if scorer.get("n_components"):
        details.append(f"PCA components: {scorer['n_components']}")
    if scorer.get("domains"):
        details.append(f"Reference domains: {', '.join(map(str, scorer['domains']))}")
    if scorer.get("method"):
        details.append(f"Scorer: {scorer['method']}")
    return details


def _metrics(metrics: dict | None) -> dict | None:
    """The evaluation report as table rows, or None when the bundle was not evaluated."""
    if not metrics:
        return None
    domains = {k: v for k, v in metrics.items() if isinstance(v, dict) and "auc" in v}
    return {
        "test_set": metrics.get("test_set") or "",
        "max_fpr": metrics.get("max_fpr", 0.1),
        "domains": [
            {
                "domain": domain,
                "auc": _num(entry.get("auc")),
                "pauc": _num(entry.get("pauc")),
                "n_normal": entry.get("n_normal", ""),
                "n_anomaly": entry.get("n_anomaly", ""),
            }
            for domain, entry in domains.items()
        ],
        "faults": [
            {
                "domain": domain,
                "kind": kind,
                "auc": _num((sub or {}).get("auc")),
                "pauc": _num((sub or {}).get("pauc")),
            }
            for domain, entry in domains.items()
            for kind, sub in (entry.get("faults") or {}).items()
        ],
    }


def _one_in(quantile: object) -> str:
    """1 - quantile as "1 in N" (0.9 -> "10"); empty when there is no quantile."""
    if not _is_number(quantile) or not 0 < quantile < 1:
        return ""
    return f"{round(1 / (1 - quantile)):,}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _is_number(value) else "n/a"


def _plain(value: object) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)
