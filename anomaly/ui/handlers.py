"""The event handlers of the Analyze, Batch and Adapt to my machine tabs, as one ``Page`` for ``app.py``.

``Page`` holds the shared ``Runtime`` and the page's components (a namespace ``app.py`` fills while laying
the page out); every handler returns a dict keyed by the components it changes, so it cannot drift out of
step with its wiring. The handlers live by tab: ``analyze`` (one recording or image, and the public API that
analyses it), ``batch`` (many recordings) and ``adapt`` (thresholds and calibrations); ``page`` holds what
they share. Public API handlers (``analyze``, ``analyze_spectrogram``, ``score``, ``batch``) raise their
errors, which gradio_client sees as ``AppError``; the page's handlers (``show_*``) show the same message in
place of the result instead, and clear every old result first.
"""

from __future__ import annotations

from anomaly.ui.adapt import AdaptHandlers
from anomaly.ui.analyze import AnalyzeHandlers
from anomaly.ui.batch import BATCH_COLUMNS, BatchHandlers
from anomaly.ui.page import unchanged

__all__ = ["BATCH_COLUMNS", "Page", "unchanged"]


class Page(AnalyzeHandlers, BatchHandlers, AdaptHandlers):
    """The handlers of one page, bound to its components ``c`` and the shared ``runtime``."""
