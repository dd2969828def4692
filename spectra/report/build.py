"""Data preparation for the HTML report: alerts, summary cards, the per-layer table, colour groups.

Everything here turns result records into plain Python values (strings, floats, small dicts) that
the Jinja2 template renders with autoescaping on, so no checkpoint-derived string reaches the page
unescaped. Thresholds follow HT-SR (Martin & Mahoney 2021, "Implicit self-regularization in deep
neural networks", JMLR 22(165)): 2 <= alpha <= 6 is the well-trained band, alpha < 2 over-trained
(the ``warning`` column of the analysis), alpha > 6 under-trained. The update-size reference 1e-3
for ||dW||_F / ||W||_F follows Karpathy's makemore lecture (see the methods appendix).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..layers import block_key
from ..results import Analysis, LayerResult
from .plots import PALETTE

__all__ = ["Alert", "Column", "fmt", "num", "roles", "role_colors", "positions", "depth_ticks",
           "alerts", "cards", "table", "param_count", "by_name", "ordered", "sanitize"]

#: Reference size of one update relative to the weights (Karpathy, makemore part 3).
UPDATE_REF = 1e-3
#: Tail sizes below this make a power-law alpha unreliable (Clauset et al. 2009 use n_tail >= 50).
FEW_SPIKES = 10
MAX_ROLES = len(PALETTE) - 1


def num(value: Any) -> float:
    """A float, with None, strings and non-finite values as NaN."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def fmt(value: Any, digits: int = 3) -> str:
    """Compact display of a number: 3 significant digits, scientific outside [1e-3, 1e4), '–' if missing."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    x = num(value)
    if math.isnan(x):
        return "–" if value is None or isinstance(value, float) else str(value)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.{digits - 1}e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
    return f"{x:.{digits}g}"


def by_name(records: Iterable[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    """Index JSON layer records by their ``name``."""
    return {str(r.get("name")): r for r in (records or []) if isinstance(r, Mapping)}


def _int_or_none(value: Any) -> int | None:
    x = num(value)
    return None if math.isnan(x) else int(x)


def sanitize(analysis: Analysis) -> Analysis:
    """A copy whose numeric fields really are numbers (a hand-edited or crafted JSON file may put
    strings there); non-numbers become NaN/None, so the page shows '–' and never breaks."""
    import dataclasses

    layers = []
    for rec in analysis.layers:
        fixes: dict[str, Any] = {}
        for f in dataclasses.fields(rec):
            value = getattr(rec, f.name)
            if f.type == "float":
                fixes[f.name] = num(value)
            elif f.type == "int | None":
                fixes[f.name] = _int_or_none(value)
            elif f.type == "int":
                fixes[f.name] = _int_or_none(value) or 0
        shape = rec.shape if isinstance(rec.shape, (tuple, list)) else ()
        fixes["shape"] = tuple(int(num(v)) if not math.isnan(num(v)) else 0 for v in shape)
        ci = rec.alpha_ci
        fixes["alpha_ci"] = (num(ci[0]), num(ci[1])) if isinstance(ci, (tuple, list)) and len(ci) == 2 else None
        for key in ("name", "param", "kind", "status", "reason", "warning"):
            fixes[key] = str(getattr(rec, key))
        layers.append(dataclasses.replace(rec, **fixes))
    return dataclasses.replace(analysis, layers=tuple(layers))


# ----------------------------------------------------------------------------- colour groups


def role(name: str, kind: str = "") -> str:
    """What a layer does, from its name: the module path inside its block (``attention.self.query``).

    Layers outside numbered blocks are grouped by kind (``embedding``, or ``linear`` for a head).
    """
    if kind == "embedding":
        return "embedding"
    if block_key(name) is None:
        return kind or "other"
    parts = name.split(".")
    if kind == "expert" and parts[-1].isdigit():
        parts = parts[:-1]
    last = max(i for i, p in enumerate(parts[:-1]) if p.isdigit()) if any(p.isdigit() for p in parts[:-1]) else -1
    return ".".join(parts[last + 1:]) or kind or "other"


def roles(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Colour group per layer name from ``(name, kind)`` pairs.

    Groups are the in-block roles; when there are more than the palette holds, layers are grouped
    by kind instead (linear, conv2d, embedding, ...), which is what the spec asks for by default.
    """
    by_role = {name: role(name, kind) for name, kind in items}
    if len(set(by_role.values())) > MAX_ROLES:
        return {name: (kind or "other") for name, kind in items}
    return by_role


def role_colors(groups: Iterable[str]) -> "OrderedDict[str, str]":
    """Stable colour per group, in order of first appearance."""
    out: OrderedDict[str, str] = OrderedDict()
    for g in groups:
        if g not in out:
            out[g] = PALETTE[min(len(out), len(PALETTE) - 1)]
    return out


def positions(items: Sequence[tuple[str, int]], spread: float = 0.66) -> dict[str, float]:
    """x position per name: its depth, dodged so that layers sharing a depth sit side by side."""
    groups: dict[int, list[str]] = {}
    for name, depth in items:
        groups.setdefault(depth, []).append(name)
    out: dict[str, float] = {}
    for depth, names in groups.items():
        n = len(names)
        for i, name in enumerate(names):
            out[name] = depth + (0.0 if n == 1 else spread * (i / (n - 1) - 0.5))
    return out


def depth_ticks(items: Sequence[tuple[str, int, str]]) -> list[tuple[float, str]]:
    """Tick per depth; the embedding depth reads ``emb`` and a final non-block depth ``head``."""
    depths = sorted({d for _, d, _ in items})
    if not depths:
        return []
    labels = {d: str(d) for d in depths}
    at0 = [k for _, d, k in items if d == depths[0] and k not in ("skipped", "")]
    if at0 and all(k == "embedding" for k in at0):
        labels[depths[0]] = "emb"
    last = [n for n, d, _ in items if d == depths[-1]]
    if len(depths) > 1 and last and all(block_key(n) is None for n in last):
        labels[depths[-1]] = "head"
    step = max(1, math.ceil(len(depths) / 26))
    return [(d, labels[d]) for i, d in enumerate(depths) if i % step == 0 or i == len(depths) - 1]


# ----------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """One line in the alerts list: ``level`` is danger, warn or info."""

    level: str
    title: str
    detail: str = ""
    layers: tuple[str, ...] = ()


def _names(recs: Iterable[LayerResult]) -> tuple[str, ...]:
    return tuple(r.name for r in recs)


def alerts(analysis: Analysis, *, noise: Mapping | None = None, diff: Mapping | None = None) -> list[Alert]:
    """The things a reader should look at first, most severe first."""
    layers = analysis.layers
    out: list[Alert] = []
    over = [r for r in layers if r.warning == "over-trained"]
    under = [r for r in layers if r.warning == "under-trained"]
    if over:
        out.append(Alert("danger", f"{len(over)} over-trained layer{'s' * (len(over) != 1)} (alpha < 2)",
                         "Very heavy-tailed spectra: these layers may be over-fit or carry correlation "
                         "traps; consider a lower learning rate or more regularisation.", _names(over)))
    if under:
        out.append(Alert("warn", f"{len(under)} under-trained layer{'s' * (len(under) != 1)} (alpha > 6)",
                         "Close to random: these layers have learned little; a higher learning rate or "
                         "more training usually helps.", _names(under)))
    traps = [r for r in layers if (r.num_traps or 0) > 0]
    if traps:
        out.append(Alert("danger", f"correlation traps in {len(traps)} layer{'s' * (len(traps) != 1)}",
                         "Randomised weights still show eigenvalues beyond the Marchenko-Pastur edge: "
                         "large outlier elements (Martin & Mahoney's correlation traps).", _names(traps)))
    failed = [r for r in layers if r.status == "failed"]
    for reason, recs in _group_reasons(failed).items():
        out.append(Alert("warn", f"fit failed for {len(recs)} layer{'s' * (len(recs) != 1)}", reason, _names(recs)))
    few = [r for r in layers if r.ok and r.num_pl_spikes is not None and r.num_pl_spikes < FEW_SPIKES]
    if few:
        out.append(Alert("info", f"alpha rests on fewer than {FEW_SPIKES} tail eigenvalues in {len(few)} "
                         f"layer{'s' * (len(few) != 1)}", "Treat these alphas as rough.", _names(few)))
    skipped = [r for r in layers if r.status == "skipped"]
    for reason, recs in _group_reasons(skipped).items():
        out.append(Alert("info", f"{len(recs)} tensor{'s' * (len(recs) != 1)} skipped", reason, _names(recs)))
    if noise is not None:
        bad = [r for r in noise.get("layers") or [] if r.get("status", "success") != "success"
               or not num(r.get("b_simple")) > 0]
        if bad:
            out.append(Alert("warn", f"gradient-noise estimate unreliable for {len(bad)} layer"
                             f"{'s' * (len(bad) != 1)}", "B_simple is missing or not positive (|G|^2 "
                             "estimate at or below zero): use more batches.", tuple(str(r.get("name")) for r in bad)))
    if diff is not None:
        big = [r for r in diff.get("layers") or [] if num(r.get("rel_update")) > 10 * UPDATE_REF]
        if big:
            out.append(Alert("warn", f"{len(big)} layer{'s' * (len(big) != 1)} moved more than "
                             f"{10 * UPDATE_REF:g} of their norm", "Relative update ||W_B - W_A|| / ||W_A|| "
                             "well above the ~1e-3 per-step rule of thumb.", tuple(str(r.get("name")) for r in big)))
        mism = diff.get("mismatched") or []
        if mism:
            out.append(Alert("info", f"{len(mism)} parameter{'s' * (len(mism) != 1)} not compared",
                             "; ".join(sorted({str(m.get('reason', '')) for m in mism}))[:300],
                             tuple(str(m.get("param")) for m in mism)))
    return out


def _group_reasons(recs: Sequence[LayerResult]) -> dict[str, list[LayerResult]]:
    groups: dict[str, list[LayerResult]] = {}
    for r in recs:
        groups.setdefault(r.reason or "no reason given", []).append(r)
    return groups


# ----------------------------------------------------------------------------- cards


def param_count(analysis: Analysis) -> int:
    """Parameters in the analysed checkpoint's weight matrices (each tensor key counted once)."""
    for key in ("num_params", "parameters", "total_params"):
        value = analysis.summary.get(key)
        if not isinstance(value, bool) and not math.isnan(num(value)):
            return int(num(value))
    seen: dict[str, int] = {}
    for r in analysis.layers:
        seen.setdefault(r.param, math.prod(r.shape) if r.shape else 0)
    return sum(seen.values())


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in (num(x) for x in values) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _median(values: Iterable[float]) -> float:
    vals = sorted(v for v in (num(x) for x in values) if not math.isnan(v))
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])


def cards(analysis: Analysis, *, lrmap: Mapping | None = None, noise: Mapping | None = None,
          diff: Mapping | None = None) -> list[dict[str, str]]:
    """Summary cards: ``label``, ``value``, ``sub`` and a ``level`` (ok, warn, danger or '')."""
    ok = analysis.successful
    status = Counter(r.status for r in analysis.layers)
    alphas = [r.alpha for r in ok]
    inband = sum(1 for a in alphas if 2 <= num(a) <= 6)
    over = sum(1 for r in analysis.layers if r.warning == "over-trained")
    under = sum(1 for r in analysis.layers if r.warning == "under-trained")
    out = [
        {"label": "layers analysed", "value": f"{len(ok)}", "level": "",
         "sub": f"{status.get('failed', 0)} failed · {status.get('skipped', 0)} skipped"},
        {"label": "mean alpha", "value": fmt(_mean(alphas)), "level": "",
         "sub": f"median {fmt(_median(alphas))} · {inband}/{len(ok)} in 2–6"},
        {"label": "over-trained (α < 2)", "value": str(over), "level": "danger" if over else "ok", "sub": "layers"},
        {"label": "under-trained (α > 6)", "value": str(under), "level": "warn" if under else "ok", "sub": "layers"},
        {"label": "mean alpha_weighted", "value": fmt(_mean(r.alpha_weighted for r in ok)), "level": "",
         "sub": "α · log10 λ_max"},
        {"label": "mean log_norm", "value": fmt(_mean(r.log_norm for r in ok)), "level": "", "sub": "log10 ‖W‖²_F"},
        {"label": "mean stable rank", "value": fmt(_mean(r.stable_rank for r in ok)), "level": "",
         "sub": "‖W‖²_F / ‖W‖²_2"},
        {"label": "parameters", "value": _human(param_count(analysis)), "level": "", "sub": "in weight matrices"},
    ]
    if lrmap is not None:
        mults = [num(r.get("multiplier")) for r in lrmap.get("layers") or []]
        mults = [m for m in mults if not math.isnan(m)]
        rng = f"{fmt(min(mults))}× – {fmt(max(mults))}×" if mults else "–"
        out.append({"label": f"LR map ({lrmap.get('method', '?')})", "value": rng, "level": "",
                    "sub": "multiplier range"})
    if noise is not None:
        summ = noise.get("summary") or {}
        out.append({"label": "B_simple", "value": fmt(summ.get("b_simple")), "level": "",
                    "sub": f"critical batch · SNR {fmt(summ.get('snr'))}"})
    if diff is not None:
        rel = [r.get("rel_update") for r in diff.get("layers") or []]
        out.append({"label": "median rel. update", "value": fmt(_median(rel)), "level": "",
                    "sub": "‖ΔW‖_F / ‖W_A‖_F"})
    return out


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


# ----------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Column:
    """A table column: where the value comes from and how it is shown."""

    key: str
    label: str
    title: str
    get: Callable[[LayerResult, Mapping[str, Mapping]], Any]
    numeric: bool = True


def _attr(name: str) -> Callable[[LayerResult, Mapping], Any]:
    return lambda r, extra: getattr(r, name)


def _extra(source: str, key: str) -> Callable[[LayerResult, Mapping], Any]:
    return lambda r, extra: (extra.get(source) or {}).get(key)


def _ci(r: LayerResult, extra: Mapping) -> Any:
    return None if not r.alpha_ci else f"{fmt(r.alpha_ci[0])}–{fmt(r.alpha_ci[1])}"


BASE_COLUMNS = (
    Column("name", "layer", "module name", _attr("name"), numeric=False),
    Column("kind", "kind", "layer kind", _attr("kind"), numeric=False),
    Column("depth", "depth", "block index (embeddings 0, head last)", _attr("depth")),
    Column("shape", "shape", "tensor shape", lambda r, e: "×".join(map(str, r.shape)), numeric=False),
    Column("alpha", "α", "power-law exponent of the ESD tail", _attr("alpha")),
    Column("alpha_ci", "α CI", "bootstrap interval of alpha", _ci, numeric=False),
    Column("alpha_weighted", "α̂", "alpha_weighted = alpha · log10 lambda_max", _attr("alpha_weighted")),
    Column("D", "D", "Kolmogorov-Smirnov distance of the fit", _attr("D")),
    Column("num_pl_spikes", "tail n", "eigenvalues >= xmin", _attr("num_pl_spikes")),
    Column("log_norm", "log‖W‖²", "log10 squared Frobenius norm", _attr("log_norm")),
    Column("log_spectral_norm", "log λmax", "log10 largest eigenvalue", _attr("log_spectral_norm")),
    Column("stable_rank", "stable rank", "||W||_F^2 / ||W||_2^2", _attr("stable_rank")),
    Column("entropy", "entropy", "normalised spectral entropy", _attr("entropy")),
)
OPTIONAL_COLUMNS = {
    "mp": (Column("mp_softrank", "MP soft rank", "bulk_max / lambda_max", _attr("mp_softrank")),
           Column("num_spikes", "MP spikes", "eigenvalues above the MP bulk", _attr("num_spikes"))),
    "traps": (Column("num_traps", "traps", "correlation traps", _attr("num_traps")),),
    "lrmap": (Column("lr", "LR ×", "prescribed learning-rate multiplier", _extra("lrmap", "multiplier")),),
    "noise": (Column("b_simple", "B_simple", "tr(Sigma) / |G|^2", _extra("noise", "b_simple")),
              Column("snr", "SNR", "|G|^2 / tr(Sigma)", _extra("noise", "snr"))),
    "diff": (Column("rel_update", "rel. update", "||W_B - W_A||_F / ||W_A||_F", _extra("diff", "rel_update")),
             Column("subspace_overlap", "overlap", "top subspace overlap A vs B", _extra("diff", "subspace_overlap")),
             Column("delta_alpha", "Δα (diff)", "alpha_B - alpha_A", _extra("diff", "delta_alpha"))),
    "trajectory": (Column("alpha_trend", "α first→last", "alpha change across the given checkpoints",
                          _extra("trajectory", "delta")),),
}
TAIL_COLUMNS = (
    Column("note", "note", "HT-SR warning, or status and reason when not fitted",
           lambda r, e: r.warning or (f"{r.status}: {r.reason}" if r.status != "success" else r.reason), numeric=False),
)


def table(analysis: Analysis, joins: Mapping[str, Mapping[str, Mapping]]) -> tuple[list[Column], list[dict]]:
    """Columns and rows of the per-layer table.

    ``joins`` maps a source (lrmap, noise, diff, trajectory) to {layer name: record}; a source's
    columns appear only when it is given. Each row holds display text and a sort value per column.
    """
    cols = list(BASE_COLUMNS)
    if any(not math.isnan(r.mp_softrank) for r in analysis.layers):
        cols += OPTIONAL_COLUMNS["mp"]
    if any(r.num_traps is not None for r in analysis.layers):
        cols += OPTIONAL_COLUMNS["traps"]
    for source in ("lrmap", "noise", "diff", "trajectory"):
        if joins.get(source):
            cols += OPTIONAL_COLUMNS[source]
    cols += TAIL_COLUMNS
    rows = []
    for r in ordered(analysis.layers):
        extra = {src: recs.get(r.name) for src, recs in joins.items()}
        cells = []
        for c in cols:
            value = c.get(r, extra)
            if c.numeric:
                v = num(value)
                cells.append({"text": fmt(value), "sort": "" if math.isnan(v) else repr(v), "num": True})
            else:
                cells.append({"text": "" if value is None else str(value), "sort": "" if value is None else str(value),
                              "num": False})
        rows.append({"name": r.name, "kind": r.kind, "status": r.status, "warning": r.warning, "cells": cells})
    keep = [i for i, c in enumerate(cols) if c.key in ("name", "note") or any(row["cells"][i]["sort"] for row in rows)]
    cols = [cols[i] for i in keep]
    for row in rows:
        row["cells"] = [row["cells"][i] for i in keep]
    return cols, rows


def ordered(layers: Iterable[LayerResult]) -> list[LayerResult]:
    """Layers by depth, in model order within a depth (the analysis lists them in model order)."""
    return sorted(layers, key=lambda r: r.depth)
