"""AUC and partial AUC per domain and per fault kind, DCASE 2022+ rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from anomaly.dcase import ClipInfo, list_audio, parse_name

MAX_FPR = 0.1


def test_files(test_dir: str | Path) -> list[Path]:
    """Labelled clips: ``TEST_DIR/test`` in DCASE layout, else every clip below ``TEST_DIR``."""
    test_dir = Path(test_dir)
    folder = test_dir / "test" if (test_dir / "test").is_dir() else test_dir
    return [p for p in list_audio(folder) if parse_name(p).label is not None]


def _auc(normal: np.ndarray, anomalous: np.ndarray) -> dict[str, float] | None:
    if len(normal) == 0 or len(anomalous) == 0:
        return None
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    s = np.r_[normal, anomalous]
    return {
        "auc": float(roc_auc_score(y, s)),
        "pauc": float(roc_auc_score(y, s, max_fpr=MAX_FPR)),
        "n_normal": int(len(normal)),
        "n_anomaly": int(len(anomalous)),
    }


def auc_report(infos: Sequence[ClipInfo], scores: Sequence[float]) -> dict:
    """Per domain: that domain's normals against all anomalies; per fault kind likewise."""
    scores = np.asarray(scores, dtype=float)
    is_anom = np.array([i.label == "anomaly" for i in infos])
    domains = np.array([i.domain for i in infos])
    faults = np.array([i.fault or "" for i in infos])
    report: dict = {}
    for domain in sorted(set(domains.tolist())):
        normal = scores[(domains == domain) & ~is_anom]
        entry = _auc(normal, scores[is_anom])
        if entry is None:
            continue
        kinds = sorted({f for f in faults[is_anom].tolist() if f})
        if kinds:
            entry["faults"] = {k: _auc(normal, scores[is_anom & (faults == k)]) for k in kinds}
        report[domain] = entry
    if len(report) > 1:
        report["mean"] = {
            "auc": float(np.mean([report[d]["auc"] for d in report])),
            "pauc": float(np.mean([report[d]["pauc"] for d in report])),
        }
    return report
