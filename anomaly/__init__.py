"""Gearbox Sound Check: the anomaly detection engine behind the app.

audio -> log-mel -> encoder embedding -> PCA -> Mahalanobis (min over reference domains) -> calibrated label.
"""

__version__ = "0.1.0"
