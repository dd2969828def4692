"""HT-SR rules: learning rates (or weight decay) from each layer's heavy-tail exponent alpha.

All anchors share one direction: a larger alpha (weaker heavy tail, an under-trained layer) gets a
larger learning rate (LLR, TempBalance) or a stronger weight decay (AlphaDecay). The mappings are
those of ``get_layer_temps`` in the reference code, written here as ratios of the base value:

* linear (``tb_linear_map``): ``m_i = interp(s_i, [min s, max s], [min_ratio, max_ratio])``, with
  ``numpy.interp``'s behaviour kept when all values are equal (every layer gets ``max_ratio``);
* sqrt (``tb_sqrt``): ``m_i = n * sqrt(s_i) / sum_j sqrt(s_j)`` (mean multiplier exactly 1);
* log2 (``tb_log2``): ``m_i = n * log2(s_i) / sum_j log2(s_j)`` (mean exactly 1; needs s > 1).

Layer selection follows ``build_optimizer_param_group``: the first and last analysed Linear/Conv
layer can be excluded (``exclude_first``/``exclude_last``, TempBalance's ``remove_first_layer`` and
``remove_last_layer``) and layers with fewer than ``eigs_thresh`` eigenvalues are left at the
default. Layers whose fit failed never enter the min/max or the sums, so they cannot move the other
layers' multipliers.

Sources: He et al., "One LR Doesn't Fit All" (arXiv 2605.22297; hed-ucas/Layer-wise-Learning-Rate,
``olmo/LRUnbalance.py``); Zhou et al., "Temperature Balancing, Layer-wise Weight Analysis, and Neural
Network Training", NeurIPS 2023 (arXiv 2312.00359; YefanZhou/TempBalance ``tempbalance.py``); He et
al., "AlphaDecay" (arXiv 2506.14562; hed-ucas/AlphaDecay ``WeightDecayUnbalance.py``).
"""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..layers import EMBEDDING_PATTERN
from .registry import Decision, LayerRow, leave, register_rule

__all__ = ["llr", "tempbalance", "tb_sqrt", "tb_log2", "alphadecay", "linear_map"]

#: Layer kinds TempBalance and AlphaDecay tune (``nn.Linear``/``nn.Conv2d``; not embeddings).
TB_KINDS = ("linear", "conv2d", "conv1d", "expert", "")


def linear_map(values: Sequence[float], lo: float, hi: float) -> list[float]:
    """``tb_linear_map`` as ratios: ``interp(s, [min s, max s], [lo, hi])``.

    >>> linear_map([2.0, 3.0, 6.0], 1.0, 5.0)
    [1.0, 2.0, 5.0]
    """
    if not values:
        return []
    v = np.asarray(values, dtype=float)
    return [float(x) for x in np.interp(v, [v.min(), v.max()], [lo, hi])]


def _check_ratios(min_ratio: float, max_ratio: float) -> None:
    if not (math.isfinite(min_ratio) and math.isfinite(max_ratio)) or min_ratio < 0 or max_ratio < min_ratio:
        raise ConfigError(f"need 0 <= min_ratio <= max_ratio, got min_ratio={min_ratio}, max_ratio={max_ratio}")


def _select(
    rows: Sequence[LayerRow], *, kinds: tuple[str, ...] | None, exclude_first: bool, exclude_last: bool,
    eigs_thresh: int, who: str,
) -> tuple[list[int], dict[int, str]]:
    """Indices of rows a TempBalance-style rule maps, and a reason for every other row."""
    reasons: dict[int, str] = {}
    candidates: list[int] = []
    for i, row in enumerate(rows):
        if kinds is not None and row.kind not in kinds:
            reasons[i] = f"{row.kind} layers are not tuned ({who})"
        elif not row.usable:
            reasons[i] = f"no usable metric ({row.status}{': ' + row.reason if row.reason else ''})"
        else:
            candidates.append(i)
    if exclude_first and candidates:
        reasons[candidates.pop(0)] = f"first layer excluded ({who} remove_first_layer)"
    if exclude_last and candidates:
        reasons[candidates.pop()] = f"last layer excluded ({who} remove_last_layer)"
    kept = []
    for i in candidates:
        n = rows[i].num_evals
        if n is not None and n < eigs_thresh:
            reasons[i] = f"{n} eigenvalues < eigs_thresh {eigs_thresh}"
        else:
            kept.append(i)
    return kept, reasons


def _assemble(n: int, kept: list[int], values: list[float], reasons: dict[int, str]) -> list[Decision]:
    out = [leave(reasons.get(i, "")) for i in range(n)]
    for i, m in zip(kept, values):
        out[i] = Decision(m)
    return out


_LLR_HEAD = re.compile(r"(^|[._])(lm_head|head|embed_out)([._]|$)", re.IGNORECASE)


def _is_embed_or_head(row: LayerRow) -> bool:
    """LLR's ``embed_name='embed'`` / ``head_name='head'`` test, on whole name parts.

    LLR matches substrings; whole parts keep ``multi_head_attn.q`` from counting as a head.
    """
    return row.kind == "embedding" or bool(EMBEDDING_PATTERN.search(row.name) or _LLR_HEAD.search(row.name))


@register_rule(
    "llr",
    description="LLR (One LR Doesn't Fit All): alpha linearly to [1, 5] x base; embeddings and head at the max",
    norms="base",
    source="He et al. 2026, arXiv 2605.22297; hed-ucas/Layer-wise-Learning-Rate olmo/LRUnbalance.py",
)
def llr(rows: Sequence[LayerRow], *, min_ratio: float = 1.0, max_ratio: float = 5.0, eigs_thresh: int = 50) -> list[Decision]:
    """Heavy-tail guided layerwise LR (LLR).

    ``m_i = interp(alpha_i, [alpha_min, alpha_max], [min_ratio, max_ratio])`` over every analysed
    Linear/Conv layer (defaults 1 and 5, the README and run scripts), so every layer trains at or
    above the base LR and there is no renormalisation. Embeddings and the LM head (``embed`` or
    ``head`` in the name) get ``max_ratio``, as LLR overwrites their alpha with the largest one;
    norms stay at the base LR (``--norms base``).

    >>> rows = [LayerRow("embed", "embed.weight", 0, "embedding", 9.0),
    ...         LayerRow("l.0.fc", "l.0.fc.weight", 1, value=2.0), LayerRow("l.1.fc", "l.1.fc.weight", 2, value=4.0),
    ...         LayerRow("l.2.fc", "l.2.fc.weight", 3, value=3.0)]
    >>> [d.multiplier for d in llr(rows)]
    [5.0, 1.0, 5.0, 3.0]
    """
    _check_ratios(min_ratio, max_ratio)
    body = [i for i, row in enumerate(rows) if not _is_embed_or_head(row)]
    kept, reasons = _select([rows[i] for i in body], kinds=None, exclude_first=False, exclude_last=False,
                            eigs_thresh=eigs_thresh, who="LLR")
    kept_rows = [body[i] for i in kept]
    mapped = linear_map([rows[i].value for i in kept_rows], min_ratio, max_ratio)
    out = _assemble(len(rows), kept_rows, mapped, {body[i]: r for i, r in reasons.items()})
    for i, row in enumerate(rows):
        if _is_embed_or_head(row) and row.is_layer:
            out[i] = Decision(max_ratio, "embedding/head at max_ratio (LLR)")
    return out


def _tb(rows: Sequence[LayerRow], mapping: Callable[[list[float]], list[float]], *, exclude_first: bool,
        exclude_last: bool, eigs_thresh: int, who: str, domain: Callable[[float], bool] = lambda v: True,
        domain_reason: str = "") -> list[Decision]:
    kept, reasons = _select(rows, kinds=TB_KINDS, exclude_first=exclude_first, exclude_last=exclude_last,
                            eigs_thresh=eigs_thresh, who=who)
    inside = []
    for i in kept:
        if domain(rows[i].value):
            inside.append(i)
        else:
            reasons[i] = domain_reason
    return _assemble(len(rows), inside, mapping([rows[i].value for i in inside]), reasons)


@register_rule(
    "tempbalance",
    description="TempBalance: alpha linearly to [0.5, 1.5] x base; first/last layer and embeddings at base",
    source="Zhou et al., NeurIPS 2023, arXiv 2312.00359; YefanZhou/TempBalance tempbalance.py (tb_linear_map)",
)
def tempbalance(rows: Sequence[LayerRow], *, min_ratio: float = 0.5, max_ratio: float = 1.5, exclude_first: bool = True,
                exclude_last: bool = True, eigs_thresh: int = 50) -> list[Decision]:
    """TempBalance's default ``tb_linear_map``: ``m_i = interp(alpha_i, [min, max], [0.5, 1.5])``.

    Only Linear/Conv layers are tuned; the first and last of them are excluded by default and
    norms follow their layer (``batchnorm=True``), as in the reference code. The mean multiplier
    is only roughly 1: the endpoints are pinned, not the mean.

    >>> rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate([9.0, 2.0, 3.0, 6.0, 9.0])]
    >>> [d.multiplier for d in tempbalance(rows)][1:4]
    [0.5, 0.75, 1.5]
    """
    _check_ratios(min_ratio, max_ratio)
    return _tb(rows, lambda v: linear_map(v, min_ratio, max_ratio), exclude_first=exclude_first,
               exclude_last=exclude_last, eigs_thresh=eigs_thresh, who="TempBalance")


def _sqrt_map(values: list[float]) -> list[float]:
    total = sum(math.sqrt(v) for v in values)
    return [len(values) * math.sqrt(v) / total for v in values] if total > 0 else [1.0] * len(values)


def _log2_map(values: list[float]) -> list[float]:
    total = sum(math.log2(v) for v in values)
    return [len(values) * math.log2(v) / total for v in values]


@register_rule(
    "tb-sqrt",
    description="TempBalance tb_sqrt: n * sqrt(alpha_i) / sum sqrt(alpha), mean multiplier exactly 1",
    source="Zhou et al., NeurIPS 2023; YefanZhou/TempBalance tempbalance.py get_layer_temps (tb_sqrt)",
)
def tb_sqrt(rows: Sequence[LayerRow], *, exclude_first: bool = True, exclude_last: bool = True,
            eigs_thresh: int = 50) -> list[Decision]:
    """``m_i = n * sqrt(s_i) / sum_j sqrt(s_j)``: the mean of the multipliers is 1.

    >>> rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate([1.0, 4.0, 9.0])]
    >>> [round(d.multiplier, 6) for d in tb_sqrt(rows, exclude_first=False, exclude_last=False, eigs_thresh=0)]
    [0.5, 1.0, 1.5]
    """
    return _tb(rows, _sqrt_map, exclude_first=exclude_first, exclude_last=exclude_last, eigs_thresh=eigs_thresh,
               who="TempBalance", domain=lambda v: v >= 0, domain_reason="metric < 0 (sqrt undefined)")


@register_rule(
    "tb-log2",
    description="TempBalance tb_log2: n * log2(alpha_i) / sum log2(alpha), mean multiplier exactly 1",
    source="Zhou et al., NeurIPS 2023; YefanZhou/TempBalance tempbalance.py get_layer_temps (tb_log2)",
)
def tb_log2(rows: Sequence[LayerRow], *, exclude_first: bool = True, exclude_last: bool = True,
            eigs_thresh: int = 50) -> list[Decision]:
    """``m_i = n * log2(s_i) / sum_j log2(s_j)``; layers with ``s <= 1`` (log2 <= 0) stay at the default.

    >>> rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate([2.0, 8.0])]
    >>> [d.multiplier for d in tb_log2(rows, exclude_first=False, exclude_last=False, eigs_thresh=0)]
    [0.5, 1.5]
    """
    return _tb(rows, _log2_map, exclude_first=exclude_first, exclude_last=exclude_last, eigs_thresh=eigs_thresh,
               who="TempBalance", domain=lambda v: v > 1, domain_reason="metric <= 1 (log2 not positive)")


@register_rule(
    "alphadecay",
    description="AlphaDecay: weight decay, alpha linearly to [0.666, 3] x base; first/last layer at base",
    target="weight_decay",
    norms="base",
    source="He et al. 2025, arXiv 2506.14562; hed-ucas/AlphaDecay LLaMa-pretraining/WeightDecayUnbalance.py",
)
def alphadecay(rows: Sequence[LayerRow], *, min_ratio: float = 0.666, max_ratio: float = 3.0, exclude_first: bool = True,
               exclude_last: bool = True, eigs_thresh: int = 50) -> list[Decision]:
    """Module-wise weight decay: ``wd_i = wd * interp(alpha_i, [min, max], [0.666, 3])``.

    A lighter tail (larger alpha) gets stronger decay. Embeddings are not analysed in AlphaDecay, so
    "first" is the first Linear (``q_proj`` of layer 0) and "last" the LM head; both, and the
    norms, keep the uniform weight decay.

    >>> rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate([5.0, 2.0, 4.0, 3.0])]
    >>> [round(d.multiplier, 4) for d in alphadecay(rows, exclude_first=False, exclude_last=False, eigs_thresh=0)]
    [3.0, 0.666, 2.222, 1.444]
    """
    _check_ratios(min_ratio, max_ratio)
    return _tb(rows, lambda v: linear_map(v, min_ratio, max_ratio), exclude_first=exclude_first,
               exclude_last=exclude_last, eigs_thresh=eigs_thresh, who="AlphaDecay")
