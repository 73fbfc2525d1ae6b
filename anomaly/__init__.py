"""Gearbox Sound Check: the anomaly detection engine behind the app.

audio -> log-mel -> encoder embedding -> PCA -> Mahalanobis (min over reference domains) -> calibrated label.
"""

import os

# TensorFlow's start-up notices (oneDNN, CPU features) mean nothing to our users; set before any import
# of TensorFlow or Keras. An explicit setting in the environment still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
