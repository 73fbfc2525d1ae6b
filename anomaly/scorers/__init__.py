"""Scorers: the ways a recording's distance from normal is measured (see ``anomaly.scorers.base``).

``SCORERS`` maps each calibration method, as written in a calibration file's ``meta["method"]``, to its
scorer class. A new scorer is one module implementing ``Scorer`` (with ``fit``, ``to_arrays`` and
``from_arrays``) and one line here.
"""

from __future__ import annotations

from anomaly.scorers.base import BaseScorer, Decision, Scored, Scorer, decide
from anomaly.scorers.reference import ReferenceScorer
from anomaly.scorers.window import WindowScorer

SCORERS: dict[str, type] = {
    WindowScorer.method: WindowScorer,
    ReferenceScorer.method: ReferenceScorer,
}

__all__ = ["SCORERS", "BaseScorer", "Decision", "ReferenceScorer", "Scored", "Scorer", "WindowScorer", "decide"]
