"""``prescribe()``: inputs -> per-layer rows -> a rule -> normalise, clip -> :class:`LRMap`.

Every rule gets the same treatment around it, so the options mean the same for all of them:

1. rows are built from an analysis (``spectra.analysis/1``, or a checkpoint analysed on the spot),
   a noise file (``spectra.noise/1``) or a diff file (``spectra.diff/1``);
2. the rule maps rows to multipliers; a row it leaves out gets ``default`` (1) and a reason;
3. ``normalize``: ``mean`` divides every prescribed multiplier by their arithmetic mean and
   ``geomean`` by their geometric mean (the mean is over layers, unweighted);
4. ``clip=(lo, hi)`` bounds the prescribed multipliers;
5. the layer's weight and its own bias take the multiplier (the reference code puts
   ``module.parameters()`` in the layer's group); the norm weights next to it take it too
   (``norms="follow"``), stay at the default (``"base"``), or follow only when they are a BatchNorm
   named like the layer (``"name"``: ``bn`` -> ``conv``, TempBalance's rule, the HT-SR default).

Rows keep the order of their input, which is model order for an analysis (:mod:`spectra.structure`);
the map's ``source`` says which order that was.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ConfigError
from ..results import Analysis, LayerResult, read_json
from .lrmap import LayerEntry, LRMap
from .registry import NORMS, Decision, LayerRow, RuleInfo, get_rule, run_rule

__all__ = ["prescribe", "rows_from_analysis", "rows_from_noise", "rows_from_diff", "NORMALIZE", "REFERENCE_ANALYSIS",
           "parse_clip"]

if TYPE_CHECKING:
    from ..diff import DiffResult
    from ..noise import NoiseResult

_logger = logging.getLogger(__name__)

NORMALIZE = ("none", "mean", "geomean")
#: How the HT-SR rules analyse a checkpoint by default: as ``net_esd_estimator`` in their reference
#: code does: ``torch.linalg.svdvals`` of the float32 weight, xmin at the median eigenvalue.
REFERENCE_ANALYSIS = {"fit": "median", "dtype": "float32", "solver": "svd"}
_NOT_METRICS = {"depth", "N", "M", "expert", "matrix_rank", "numel", "topk"}


def analysis_metrics() -> list[str]:
    """Numeric per-layer fields of an analysis a rule can read with ``--metric``."""
    return [f.name for f in dataclasses.fields(LayerResult)
            if f.type in ("float", "int | None") and f.name not in _NOT_METRICS]


def parse_clip(text: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``"LO,HI"`` (or a pair) -> ``(lo, hi)`` with ``0 <= lo <= hi``.

    >>> parse_clip("0.5,2")
    (0.5, 2.0)
    """
    if text is None or text == "":
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--clip takes LO,HI (two numbers), got {text!r}") from None
    if not (0 <= lo <= hi) or not math.isfinite(hi):
        raise ConfigError(f"--clip needs 0 <= LO <= HI, got {lo:g},{hi:g}")
    return lo, hi


# ----------------------------------------------------------------------- rows


def _attached_by_layer(analysis: Analysis) -> dict[str, list[str]]:
    by_layer: dict[str, list[str]] = {}
    for rec in analysis.layers:
        by_layer.setdefault(rec.name, []).extend(rec.attached)
    for key, layer in analysis.attached.items():
        if layer is not None and key not in by_layer.setdefault(layer, []):
            by_layer[layer].append(key)
    return by_layer


def rows_from_analysis(analysis: Analysis, metric: str) -> list[LayerRow]:
    """One row per layer record (buffers are not parameters: no row); ``metric="depth"`` makes the
    depth the value."""
    valid = analysis_metrics()
    if metric != "depth" and metric not in valid:
        raise ConfigError(f"unknown analysis metric {metric!r}; choose one of: {', '.join(valid)}")
    attached = _attached_by_layer(analysis)
    rows = []
    for rec in analysis.layers:
        if rec.kind == "buffer":
            continue
        value = rec.depth if metric == "depth" else getattr(rec, metric)
        rows.append(LayerRow(
            name=rec.name, param=rec.param, depth=int(rec.depth), kind=rec.kind,
            value=math.nan if value is None else float(value), status=rec.status, reason=rec.reason,
            num_evals=rec.num_evals, attached=tuple(dict.fromkeys(attached.get(rec.name, ()))),
        ))
    return rows


def _numeric_fields(record_type: type) -> list[str]:
    return [f.name for f in dataclasses.fields(record_type)
            if f.type in ("float", "int | None") and f.name not in _NOT_METRICS]


def _check_metric(record_type: type, metric: str, origin: str) -> None:
    valid = _numeric_fields(record_type)
    if metric not in valid:
        raise ConfigError(f"{origin} has no per-layer {metric!r}; it has: {', '.join(valid)}")


_NO_RELIABILITY = ("no `reliable` flag for this layer (a noise file written before spectra measured intervals); "
                   "re-run spectra noise")


def rows_from_noise(noise: "NoiseResult | Mapping[str, Any]", metric: str, *,
                    origin: str = "noise file") -> list[LayerRow]:
    """Rows from a :class:`~spectra.noise.NoiseResult` (or its dict); the weight is the first
    ``*.weight`` in a layer's ``params``."""
    from ..noise import LayerNoise, NoiseResult

    if not isinstance(noise, NoiseResult):
        noise = NoiseResult.from_dict(noise, origin=origin)
    _check_metric(LayerNoise, metric, origin)
    rows = []
    for rec in noise.layers:
        weights = [p for p in rec.params if p.endswith(".weight")]
        param = weights[0] if weights else (rec.params[0] if rec.params else f"{rec.name}.weight")
        rows.append(LayerRow(
            name=rec.name, param=param, depth=rec.depth, kind=rec.kind, value=float(getattr(rec, metric)),
            status=rec.status, reason=rec.reason, attached=tuple(p for p in rec.params if p != param),
            unreliable="" if rec.reliable else (rec.reliable_reason or _NO_RELIABILITY),
        ))
    return rows


def rows_from_diff(diff: "DiffResult | Mapping[str, Any]", metric: str, *, origin: str = "diff file",
                   analysis: Analysis | None = None) -> list[LayerRow]:
    """Rows from a :class:`~spectra.diff.DiffResult` (or its dict); attached params come from
    ``analysis`` if given."""
    from ..diff import DiffResult, LayerDiff

    if not isinstance(diff, DiffResult):
        diff = DiffResult.from_dict(diff, origin=origin)
    _check_metric(LayerDiff, metric, origin)
    attached = _attached_by_layer(analysis) if analysis is not None else {}
    return [LayerRow(
        name=rec.name, param=rec.param or f"{rec.name}.weight", depth=rec.depth, kind=rec.kind,
        value=float(getattr(rec, metric)), status=rec.status, reason=rec.reason,
        attached=tuple(attached.get(rec.name, ())),
    ) for rec in diff.layers if rec.kind != "buffer"]


# --------------------------------------------------------------------- inputs


def _load_side(value: Any, cls: type, what: str) -> tuple[Any, str]:
    """A noise or diff input as its typed result: a result object, a dict or a file path."""
    if value is None:
        return None, ""
    if isinstance(value, cls):
        return value, what
    if isinstance(value, Mapping):
        return cls.from_dict(value, origin=what), what
    return cls.from_json(value), str(value)


def _load_analysis(source: Any, analyze_options: Mapping[str, Any]) -> tuple[Analysis | None, str, dict]:
    """``(analysis, description, side inputs found in source)`` for whatever ``source`` is."""
    from ..diff import DiffResult
    from ..noise import NoiseResult

    if source is None:
        return None, "", {}
    if isinstance(source, Analysis):
        return source, source.checkpoint or "analysis", {}
    if isinstance(source, (NoiseResult, DiffResult)):
        key = "noise" if isinstance(source, NoiseResult) else "diff"
        return None, "", {key: source, f"{key}_origin": key}
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() == ".json":
        data = read_json(source)
        family = str(data.get("schema", "")).partition("/")[0]
        for key, cls in (("noise", NoiseResult), ("diff", DiffResult)):
            if family == cls.schema.partition("/")[0]:
                return None, "", {key: cls.from_dict(data, origin=str(source)), f"{key}_origin": str(source)}
        return Analysis.from_dict(data, origin=str(source)), str(source), {}
    from ..analysis import analyze  # a checkpoint (path, state dict or module): analyse it first

    _logger.info("analysing %s before prescribing", source if isinstance(source, (str, Path)) else type(source).__name__)
    analysis = analyze(source, **dict(analyze_options))
    return analysis, analysis.checkpoint or str(source), {}


def _rows_for(info: RuleInfo, metric: str, analysis: Analysis | None, side: dict) -> list[LayerRow]:
    if info.inputs in ("analysis", "depth"):
        if analysis is None:
            raise ConfigError(f"method {info.name!r} needs an analysis: give an analysis JSON "
                              "(`spectra analyze CKPT -o analysis.json`) or a checkpoint")
        return rows_from_analysis(analysis, metric)
    if info.inputs == "noise":
        if side.get("noise") is None:
            raise ConfigError("method 'noise' needs a gradient-noise file: run `spectra noise --task NAME --checkpoint CKPT "
                              "-o noise.json` first, then pass --noise noise.json")
        return rows_from_noise(side["noise"], metric, origin=side.get("noise_origin") or "noise file")
    if side.get("diff") is None:
        raise ConfigError(f"method {info.name!r} needs a checkpoint diff: run `spectra diff A B -o diff.json` "
                          "first, then pass --diff diff.json")
    return rows_from_diff(side["diff"], metric, origin=side.get("diff_origin") or "diff file", analysis=analysis)


# ------------------------------------------------------------------- prescribe


def prescribe(
    source: Any = None,
    method: str = "tempbalance",
    *,
    metric: str | None = None,
    normalize: str = "none",
    clip: tuple[float, float] | str | None = None,
    norms: str | None = None,
    noise: Any = None,
    diff: Any = None,
    analyze_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> LRMap:
    """Build a layerwise multiplier map with the rule ``method``.

    Args:
        source: an :class:`~spectra.Analysis`, an analysis JSON path, a checkpoint (path, state
            dict or module; analysed first with ``analyze_options``), a noise or diff JSON path,
            or ``None`` when ``noise``/``diff`` carry the input.
        method: a registered rule (:func:`list_rules`).
        metric: the per-layer metric the rule reads (default: the rule's, usually ``alpha``).
        normalize: ``none``, ``mean`` or ``geomean`` over the prescribed layers.
        clip: ``(lo, hi)`` or ``"lo,hi"`` bounds for the multipliers (default: the rule's).
        norms: ``follow`` or ``base`` for attached biases and norms (default: the rule's).
        noise, diff: a ``spectra.noise/1`` / ``spectra.diff/1`` path, dict or result object.
        analyze_options: keyword options for :func:`spectra.analyze` when ``source`` is a
            checkpoint; HT-SR rules default to :data:`REFERENCE_ANALYSIS` (the anchors' estimator:
            median fit on float32 ``svdvals``); ``None`` values mean "the default".
        **options: the rule's own options (``min_ratio``, ``max_ratio``, ``decay``, ...).

    Example:
        >>> from spectra.results import Analysis, LayerResult
        >>> recs = tuple(LayerResult(name=f"h.{i}.fc", param=f"h.{i}.fc.weight", kind="linear", shape=(64, 64),
        ...              depth=i + 1, num_evals=64, alpha=a) for i, a in enumerate([2.0, 3.0, 4.0]))
        >>> a = Analysis(layers=recs, summary={}, config={}, checkpoint="demo", created="")
        >>> lrmap = prescribe(a, "llr")
        >>> [lrmap.multiplier(f"h.{i}.fc.weight") for i in range(3)]
        [1.0, 3.0, 5.0]
    """
    info = get_rule(method)
    if normalize not in NORMALIZE:
        raise ConfigError(f"--normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    norms = norms or info.norms
    if norms not in NORMS:
        raise ConfigError(f"--norms must be one of {', '.join(NORMS)}, got {norms!r}")
    if info.inputs == "depth" and metric not in (None, "depth"):
        raise ConfigError(f"method {method!r} uses depth only; it takes no --metric")
    metric = metric or info.metric
    bounds = parse_clip(clip) if clip is not None else info.clip
    rule_options = info.resolve(options)

    analyze_options = {k: v for k, v in dict(analyze_options or {}).items() if v is not None}
    if info.inputs == "analysis":
        for key, value in REFERENCE_ANALYSIS.items():
            analyze_options.setdefault(key, value)
    analysis, described, side = _load_analysis(source, analyze_options)
    from ..diff import DiffResult
    from ..noise import NoiseResult

    for key, value, cls in (("noise", noise, NoiseResult), ("diff", diff, DiffResult)):
        result, origin = _load_side(value, cls, key)
        if result is not None:
            side[key], side[f"{key}_origin"] = result, origin
    rows = _rows_for(info, metric, analysis, side)
    decisions = run_rule(info, rows, rule_options, metric)
    multipliers = _finish(rows, decisions, normalize, bounds)

    entries, params = _entries(rows, decisions, multipliers, norms, metric)
    if analysis is not None and info.inputs in ("analysis", "depth"):
        described = f"{described} ({_order_note(analysis)})"
    sources = [s for s in (described, side.get("noise_origin"), side.get("diff_origin")) if s]
    recorded = {"metric": metric, "normalize": normalize, "clip": list(bounds) if bounds else None, "norms": norms,
                **rule_options}
    if info.target == "weight_decay":
        lrmap = LRMap(method=method, params={k: 1.0 for k in params}, layers=tuple(entries), options=recorded,
                      source=" + ".join(sources), target="weight_decay", wd_params=params)
    else:
        lrmap = LRMap(method=method, params=params, layers=tuple(entries), options=recorded, source=" + ".join(sources))
    n = sum(d.prescribed for d in decisions)
    _logger.info("%s: %d of %d layers prescribed, %d parameters mapped", method, n, len(rows), len(params))
    return lrmap


def _order_note(analysis: Analysis) -> str:
    """Which layer order the rows followed: the analysis's ``order`` (:mod:`spectra.structure`)."""
    order, source = analysis.config.get("order"), analysis.config.get("order_source")
    if not order:
        return "order: as listed in the analysis"
    return f"order: {order}, {source}" if source else f"order: {order}"


def _finish(rows: Sequence[LayerRow], decisions: list[Decision], normalize: str,
            bounds: tuple[float, float] | None) -> list[tuple[float, str]]:
    """Normalise and clip the prescribed multipliers; ``(multiplier or NaN, reason)`` per row."""
    values = [d.multiplier for d in decisions if d.prescribed]
    scale = 1.0
    if values and normalize == "mean":
        mean = sum(values) / len(values)
        if mean <= 0:
            raise ConfigError("cannot normalise by the mean: the multipliers sum to 0")
        scale = 1.0 / mean
    elif values and normalize == "geomean":
        if min(values) <= 0:
            raise ConfigError("cannot normalise by the geometric mean: some multipliers are 0; use --normalize mean")
        scale = math.exp(-sum(math.log(v) for v in values) / len(values))
    out = []
    for row, d in zip(rows, decisions):
        if not d.prescribed:
            why = d.reason or (f"{row.status}: {row.reason}" if row.reason else "not prescribed by the rule")
            out.append((math.nan, why))
            continue
        m = d.multiplier * scale
        reason = d.reason
        if bounds is not None and not bounds[0] <= m <= bounds[1]:
            clipped = min(max(m, bounds[0]), bounds[1])
            reason = "; ".join(r for r in (reason, f"clipped from {m:.4g}") if r)
            m = clipped
        out.append((m, reason))
    return out


def _module_of(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _entries(rows: Sequence[LayerRow], decisions: list[Decision], finished: list[tuple[float, str]], norms: str,
             metric: str, default: float = 1.0) -> tuple[list[LayerEntry], dict[str, float]]:
    prescribed = [math.isfinite(m) for m, _ in finished]
    mults = [m if ok else default for (m, _), ok in zip(finished, prescribed)]
    by_name = {row.name: i for i, row in enumerate(rows)}
    collected: dict[str, list[float]] = {}
    covered: list[list[str]] = [[] for _ in rows]

    def put(key: str, value: float, row: int | None) -> None:
        collected.setdefault(key, []).append(value)
        if row is not None:
            covered[row].append(key)

    for i, row in enumerate(rows):
        if not (row.is_layer or prescribed[i]):  # tensors skipped for their type (buffers, int weights)
            continue
        put(row.param, mults[i], i)
        module = _module_of(row.param)
        for key in row.attached:
            owner = _module_of(key)
            if owner == module or norms == "follow":  # its own bias, or every norm under "follow"
                put(key, mults[i], i)
            elif norms == "name" and "bn" in owner and (j := by_name.get(owner.replace("bn", "conv"))) is not None \
                    and prescribed[j]:
                put(key, mults[j], j)
            else:
                put(key, default, None)
    entries = [LayerEntry(name=row.name, param=row.param, depth=row.depth, metric=metric, value=row.value,
                          multiplier=mults[i], reason=finished[i][1], params=tuple(dict.fromkeys(covered[i])),
                          prescribed=prescribed[i]) for i, row in enumerate(rows)]
    # a tensor shared by several rows (mixture-of-experts stacks) gets the mean of their multipliers
    params = {k: (v[0] if len(v) == 1 else sum(v) / len(v)) for k, v in collected.items()}
    return entries, params
