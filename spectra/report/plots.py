"""Matplotlib charts of per-layer metrics against depth, returned as inline SVG strings.

Why matplotlib SVG: the report has a handful of depth charts (alpha, alpha_weighted, norms, stable
rank, LR multipliers, noise, update geometry). SVG keeps them crisp at any zoom, searchable and
small (a few tens of kB with ``svg.fonttype = none``, so text uses the page's font), needs no
JavaScript library and works offline. An interactive library (plotly.js is ~3 MB) would dwarf the
rest of the page. The per-layer ESD small multiples are the exception, drawn by :mod:`.svg`.

No checkpoint-derived string is ever drawn by matplotlib: legends, layer names and checkpoint
names are rendered in HTML by the template (autoescaped). Charts only carry numbers and labels
written here. Every scatter collection gets a ``gid`` so the page script can attach hover titles
(the layer names travel separately as escaped JSON).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import require

__all__ = ["Series", "depth_chart", "trajectory_chart", "PALETTE"]

#: Okabe & Ito (2008) colour-blind-safe palette (yellow darkened to read on white), then greys.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#B59B00", "#000000",
           "#8C8C8C")
UNDER = "#1d2330"  # outline of an under-trained point (dark: no group colour is this dark)
OVER = "#1d2330"  # outline of an over-trained point
BAND = "#009E73"
BASELINE = "#9aa0a6"  # reference values (random baselines)

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "spectra",
    "font.size": 9,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # for layout only; the SVG text takes the page's font
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888",
    "axes.labelcolor": "#333",
    "xtick.color": "#555",
    "ytick.color": "#555",
    "axes.grid": True,
    "grid.color": "#e8e8e8",
    "grid.linewidth": 0.6,
    "text.parse_math": False,
}


@dataclass(frozen=True)
class Series:
    """Points of one colour group: ``x`` (depth positions), ``y``, optional error bars and rings."""

    x: Sequence[float]
    y: Sequence[float]
    color: str
    gid: str = ""
    lo: Sequence[float] | None = None  # lower end of an interval (NaN = none)
    hi: Sequence[float] | None = None
    ring: Sequence[str] | None = None  # per-point edge colour ("" = none)
    size: float = 26.0
    marker: str = "o"
    line: bool = False
    extra: dict = field(default_factory=dict)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # responsive: drop the fixed size, keep the viewBox; CSS gives the width
    head_end = text.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    return head + ' class="chart-svg" preserveAspectRatio="xMidYMid meet"' + text[head_end:]


def _log_label(value: float, _pos=None) -> str:
    """Tick labels for log axes without mathtext (plain ``0.01``, ``100``, ``1e-05``)."""
    if value <= 0:
        return ""
    if 1e-2 <= value < 1e4:
        return f"{value:g}"
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def _logy(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if hi / max(lo, 1e-300) < 30:  # short range: label 1-2-5 steps too
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_log_label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _figure(width: float, height: float):
    require("matplotlib", "report")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    # fixed margins in inches: constrained layout re-measures all text several times (slow)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.12 / height)
    return fig


def depth_chart(
    series: Sequence[Series],
    *,
    ylabel: str,
    xticks: Sequence[tuple[float, str]] = (),
    xlabel: str = "depth (block index)",
    logy: bool = False,
    band: tuple[float, float] | None = None,
    hlines: Sequence[tuple[float, str]] = (),
    ylim: tuple[float, float] | None = None,
    width: float = 12.5,
    height: float = 3.6,
) -> str:
    """A scatter of one metric per layer against depth, as an SVG string.

    ``band`` shades a y range (alpha's 2-6 HT-SR band); ``hlines`` are reference lines with a short
    label; points outside ``ylim`` are pinned to its edge and drawn as triangles.
    """
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(width, height)
        ax = fig.add_subplot()
        if band is not None:
            ax.axhspan(*band, color=BAND, alpha=0.08, lw=0, zorder=0)
            for v in band:
                ax.axhline(v, color=BAND, lw=0.8, ls="--", alpha=0.7, zorder=1)
        for value, label in hlines:
            ax.axhline(value, color="#666", lw=0.8, ls=":", zorder=1)
            ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), xytext=(-2, 3),
                        textcoords="offset points", ha="right", fontsize=7, color="#666")
        for s in series:
            xs, ys = list(map(float, s.x)), list(map(float, s.y))
            if not xs:
                continue
            markers = [s.marker] * len(xs)
            if ylim is not None:
                for i, v in enumerate(ys):
                    if v > ylim[1]:
                        ys[i], markers[i] = ylim[1], "^"
                    elif v < ylim[0]:
                        ys[i], markers[i] = ylim[0], "v"
            if s.lo is not None and s.hi is not None:
                for x, y, lo, hi in zip(xs, ys, s.lo, s.hi):
                    if math.isfinite(lo) and math.isfinite(hi):
                        ax.plot([x, x], [lo, hi], color=s.color, lw=1.1, alpha=0.55, zorder=2)
            if s.line:
                ax.plot(xs, ys, color=s.color, lw=1.2, alpha=0.8, zorder=2)
            rings = list(s.ring) if s.ring is not None else [""] * len(xs)
            edge = [r or "white" for r in rings]
            widths = [1.5 if r else 0.6 for r in rings]
            if s.marker in ("_", "|"):  # unfilled line markers take the face colour
                edge, widths = None, [2.0] * len(xs)
            coll = ax.scatter(xs, ys, s=s.size, c=s.color, edgecolors=edge, linewidths=widths, zorder=3,
                              marker=s.marker)
            clipped = [(x, y, m) for x, y, m in zip(xs, ys, markers) if m != s.marker]
            for mk in ("^", "v"):
                pts = [(x, y) for x, y, m in clipped if m == mk]
                if pts:  # pinned to the axis edge: a triangle says "beyond this"
                    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=s.size * 2.2, c=s.color,
                               marker=mk, edgecolors="white", linewidths=0.5, zorder=4)
            if s.gid:
                coll.set_gid(s.gid)
        if logy:
            _logy(ax)
        if ylim is not None:
            pad = 0.03 * (ylim[1] - ylim[0])
            ax.set_ylim(ylim[0] - pad, ylim[1] + pad)
        if xticks:
            ax.set_xticks([p for p, _ in xticks], [lab for _, lab in xticks])
            ax.set_xlim(min(p for p, _ in xticks) - 0.6, max(p for p, _ in xticks) + 0.6)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        return _svg(fig)


def trajectory_chart(
    values: Sequence[Sequence[float]],
    colors: Sequence[str],
    *,
    ylabel: str = "alpha",
    band: tuple[float, float] | None = (2.0, 6.0),
    mean: Sequence[float] | None = None,
    gid: str = "traj",
    width: float = 12.5,
    height: float = 3.4,
) -> str:
    """One thin line per layer across checkpoints 1..K (``values[layer][k]``), plus a bold mean."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(width, height)
        ax = fig.add_subplot()
        if band is not None:
            ax.axhspan(*band, color=BAND, alpha=0.08, lw=0, zorder=0)
        k = max((len(v) for v in values), default=0)
        xs = list(range(1, k + 1))
        for i, (row, color) in enumerate(zip(values, colors)):
            (line,) = ax.plot(xs[: len(row)], row, color=color, lw=0.9, alpha=0.55, marker="o", ms=2.5, zorder=2)
            line.set_gid(f"{gid}-l{i}")
        if mean is not None:
            ax.plot(xs[: len(mean)], mean, color="#222", lw=2.4, marker="o", ms=5, zorder=3)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("checkpoint")
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
        return _svg(fig)
