"""The score gauge: where a score sits between the thresholds, as an HTML fragment (no image, no script) for
``gr.HTML``, so that the browser lays it out at any width.

Examples
--------
>>> from anomaly.scoring import Thresholds
>>> gauge_html(8.0, Thresholds(10.0, 12.0)).startswith('<div class="gauge"')
True
"""

from __future__ import annotations

import html
import math

from anomaly.plots import (
    INK,
    LABEL_COLOURS,
    MUTED,
    NEUTRAL_ZONE_COLOURS,
    ZONE_NAMES,
    format_score,
    scale_position,
    score_scale,
)
from anomaly.scoring import LABELS, Thresholds

GAUGE_BAR_PX = 18
UNFAMILIAR_HINT = "The machine does not sound like the reference: the score is not comparable"
GAUGE_MARKER_PX = 14
# Scoped under .gauge: the fragment sits in a page it must not restyle. Text colours inherit, so that the
# gauge reads on the app's light and dark themes alike.
GAUGE_STYLE = f"""<style>
.gauge {{ box-sizing: border-box; width: 100%; padding: 2px 12px 4px; line-height: 1.3;
  font-size: max(1em, 15px); }}
.gauge .gauge-score-row {{ white-space: nowrap; min-height: 2.6em; }}
.gauge .gauge-score {{ display: inline-block; position: relative; font-size: 2em; font-weight: 700;
  font-variant-numeric: tabular-nums; white-space: normal; }}
.gauge .gauge-overflow {{ display: inline-block; font-size: 0.5em; font-weight: 600; margin-left: 0.4em;
  white-space: nowrap; }}
.gauge .gauge-track {{ position: relative; padding-top: {GAUGE_MARKER_PX}px; }}
.gauge .gauge-bar {{ position: relative; height: {GAUGE_BAR_PX}px; border-radius: {GAUGE_BAR_PX // 2}px;
  overflow: hidden; }}
.gauge .gauge-zone {{ position: absolute; top: 0; bottom: 0; }}
.gauge .gauge-tick {{ position: absolute; top: {GAUGE_MARKER_PX - 3}px; width: 2px;
  height: {GAUGE_BAR_PX + 8}px; margin-left: -1px; background: currentColor; opacity: 0.8; }}
.gauge .gauge-marker {{ position: absolute; top: 0; width: 0; height: 0; margin-left: -9px;
  border-left: 9px solid transparent; border-right: 9px solid transparent;
  border-top: {GAUGE_MARKER_PX}px solid currentColor; }}
.gauge .gauge-marker::after {{ content: ""; position: absolute; left: -2px; top: 0; width: 4px;
  height: {GAUGE_BAR_PX}px; background: {INK}; box-shadow: 0 0 0 1px #fff; }}
.gauge .gauge-thresholds {{ position: relative; height: 1.5em; margin-top: 6px; font-size: 0.95em;
  white-space: nowrap; font-variant-numeric: tabular-nums; }}
.gauge .gauge-threshold-label {{ position: absolute; top: 0; }}
.gauge .gauge-legend {{ display: flex; flex-wrap: wrap; gap: 2px 16px; margin-top: 4px; font-size: 0.95em; }}
.gauge .gauge-zone-name {{ display: inline-flex; align-items: center; gap: 6px; white-space: nowrap; }}
.gauge .gauge-swatch {{ display: inline-block; width: 14px; height: 14px; border-radius: 3px; }}
</style>"""


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3f}%"


def gauge_html(score: float | None, thresholds: Thresholds, *, familiar: bool = True) -> str:
    """The score gauge as an HTML fragment (no image, no script) for ``gr.HTML``.

    A horizontal bar in three zones (Normal, Needs maintenance, Severe) on the log scale of
    ``score_scale``; the two thresholds' values under their ticks, the maintenance one ending at its tick
    and the severe one starting at its tick, so that they never meet however close the thresholds are; the
    score as a big number on its own line above a triangle marker, both in the colour of its zone; the
    zone names in a legend under the bar. Every position is a percentage, so the gauge fits any width, and
    each kind of text has its own row, so no two labels overlap at any width.

    Parameters
    ----------
    score : the anomaly score; None (or not finite) draws the bar without a marker.
    thresholds : where the zones start.
    familiar : False when the verdict is "unfamiliar" (the machine does not sound like the reference, so
        the score says nothing about its health): the zones are then shades of grey
        (``NEUTRAL_ZONE_COLOURS``) and the marker and the number grey (``MUTED``), so that no colour
        suggests a severity the verdict does not give.

    Classes: ``gauge``, ``gauge-bar``, ``gauge-zone``, ``gauge-threshold-label``, ``gauge-marker``,
    ``gauge-score``, ``gauge-overflow``, ``gauge-zone-name``.
    """
    has_score = score is not None and math.isfinite(score)
    low, high = score_scale(thresholds, [score] if has_score else [])
    bounds = [low, thresholds.maintenance, thresholds.severe, high]
    positions = [scale_position(v, low, high) for v in bounds]
    positions[0], positions[-1] = 0.0, 1.0

    fills = LABEL_COLOURS if familiar else NEUTRAL_ZONE_COLOURS
    zones = "".join(
        f'<div class="gauge-zone" data-zone="{html.escape(label)}" title="{html.escape(ZONE_NAMES[label])}" '
        f'style="left:{_pct(a)};width:{_pct(b - a)};background:{fills[label]}"></div>'
        for label, a, b in zip(LABELS, positions[:-1], positions[1:], strict=True)
    )
    m, s = positions[1], positions[2]
    ticks = "".join(f'<div class="gauge-tick" style="left:{_pct(p)}"></div>' for p in (m, s))
    # The maintenance value ends at its tick, the severe value starts at its tick. A maintenance threshold
    # near the left end (zero, or far below severe) has no room before its tick and starts at it instead,
    # and a severe threshold near the right end ends at its tick: that happens only when severe is hundreds
    # of times maintenance, and the scale then puts the two ticks most of the bar apart.
    m_place = f"right:{_pct(1 - m)};padding-right:5px" if m > 0.15 else f"left:{_pct(m)};padding-left:5px"
    s_place = f"left:{_pct(s)};padding-left:5px" if s < 0.85 else f"right:{_pct(1 - s)};padding-right:5px"
    threshold_labels = (
        f'<span class="gauge-threshold-label" data-threshold="maintenance" style="{m_place}" '
        f'title="Needs maintenance from {format_score(thresholds.maintenance)}">'
        f"{format_score(thresholds.maintenance)}</span>"
        f'<span class="gauge-threshold-label" data-threshold="severe" style="{s_place}" '
        f'title="Severe from {format_score(thresholds.severe)}">{format_score(thresholds.severe)}</span>'
    )
    legend = "".join(
        f'<span class="gauge-zone-name" data-zone="{html.escape(label)}">'
        f'<span class="gauge-swatch" style="background:{fills[label]}"></span>'
        f"{html.escape(ZONE_NAMES[label])}</span>"
        for label in LABELS
    )

    marker = score_row = ""
    summary = "Anomaly score: none yet"
    if has_score:
        label = thresholds.label(score)
        colour = LABEL_COLOURS[label] if familiar else MUTED
        p = scale_position(score, low, high)
        off_scale = score > high
        marker = f'<div class="gauge-marker" style="left:{_pct(p)};color:{colour}"></div>'
        overflow = '<span class="gauge-overflow">off the scale &#9654;</span>' if off_scale else ""
        hint = "" if familiar else f' title="{UNFAMILIAR_HINT}"'
        # Shifted left by its own width times p: at the left end it starts at the edge, at the right end it
        # ends there, and in between the point over the marker moves smoothly.
        score_row = (
            f'<span class="gauge-score" style="left:{_pct(p)};transform:translateX(-{_pct(p)});'
            f'color:{colour}"{hint}>{format_score(score)}{overflow}</span>'
        )
        zone = ZONE_NAMES[label] if familiar else "unfamiliar machine"
        summary = f"Anomaly score {format_score(score)} ({zone}{', off the scale' if off_scale else ''})"
    summary += (
        f"; needs maintenance from {format_score(thresholds.maintenance)}, "
        f"severe from {format_score(thresholds.severe)}"
    )
    return (
        f'<div class="gauge{"" if familiar else " gauge-neutral"}" role="img" '
        f'aria-label="{html.escape(summary)}">{GAUGE_STYLE}'
        f'<div class="gauge-score-row">{score_row or "&nbsp;"}</div>'
        f'<div class="gauge-track"><div class="gauge-bar">{zones}</div>{ticks}{marker}</div>'
        f'<div class="gauge-thresholds">{threshold_labels}</div>'
        f'<div class="gauge-legend">{legend}</div>'
        "</div>"
    )
