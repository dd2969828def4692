"""Hand-written SVG for the per-layer ESD small multiples.

A model has dozens to hundreds of layers and the report shows one log-log ESD per layer. Drawing
each with matplotlib costs ~0.1 s and ~40 kB of SVG (or a blurry PNG), so a 37-layer MiniLM report
would spend seconds in ``savefig`` alone. These plots are simple enough to write directly: a
log-binned histogram is one ``<path>``, the power-law fit is one straight segment on log-log axes,
``xmin`` is one dashed line. Each thumbnail is ~2-3 kB, takes well under a millisecond, stays
crisp when enlarged (the same SVG is shown larger on click, it scales with its ``viewBox``) and
contains no checkpoint-derived text: only numbers this module formats itself.

Density convention (as WeightWatcher's log-log ESD plot): with n eigenvalues and log-spaced bins,
``p(bin) = count / (n * width)`` in linear lambda. The fitted power law over the tail is

    p(lambda) = (n_tail / n) * (alpha - 1) / xmin * (lambda / xmin) ** -alpha,   lambda >= xmin

(Clauset, Shalizi & Newman 2009, eq. 2.2, scaled by the tail fraction), a straight line of slope
``-alpha`` on log-log axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["esd_svg", "esd_geometry", "esd_view", "log_ticks", "tick_label", "EsdStyle"]


@dataclass(frozen=True)
class EsdStyle:
    """Geometry and colours of an ESD thumbnail (pixels of the viewBox)."""

    width: int = 260
    height: int = 172
    left: int = 38
    right: int = 8
    top: int = 8
    bottom: int = 30
    hist: str = "#0072B2"
    fit: str = "#D55E00"
    xmin: str = "#444"
    bulk: str = "#999"


#: Decades of the bulk kept in view below xmin, at least (the tail's own width x 1.5 when larger).
BULK_DECADES = 0.6
#: Without a fit, the view spans at most this many decades below the largest eigenvalue.
NOFIT_DECADES = 4.0


def _range(lo: float, hi: float) -> tuple[float, float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return 0.0, 1.0
    if hi - lo < 1e-9:
        return lo - 0.5, hi + 0.5
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def _num(x: float) -> str:
    return f"{x:.1f}"


def tick_label(value: float) -> str:
    """A log-axis tick as SVG text: plain between 0.01 and 1e4 (``0.05``, ``200``), else ``2·10⁻⁵``.

    >>> tick_label(0.05), tick_label(200.0), tick_label(1e-5)
    ('0.05', '200', '10<tspan dy="-4" font-size="7">-5</tspan>')
    """
    if 1e-2 <= value < 1e4:
        return f"{value:.4g}"
    exp = math.floor(math.log10(value) + 1e-9)
    mant = round(value / 10.0**exp, 1)
    sup = f'10<tspan dy="-4" font-size="7">{exp}</tspan>'
    return sup if mant == 1 else f"{mant:g}·{sup}"


def log_ticks(lo: float, hi: float, max_ticks: int = 5) -> list[float]:
    """Tick positions (log10 values) inside [lo, hi]: decades, else 1-2-5 steps, else 1..9 steps,
    else the two rounded ends, so that every axis has at least two labelled ticks.

    >>> [round(10 ** t, 6) for t in log_ticks(math.log10(3), math.log10(30))]
    [5.0, 10.0, 20.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [math.log10(m) + k for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in mantissas]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 2:
            step = max(1, math.ceil(len(ticks) / max_ticks))
            return ticks[::step]
    inner = (10 ** (lo + 0.15 * (hi - lo)), 10 ** (hi - 0.15 * (hi - lo)))
    for digits in (2, 3, 4):  # the fewest digits that still tell the two ends apart
        ends = [float(f"{v:.{digits}g}") for v in inner]
        if ends[0] != ends[1]:
            break
    return [math.log10(v) for v in ends]


def esd_view(lx: np.ndarray, *, xmin: float = math.nan, fitted: bool = False) -> float:
    """The left end (log10 lambda) of the plotted range: the fitted tail and the bulk's upper part.

    With a fit the view starts max(BULK_DECADES, 1.5 x tail width) decades below xmin, so the tail
    fills at least 40% of the axis unless it is narrower than about 0.4 decades, and the bulk
    just below xmin (where the reader judges where the power law starts) stays in view. Near-zero
    eigenvalues of low-rank matrices (attention projections reach 1e-7) no longer squeeze the tail
    into the right edge; the plot counts them at the left edge instead. Without a fit the view
    spans at most NOFIT_DECADES below the top. Never below the smallest eigenvalue.
    """
    lo_data, hi = float(lx.min()), float(lx.max())
    if fitted and math.isfinite(xmin) and xmin > 0:
        tail_lo = math.log10(xmin)
        lo = tail_lo - max(BULK_DECADES, 1.5 * max(hi - tail_lo, 0.0))
    else:
        lo = hi - NOFIT_DECADES
    return max(lo, lo_data)


def esd_geometry(
    pos: np.ndarray,
    n_all: int,
    *,
    alpha: float = math.nan,
    xmin: float = math.nan,
    xmax: float = math.nan,
    num_pl_spikes: int | None = None,
    lo: float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Data coordinates of the plot: log10 bin edges, log10 density per bin (NaN when empty) and
    the two end points (log10 lambda, log10 p) of the fitted power law (empty without a fit).

    ``pos`` are the positive eigenvalues, ``n_all`` the count of all eigenvalues (the density
    normalisation), so the histogram integrates to the fraction of positive eigenvalues. ``lo``
    (log10 lambda) bins only the eigenvalues above it (the plotted view); the density keeps the
    same normalisation.
    """
    lx = np.log10(pos)
    start = float(lx.min()) if lo is None else max(float(lo), float(lx.min()))
    shown = lx[lx >= start]
    nbins = int(min(60, max(12, 2 * math.sqrt(max(shown.size, 1)))))
    edges = np.linspace(start, lx.max() + 1e-12, nbins + 1)
    counts, _ = np.histogram(shown, bins=edges)
    widths = np.diff(10.0**edges)
    dens = counts / (max(n_all, 1) * widths)
    ly = np.full(nbins, np.nan)
    ly[dens > 0] = np.log10(dens[dens > 0])
    fit_pts: list[tuple[float, float]] = []
    if math.isfinite(alpha) and math.isfinite(xmin) and xmin > 0 and alpha > 1:
        top = xmax if math.isfinite(xmax) and xmax > xmin else float(pos.max())
        n_tail = num_pl_spikes if num_pl_spikes else int((pos >= xmin).sum())
        c = (n_tail / max(n_all, 1)) * (alpha - 1.0) / xmin
        for lam in (xmin, top):
            fit_pts.append((math.log10(lam), math.log10(c) - alpha * (math.log10(lam) - math.log10(xmin))))
    return edges, ly, fit_pts


def esd_svg(
    evals: np.ndarray,
    *,
    alpha: float = math.nan,
    xmin: float = math.nan,
    xmax: float = math.nan,
    num_pl_spikes: int | None = None,
    D: float = math.nan,
    bulk: tuple[float, float] | None = None,
    style: EsdStyle = EsdStyle(),
    label: str = "",
    uid: str = "esd",
) -> str:
    """Log-log ESD of ``evals`` with the power-law fit and ``xmin`` as a standalone ``<svg>`` string.

    The x range shows the fitted tail and the bulk's upper part (:func:`esd_view`); eigenvalues
    left of it are counted by a marker at the left edge. ``bulk`` (lambda range of the
    Marchenko-Pastur bulk) is shaded when given. The group ``esd-annot`` (xmin, tail size, D) is
    meant for the enlarged view; the page's CSS hides it in thumbnails. ``label`` is an accessible
    name (XML-escaped here); ``uid`` makes the clip-path id unique within a page.

    >>> svg = esd_svg(np.random.default_rng(0).pareto(2.0, 500) + 1, alpha=3.0, xmin=2.0)
    >>> svg.startswith("<svg") and "path" in svg
    True
    """
    from xml.sax.saxutils import escape

    s = style
    ev = np.asarray(evals, dtype=np.float64).ravel()
    ev = ev[np.isfinite(ev)]
    n_all = ev.size
    pos = ev[ev > 0]
    if pos.size:
        pos = pos[pos >= pos.max() * 1e-12]  # numerically zero eigenvalues carry no shape
    w, h = s.width, s.height
    pw, ph = w - s.left - s.right, h - s.top - s.bottom
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{escape(label, {chr(34): "&quot;"})}" class="esd">')
    frame = (f'<rect x="{s.left}" y="{s.top}" width="{pw}" height="{ph}" fill="none" '
             f'stroke="#ccc" stroke-width="0.6"/>')
    if pos.size < 2:
        return (head + frame + f'<text x="{s.left + pw / 2}" y="{s.top + ph / 2}" text-anchor="middle" '
                f'font-size="10" fill="#777">no spectrum</text></svg>')

    fitted = math.isfinite(alpha) and math.isfinite(xmin) and xmin > 0 and alpha > 1
    lx = np.log10(pos)
    view = esd_view(lx, xmin=xmin, fitted=fitted)
    cut = int((lx < view).sum()) + (n_all - pos.size)
    edges, ly, fit_pts = esd_geometry(pos, n_all, alpha=alpha, xmin=xmin, xmax=xmax, num_pl_spikes=num_pl_spikes,
                                      lo=view)
    nbins = len(ly)
    nz = np.isfinite(ly)

    x0, x1 = _range(float(edges[0]), float(edges[-1]))
    y_hi = float(np.nanmax(ly)) if nz.any() else 0.0
    y_lo = max(float(np.nanmin(ly)), y_hi - 8.0) if nz.any() else -1.0
    y0, y1 = _range(y_lo, y_hi)

    def px(v: float) -> float:
        return s.left + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        v = min(max(v, y0), y1)
        return s.top + (1.0 - (v - y0) / (y1 - y0)) * ph

    floor = s.top + ph
    parts = [head, f'<clipPath id="{uid}"><rect x="{s.left}" y="{s.top}" width="{pw}" height="{ph}"/></clipPath>']
    if bulk is not None and all(math.isfinite(b) and b > 0 for b in bulk) and bulk[1] > bulk[0]:
        b0, b1 = px(max(math.log10(bulk[0]), x0)), px(min(math.log10(bulk[1]), x1))
        if b1 > b0:
            parts.append(f'<rect x="{_num(b0)}" y="{s.top}" width="{_num(b1 - b0)}" height="{ph}" '
                         f'fill="{s.bulk}" fill-opacity="0.16"><title>Marchenko-Pastur bulk</title></rect>')
    if fitted:  # the fitted tail, lightly shaded
        xm = px(math.log10(xmin))
        parts.append(f'<rect x="{_num(xm)}" y="{s.top}" width="{_num(s.left + pw - xm)}" height="{ph}" '
                     f'fill="{s.fit}" fill-opacity="0.05"/>')
    # ticks and grid: at least two labelled ticks on each axis
    for k in log_ticks(x0, x1):
        x = px(k)
        parts.append(f'<line x1="{_num(x)}" y1="{s.top}" x2="{_num(x)}" y2="{floor}" stroke="#eee"/>'
                     f'<text x="{_num(x)}" y="{floor + 10}" text-anchor="middle" font-size="9.5" fill="#555">'
                     f'{tick_label(10.0 ** k)}</text>')
    for k in log_ticks(y0, y1, 4):
        y = py(k)
        parts.append(f'<line x1="{s.left}" y1="{_num(y)}" x2="{s.left + pw}" y2="{_num(y)}" stroke="#eee"/>'
                     f'<text x="{s.left - 3}" y="{_num(y + 3)}" text-anchor="end" font-size="9.5" fill="#555">'
                     f'{tick_label(10.0 ** k)}</text>')
    # histogram as a filled step path (empty bins drop to the floor)
    d = [f"M{_num(px(edges[0]))},{_num(floor)}"]
    for i in range(nbins):
        y = py(ly[i]) if nz[i] else floor
        d.append(f"L{_num(px(edges[i]))},{_num(y)}L{_num(px(edges[i + 1]))},{_num(y)}")
    d.append(f"L{_num(px(edges[-1]))},{_num(floor)}Z")
    parts.append(f'<path d="{"".join(d)}" fill="{s.hist}" fill-opacity="0.22" stroke="{s.hist}" '
                 f'stroke-width="1" clip-path="url(#{uid})"/>')
    if cut:  # eigenvalues left of the view: say how many, at the left edge
        parts.append(f'<g class="esd-cut"><title>{cut} smaller eigenvalue{"s" * (cut != 1)} not shown '
                     f'(from {float(pos.min()) if pos.size else 0.0:.2g})</title>'
                     f'<path d="M{s.left + 1},{floor - 8}l4,-3v6z" fill="#666"/>'
                     f'<text x="{s.left + 7}" y="{floor - 5}" font-size="9" fill="#666">{cut}</text></g>')
    if fit_pts:
        xm = px(math.log10(xmin))
        parts.append(f'<line x1="{_num(xm)}" y1="{s.top}" x2="{_num(xm)}" y2="{floor}" stroke="{s.xmin}" '
                     f'stroke-dasharray="3 2" stroke-width="0.9"><title>xmin = {xmin:.4g}</title></line>')
        (a0, b0_), (a1, b1_) = fit_pts
        parts.append(f'<line x1="{_num(px(a0))}" y1="{_num(py(b0_))}" x2="{_num(px(a1))}" y2="{_num(py(b1_))}" '
                     f'stroke="{s.fit}" stroke-width="1.8" clip-path="url(#{uid})"><title>power law, alpha = {alpha:.3g}</title></line>')
        parts.append(f'<text x="{s.left + pw - 4}" y="{s.top + 12}" text-anchor="end" font-size="11.5" '
                     f'fill="{s.fit}" font-weight="600">α = {alpha:.2f}</text>')
        n_tail = num_pl_spikes if num_pl_spikes else int((pos >= xmin).sum())
        anchor = "start" if xm < s.left + 0.6 * pw else "end"  # below the alpha and tail labels
        parts.append(f'<g class="esd-annot" font-size="8.5" fill="#333">'
                     f'<text x="{_num(xm + (2 if anchor == "start" else -2))}" y="{s.top + 37}" text-anchor="{anchor}">'
                     f'xmin {xmin:.3g}</text>'
                     f'<text x="{s.left + pw - 4}" y="{s.top + 24}" text-anchor="end">tail n = {n_tail} of {n_all}'
                     + (f" · D = {D:.3f}" if math.isfinite(D) else "") + "</text></g>")
    else:
        parts.append(f'<text x="{s.left + pw - 4}" y="{s.top + 12}" text-anchor="end" font-size="9" '
                     f'fill="#999">no power-law fit</text>')
    parts.append(frame)
    parts.append(f'<text x="{s.left + pw}" y="{h - 3}" text-anchor="end" font-size="9" fill="#666">'
                 f'λ (eigenvalue)</text>')
    parts.append("</svg>")
    return "".join(parts)
