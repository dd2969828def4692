"""Report sections with charts: alpha and metrics against depth, ESD small multiples, trajectory,
LR map, gradient noise and update geometry.

Each function returns a plain dict for the template: ``charts`` (title, caption, SVG), ``legend``
(group -> colour) and ``labels`` ({scatter gid: [layer name per point]}), which the page script
turns into hover titles. Layer names only ever reach the page through the autoescaped template or
the escaped JSON blob (see :func:`spectra.report.render.safe_json`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..results import Analysis, LayerResult
from .build import MAX_ROLES, depth_ticks, fmt, num, ordered, positions, role, role_colors, roles
from .findings import UPDATE_REF, diff_facts, noise_facts, noise_measurable, update_steps
from .plots import BASELINE, OVER, PALETTE, UNDER, Series, depth_chart, trajectory_chart
from .svg import esd_svg

__all__ = ["Style", "metric_section", "esd_section", "split_name", "trajectory_section", "lrmap_section", "noise_section",
           "diff_section"]


class Style:
    """One colour per layer group for the whole report, fixed by the main analysis.

    LR-map, noise and diff records reuse it, so a layer has the same colour in every chart; their
    records may lack ``kind``, which is looked up here by layer name.
    """

    #: The group of a tensor the analysis did not fit (skipped or failed), whatever its ``kind``.
    NOT_ANALYSED = "not analysed"

    def __init__(self, analysis: Analysis | None = None):
        recs = ordered(analysis.successful) if analysis is not None else []
        self.kinds = {r.name: r.kind for r in (analysis.layers if analysis is not None else [])}
        self.unfitted = {r.name for r in (analysis.layers if analysis is not None else []) if not r.ok}
        items = [(r.name, r.kind) for r in recs]
        self.group = roles(items)
        self.by_kind = len({role(n, k) for n, k in items}) > MAX_ROLES
        self.colors = role_colors(self.group[n] for n, _ in items)

    def group_of(self, name: str, kind: str = "") -> str:
        if name in self.group:
            return self.group[name]
        if name in self.unfitted:
            return self.NOT_ANALYSED
        kind = kind or self.kinds.get(name, "")
        return (kind or "other") if self.by_kind else role(name, kind)

    def color(self, group: str) -> str:
        if group == self.NOT_ANALYSED:
            return BASELINE
        if group not in self.colors:
            self.colors[group] = PALETTE[min(len(self.colors), len(PALETTE) - 1)]
        return self.colors[group]


class _Groups:
    """Colour groups and x positions for one set of layer records ``(name, depth, kind)``."""

    def __init__(self, items: Sequence[tuple[str, int, str]], style: Style):
        self.items = [(n, d, k or style.kinds.get(n, "")) for n, d, k in items]
        self.group = {n: style.group_of(n, k) for n, _, k in self.items}
        self.colors = OrderedDict((g, style.color(g)) for g in sorted(
            set(self.group.values()), key=lambda g: list(style.colors).index(g) if g in style.colors else 99))
        self.x = positions([(n, d) for n, d, _ in self.items])
        self.ticks = depth_ticks(self.items)

    def series(self, prefix: str, value: Callable[[str], float], *, ring: Callable[[str], str] | None = None,
               interval: Callable[[str], tuple[float, float] | None] | None = None,
               labels: dict[str, list[str]]) -> list[Series]:
        out = []
        for i, (grp, color) in enumerate(self.colors.items()):
            names = [n for n, _, _ in self.items if self.group[n] == grp and not math.isnan(num(value(n)))]
            if not names:
                continue
            gid = f"{prefix}-{i}"
            labels[gid] = names
            ci = [interval(n) if interval else None for n in names]
            out.append(Series(
                x=[self.x[n] for n in names], y=[num(value(n)) for n in names], color=color, gid=gid,
                lo=[c[0] if c else math.nan for c in ci], hi=[c[1] if c else math.nan for c in ci],
                ring=[ring(n) for n in names] if ring else None))
        return out

    @property
    def legend(self) -> list[dict[str, str]]:
        return [{"name": g, "color": c} for g, c in self.colors.items()]


#: Size (inches) of the phone variant of a full-width chart: the same data drawn at a narrow aspect,
#: shown instead of the wide drawing below 760 px so that labels keep their size.
NARROW = (6.2, 3.6)


def _chart(key: str, title: str, svg: str, caption: str = "", narrow: str = "") -> dict[str, str]:
    return {"key": key, "title": title, "svg": svg, "caption": caption, "narrow": narrow}


def _ring(rec: LayerResult) -> str:
    return OVER if rec.warning == "over-trained" else UNDER if rec.warning == "under-trained" else ""


def metric_section(analysis: Analysis, style: Style | None = None) -> dict[str, Any]:
    """Alpha against depth (with intervals, the 2-6 band, flagged layers ringed) and four more metrics."""
    ok = ordered(analysis.successful)
    recs = {r.name: r for r in ok}
    g = _Groups([(r.name, r.depth, r.kind) for r in ok], style or Style(analysis))
    labels: dict[str, list[str]] = {}
    alphas = [num(r.alpha) for r in ok if not math.isnan(num(r.alpha))]
    top = min(max([7.0] + alphas) * 1.05, 12.0)
    bottom = min([1.5] + alphas) * 0.95 if alphas else 1.5
    def alpha_svg(prefix: str, **size: float) -> str:
        return depth_chart(
            g.series(prefix, lambda n: recs[n].alpha, ring=lambda n: _ring(recs[n]),
                     interval=lambda n: recs[n].alpha_ci, labels=labels),
            ylabel="alpha", xticks=g.ticks, band=(2.0, 6.0), ylim=(max(0.0, bottom), top), **size)

    charts = [_chart("alpha", "alpha against depth", alpha_svg("alpha", height=4.0),
                     "Shaded: the 2–6 band of well-trained layers. Dark outline: flagged as over-trained "
                     "(α < 2) or under-trained (α > 6). Bars: bootstrap intervals where computed. "
                     "Triangles: beyond the axis. Hover a point for its layer; click to find it in the table.",
                     narrow=alpha_svg("alpha-n", width=NARROW[0], height=NARROW[1] + 0.6))]
    small = []
    for key, label, logy in (("alpha_weighted", "alpha_weighted (α · log10 λmax)", False),
                             ("log_norm", "log_norm (log10 ‖W‖²_F)", False),
                             ("log_spectral_norm", "log_spectral_norm (log10 λmax)", False),
                             ("stable_rank", "stable rank", True),
                             ("mp_softrank", "MP soft rank", False)):
        if all(math.isnan(num(getattr(r, key))) for r in ok):
            continue
        svg = depth_chart(g.series(key, lambda n, k=key: getattr(recs[n], k), labels=labels),
                          ylabel=key, xticks=g.ticks, logy=logy, width=6.2, height=2.6)
        small.append(_chart(key, label, svg))
    return {"charts": charts, "small": small, "legend": g.legend, "labels": labels}


def esd_section(analysis: Analysis, limit: int = 400) -> dict[str, Any]:
    """One ESD thumbnail per layer with eigenvalues (log-log, power-law fit, xmin, MP bulk)."""
    items = []
    for i, r in enumerate(ordered(analysis.layers)):
        ev = analysis.evals.get(r.name)
        if ev is None or len(items) >= limit:
            continue
        bulk = (r.bulk_min, r.bulk_max) if not math.isnan(num(r.bulk_max)) else None
        svg = esd_svg(np.asarray(ev), alpha=num(r.alpha), xmin=num(r.xmin), xmax=num(r.xmax),
                      num_pl_spikes=r.num_pl_spikes, D=num(r.D), bulk=bulk, uid=f"esd{i}", label="ESD")
        n_evals = r.num_evals or len(ev)
        details = [("alpha", fmt(r.alpha)), ("xmin", fmt(r.xmin)),
                   ("tail n", f"{fmt(r.num_pl_spikes)} of {fmt(n_evals)}" if r.num_pl_spikes else "–"),
                   ("D (KS distance)", fmt(r.D)), ("λmax", fmt(r.lambda_max)), ("N × M", f"{r.N} × {r.M}"),
                   ("stable rank", fmt(r.stable_rank))]
        if bulk:
            details += [("MP σ", fmt(r.sigma_mp)), ("MP spikes", fmt(r.num_spikes)), ("bulk", f"{fmt(bulk[0])}–{fmt(bulk[1])}")]
        head, tail = split_name(r.name)
        items.append({"name": r.name, "head": head, "tail": tail, "svg": svg, "alpha": fmt(r.alpha), "warning": r.warning,
                      "status": r.status, "details": details})
    missing = sum(1 for r in analysis.layers if r.ok and r.name not in analysis.evals)
    return {"items": items, "missing": missing, "truncated": len(analysis.evals) > limit}


def split_name(name: str) -> tuple[str, str]:
    """``encoder.layer.3.attention.self.query`` -> (``encoder.layer.3``, ``attention.self.query``):
    the block path and the part inside the block, shown on two lines in the ESD grid. Outside
    numbered blocks the last component is the second line (``embeddings``, ``position_embeddings``)."""
    parts = name.split(".")
    digits = [i for i, p in enumerate(parts[:-1]) if p.isdigit()]
    if not digits:
        return (".".join(parts[:-1]), parts[-1]) if len(parts) > 1 else ("", name)
    cut = digits[-1] + 1
    return ".".join(parts[:cut]), ".".join(parts[cut:])


def trajectory_section(analyses: Sequence[Analysis], style: Style | None = None) -> dict[str, Any] | None:
    """Alpha per layer across checkpoints (given in order), with the mean in bold."""
    if len(analyses) < 2:
        return None
    last = analyses[-1]
    names = [r.name for r in ordered(last.successful)]
    kinds = {r.name: r.kind for r in last.layers}
    per = [{r.name: num(r.alpha) for r in a.layers if r.ok} for a in analyses]
    values = [[p.get(n, math.nan) for p in per] for n in names]
    style = style or Style(last)
    groups = {n: style.group_of(n, kinds.get(n, "")) for n in names}
    colors = OrderedDict((g, style.color(g)) for g in dict.fromkeys(groups[n] for n in names))
    mean = [float(np.nanmean([v for v in p.values()])) if p else math.nan for p in per]
    line_colors = [colors[groups[n]] for n in names]
    svg = trajectory_chart(values, line_colors, mean=mean)
    narrow = trajectory_chart(values, line_colors, mean=mean, gid="trajn", width=NARROW[0], height=NARROW[1])
    delta = {n: {"delta": v[-1] - v[0]} for n, v in zip(names, values)}
    labels = {f"{gid}-l{i}": [n] for i, n in enumerate(names) for gid in ("traj", "trajn")}
    return {"chart": _chart("trajectory", "alpha across checkpoints", svg,
                            "Thin lines: one layer each, coloured by group; bold: mean alpha.", narrow=narrow),
            "checkpoints": [{"index": i + 1, "name": a.checkpoint, "created": a.created,
                             "mean": fmt(m)} for i, (a, m) in enumerate(zip(analyses, mean))],
            "legend": [{"name": k, "color": c} for k, c in colors.items()], "labels": labels, "joins": delta}


def _records_section(records: Sequence[Mapping], prefix: str, specs: Sequence[tuple], labels: dict, style: Style,
                     width: float = 6.2, height: float = 2.6, narrow: bool = False) -> tuple[list[dict], list[dict]]:
    items = [(str(r.get("name")), int(num(r.get("depth"))) if not math.isnan(num(r.get("depth"))) else 0,
              str(r.get("kind", ""))) for r in records]
    recs = {str(r.get("name")): r for r in records}
    g = _Groups(items, style)
    charts = []
    for key, title, ylabel, logy, hlines, caption, *ref in specs:
        if all(math.isnan(num(r.get(key))) for r in records):
            continue
        positive = (lambda n, k=key: num(recs[n].get(k)) if num(recs[n].get(k)) > 0 else math.nan) if logy \
            else (lambda n, k=key: recs[n].get(k))

        def draw(gid: str, w: float, h: float, key=key, ylabel=ylabel, logy=logy, hlines=hlines, ref=ref,
                 positive=positive) -> str:
            series = g.series(gid, positive, labels=labels, interval=lambda n: _ci(recs[n].get(f"{key}_ci"), logy))
            if ref:  # a per-layer reference value (e.g. the random-subspace baseline): grey dashes
                names = [n for n, _, _ in g.items if not math.isnan(num(recs[n].get(ref[0])))]
                series.insert(0, Series(x=[g.x[n] for n in names], y=[num(recs[n].get(ref[0])) for n in names],
                                        color=BASELINE, marker="_", size=90.0))
            return depth_chart(series, ylabel=ylabel, xticks=g.ticks, logy=logy, hlines=hlines, width=w, height=h)

        charts.append(_chart(key, title, draw(f"{prefix}-{key}", width, height), caption,
                             narrow=draw(f"{prefix}n-{key}", *NARROW) if narrow else ""))
    return charts, g.legend


def _ci(value: Any, positive: bool) -> tuple[float, float] | None:
    """A ``[lo, hi]`` interval from a record (noise files carry ``b_simple_ci`` ...), or None."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        return None
    lo, hi = num(value[0]), num(value[1])
    if math.isnan(lo) or math.isnan(hi) or (positive and hi <= 0):
        return None
    return (max(lo, 1e-300) if positive else lo), hi


def lrmap_section(lrmap: Mapping, style: Style | None = None) -> dict[str, Any]:
    labels: dict[str, list[str]] = {}
    charts, legend = _records_section(lrmap.get("layers") or [], "lr", [
        ("multiplier", "LR multiplier against depth", "LR multiplier", False, [(1.0, "base LR")],
         "Each layer's learning rate is base LR × multiplier.")], labels, style or Style(), width=12.5, height=3.2,
        narrow=True)
    return {"charts": charts, "legend": legend, "labels": labels, "method": lrmap.get("method", ""),
            "options": lrmap.get("options") or {}, "default": lrmap.get("default"),
            "source": lrmap.get("source", "")}


def noise_section(noise: Mapping, style: Style | None = None) -> dict[str, Any]:
    labels: dict[str, list[str]] = {}
    charts, legend = _records_section(noise.get("layers") or [], "noise", [
        ("b_simple", "B_simple against depth", "B_simple", True, [],
         "Critical-batch estimate tr(Σ)/|G|² per layer (log scale); bars: 95% intervals where the file has them. "
         "Layers whose |G|² estimate is not positive are not measurable and not drawn."),
        ("snr", "gradient SNR against depth", "SNR", True, [], "|G|² / tr(Σ) per layer (log scale)."),
        ("grad_fro", "gradient Frobenius norm", "‖G‖_F", True, [], ""),
        ("grad_nuclear", "gradient nuclear norm", "‖G‖_*", True, [], ""),
    ], labels, style or Style())
    return {"charts": charts, "legend": legend, "labels": labels, "facts": noise_facts(noise),
            "caveat": noise_measurable(noise)[1]}


def diff_section(diff: Mapping, style: Style | None = None) -> dict[str, Any]:
    labels: dict[str, list[str]] = {}
    layers = diff.get("layers") or []
    steps = update_steps(diff)
    if steps:  # like with like: the per-step rule of thumb against the update per step
        layers = [dict(r, rel_update_step=num(r.get("rel_update")) / steps) for r in layers]
        size = ("rel_update_step", "relative update per step against depth", "‖ΔW‖_F / ‖W_A‖_F per step", True,
                [(UPDATE_REF, "1e-3 per step")], f"Relative update divided by the {steps} optimizer steps between "
                "A and B (a lower bound of the mean step); reference: the ~1e-3 per-step rule of thumb (Karpathy).")
    else:
        size = ("rel_update", "relative update against depth", "‖ΔW‖_F / ‖W_A‖_F", True, [],
                "From A to B. The diff does not record how many optimizer steps separate them, so there is no "
                "per-step reference line (spectra diff --steps N records it).")
    charts, legend = _records_section(layers, "diff", [
        size,
        ("subspace_overlap", "subspace overlap against depth", "overlap", False, [],
         "Share of the update ΔW = W_B − W_A that lies in W_A's top singular subspace: ‖U_dᵀU_A‖²_F / k_d, "
         "with U_d the top k_d = min(topk, numerical rank of ΔW) singular vectors of ΔW and U_A the top "
         "k_A = min(topk, rank W_A) of W_A, averaged over the left and right sides. Grey dashes: each "
         "layer's overlap_baseline, (k_A/N + k_A/M)/2, the expectation for an update of random "
         "directions.", "overlap_baseline"),
        ("delta_alpha", "Δ alpha against depth", "alpha_B − alpha_A", False, [(0.0, "")], ""),
        ("dw_stable_rank", "stable rank of ΔW", "stable rank", True, [], ""),
    ], labels, style or Style())
    facts = diff_facts(diff)
    act = diff.get("activations")
    return {"charts": charts, "legend": legend, "labels": labels, "facts": facts,
            "act_charts": _activation_charts(act, labels), "activations": _generic_table(act)}


#: Activation-geometry fields drawn for weights A (grey) and B (blue) against block depth.
ACTIVATION_CHARTS = (
    ("alignment", "update alignment with its tokenwise part", "mean cos(D, T)", None),
    ("residual_energy", "residual energy of the update", "Σ‖r‖² / Σ‖D‖²", None),
    ("projection_update", "update in the dominant tokenwise subspace", "projection", "projection_baseline"),
)


def _activation_charts(act: Any, labels: dict) -> list[dict]:
    """Per-block activation geometry (the ``activations`` section of a diff), A against B."""
    rows = act.get("layers") if isinstance(act, Mapping) else None
    if not isinstance(rows, list):
        return []
    rows = [r for r in rows if isinstance(r, Mapping)]
    charts = []
    for key, title, ylabel, ref in ACTIVATION_CHARTS:
        if all(math.isnan(num(r.get(f"{key}_a"))) and math.isnan(num(r.get(f"{key}_b"))) for r in rows):
            continue
        xs = [num(r.get("depth")) if not math.isnan(num(r.get("depth"))) else i + 1 for i, r in enumerate(rows)]
        names = [str(r.get("name", i)) for i, r in enumerate(rows)]
        series = []
        if ref:
            series.append(Series(x=xs, y=[num(r.get(ref)) for r in rows], color=BASELINE, marker="_", size=90.0))
        for tag, color in (("a", BASELINE), ("b", PALETTE[0])):
            gid = f"act-{key}-{tag}"
            labels[gid] = [f"{n} ({tag.upper()})" for n in names]
            series.append(Series(x=xs, y=[num(r.get(f"{key}_{tag}")) for r in rows], color=color, gid=gid, line=True))
        ticks = [(x, str(int(x))) for x in sorted(set(xs))]
        charts.append(_chart(f"act-{key}", title, depth_chart(series, ylabel=ylabel, xticks=ticks, width=6.2,
                                                              height=2.6, xlabel="block"),
                             "Grey: checkpoint A; blue: checkpoint B." + (" Dashes: random baseline k/d." if ref else "")))
    return charts


def _generic_table(data: Any) -> dict[str, Any] | None:
    """A table of whatever scalar fields per-layer activation records carry (format is open)."""
    if isinstance(data, Mapping):
        data = data.get("layers", [data])
    if not isinstance(data, list) or not data or not all(isinstance(r, Mapping) for r in data):
        return None
    keys: list[str] = []
    for r in data:
        for k, v in r.items():
            if k not in keys and (v is None or isinstance(v, (str, int, float, bool))):
                keys.append(str(k))
    rows = [[fmt(r.get(k)) if not isinstance(r.get(k), str) else r.get(k) for k in keys] for r in data[:500]]
    return {"columns": keys, "rows": rows}
