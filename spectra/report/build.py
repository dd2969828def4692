"""Data preparation for the HTML report: number formatting, colour groups, depth positions and the
per-layer table (alerts and summary cards are in :mod:`.findings`).

Everything here turns result records into plain Python values (strings, floats, small dicts) that
the Jinja2 template renders with autoescaping on, so no checkpoint-derived string reaches the page
unescaped.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..layers import block_key
from ..results import Analysis, LayerResult
from .plots import PALETTE

__all__ = ["Column", "fmt", "num", "roles", "role_colors", "positions", "depth_ticks", "table", "by_name", "ordered",
           "sanitize", "kind_label", "PSEUDO_KINDS", "kinds"]

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


#: ``kind`` values that name no matrix kind (a tensor that was not analysed); shown as a dash.
PSEUDO_KINDS = frozenset({"", "skipped", "vector", "other", "buffer"})


def kind_label(kind: str) -> str:
    """The kind as the table shows it: a dash for a tensor that has no matrix kind."""
    return "–" if kind in PSEUDO_KINDS else kind


def kinds(analysis: Analysis) -> list[str]:
    """Matrix kinds present (for the kind filter); skipped tensors are found by the status filter."""
    return sorted({r.kind for r in analysis.layers if r.kind not in PSEUDO_KINDS})


def _note(r: LayerResult, extra: Mapping) -> str:
    if r.status != "success":
        return f"{r.status}: {r.reason}"
    return "; ".join(n for n in (r.warning or r.reason, r.alpha_ci_warning) if n)


#: What a reader scans first: the layer, its alpha and the verdict; the side inputs' columns follow
#: them (LR multiplier, noise, update), then the details. At any width the verdict sits next to the
#: number it explains instead of past the right edge of a wide table.
HEAD_COLUMNS = (
    Column("name", "layer", "module name", _attr("name"), numeric=False),
    Column("alpha", "α", "power-law exponent of the ESD tail", _attr("alpha")),
    Column("alpha_ci", "α CI", "bootstrap interval of alpha", _ci, numeric=False),
    Column("note", "note", "HT-SR verdict, or status and reason when not fitted", _note, numeric=False),
)
BASE_COLUMNS = (
    Column("depth", "depth", "block index (embeddings 0, head last)", _attr("depth")),
    Column("kind", "kind", "layer kind", lambda r, e: kind_label(r.kind), numeric=False),
    Column("shape", "shape", "tensor shape", lambda r, e: "×".join(map(str, r.shape)), numeric=False),
    Column("alpha_weighted", "α weighted", "alpha_weighted = α · log10 λmax (WeightWatcher's alpha_weighted)",
           _attr("alpha_weighted")),
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
             Column("subspace_overlap", "overlap", "overlap of the top-k singular subspaces of dW and W_A",
                    _extra("diff", "subspace_overlap")),
             Column("delta_alpha", "Δα (diff)", "alpha_B - alpha_A", _extra("diff", "delta_alpha"))),
    "trajectory": (Column("alpha_trend", "α first→last", "alpha change across the given checkpoints",
                          _extra("trajectory", "delta")),),
}


def table(analysis: Analysis, joins: Mapping[str, Mapping[str, Mapping]]) -> tuple[list[Column], list[dict]]:
    """Columns and rows of the per-layer table.

    ``joins`` maps a source (lrmap, noise, diff, trajectory) to {layer name: record}; a source's
    columns appear only when it is given. Each row holds display text and a sort value per column.
    """
    cols = list(HEAD_COLUMNS)
    for source in ("lrmap", "noise", "diff", "trajectory"):
        if joins.get(source):
            cols += OPTIONAL_COLUMNS[source]
    cols += BASE_COLUMNS
    if any(not math.isnan(r.mp_softrank) for r in analysis.layers):
        cols += OPTIONAL_COLUMNS["mp"]
    if any(r.num_traps is not None for r in analysis.layers):
        cols += OPTIONAL_COLUMNS["traps"]
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
