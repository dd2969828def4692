"""HT-SR rules: learning rates (or weight decay) from each layer's heavy-tail exponent alpha.

All anchors share one direction: a larger alpha (weaker heavy tail, an under-trained layer) gets a
larger learning rate (LLR, TempBalance) or a stronger weight decay (AlphaDecay). The mappings are
those of ``get_layer_temps`` in the reference code, written here as ratios of the base value:

* linear (``tb_linear_map``): ``m_i = interp(s_i, [min s, max s], [min_ratio, max_ratio])``, with
  ``numpy.interp``'s behaviour kept when all values are equal (every layer gets ``max_ratio``);
* sqrt (``tb_sqrt``): ``m_i = n * sqrt(s_i) / sum_j sqrt(s_j)`` (mean multiplier exactly 1);
* log2 (``tb_log2``): ``m_i = n * log2(s_i) / sum_j log2(s_j)`` (mean exactly 1; needs s > 1).

Layer selection follows ``build_optimizer_param_group`` of the reference code, step by step, on the
layers in model order (:mod:`spectra.structure`):

1. the tuned modules: ``nn.Linear`` and ``nn.Conv2d`` (TempBalance, AlphaDecay), plus ``nn.Embedding``
   (LLR); HF ``Conv1D`` counts as Linear (the reference's ``isinstance`` test would miss GPT-2's
   projections, not by design), ``nn.Conv1d`` kernels and fused expert stacks are not tuned;
2. the first and the last of them in ``named_modules()`` order are excluded (``exclude_first`` /
   ``exclude_last``, the reference's ``remove_first_layer`` / ``remove_last_layer``) *before*
3. layers with fewer than ``eigs_thresh`` eigenvalues are dropped; spectra also leaves layers whose
   fit failed (the reference would map a NaN) at the default.

A tuned layer's own parameters (its bias) take its multiplier, as the reference puts
``module.parameters()`` in the layer's group; norms follow TempBalance's ``batchnorm_type='name'``
rule (``--norms name``): a BatchNorm named like its convolution (``bn`` -> ``conv``) follows it, every
other norm (LayerNorm: ``layernorm=False``) stays at the default. The metric is alpha from the
``median`` fit (``pl_fitting='median'``, ``filter_zeros=False``). With these defaults the maps equal
the reference code's on all-MiniLM-L6-v2 to 1e-6 per parameter (tests/prescribe/test_reference.py).

Sources: He et al., "One LR Doesn't Fit All" (arXiv 2605.22297; hed-ucas/Layer-wise-Learning-Rate,
``olmo/LRUnbalance.py``); Zhou et al., "Temperature Balancing, Layer-wise Weight Analysis, and Neural
Network Training", NeurIPS 2023 (arXiv 2312.00359; YefanZhou/TempBalance ``tempbalance.py``); He et
al., "AlphaDecay" (arXiv 2506.14562; hed-ucas/AlphaDecay ``WeightDecayUnbalance.py``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .registry import Decision, LayerRow, leave, register_rule

__all__ = ["llr", "tempbalance", "tb_sqrt", "tb_log2", "alphadecay", "linear_map"]

#: Layer kinds TempBalance and AlphaDecay tune (``nn.Linear``/``nn.Conv2d``); "" is a row whose input
#: did not say (a noise or diff record), taken as a Linear.
TB_KINDS = ("linear", "conv2d", "")
#: LLR also tunes ``nn.Embedding``.
LLR_KINDS = TB_KINDS + ("embedding",)


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
    rows: Sequence[LayerRow], *, kinds: tuple[str, ...], exclude_first: bool, exclude_last: bool,
    eigs_thresh: int, who: str,
) -> tuple[list[int], dict[int, str]]:
    """Indices of rows a TempBalance-style rule maps, and a reason for every other row.

    ``build_optimizer_param_group``: first/last among the tuned modules (whatever their fit), then
    the ``eigs_thresh`` filter; spectra also drops rows without a usable metric.
    """
    reasons: dict[int, str] = {}
    tuned: list[int] = []
    for i, row in enumerate(rows):
        if row.is_layer and row.kind in kinds:
            tuned.append(i)
        else:
            reasons[i] = f"{row.kind or 'this'} tensor is not tuned by {who}" if row.is_layer else \
                (f"{row.status}: {row.reason}" if row.reason else "not a layer")
    if exclude_first and tuned:
        reasons[tuned.pop(0)] = f"first layer excluded ({who} remove_first_layer)"
    if exclude_last and tuned:
        reasons[tuned.pop()] = f"last layer excluded ({who} remove_last_layer)"
    kept = []
    for i in tuned:
        row = rows[i]
        if row.num_evals is not None and 0 < row.num_evals < eigs_thresh:
            reasons[i] = f"{row.num_evals} eigenvalues < eigs_thresh {eigs_thresh}"
        elif not row.usable:
            reasons[i] = f"no usable metric ({row.status}{': ' + row.reason if row.reason else ''})"
        else:
            kept.append(i)
    return kept, reasons


def _assemble(n: int, kept: list[int], values: list[float], reasons: dict[int, str]) -> list[Decision]:
    out = [leave(reasons.get(i, "")) for i in range(n)]
    for i, m in zip(kept, values):
        out[i] = Decision(m)
    return out


@register_rule(
    "llr",
    description="LLR (One LR Doesn't Fit All): alpha linearly to [1, 5] x base; embeddings and head at the max",
    norms="name",
    source="He et al. 2026, arXiv 2605.22297; hed-ucas/Layer-wise-Learning-Rate olmo/LRUnbalance.py",
)
def llr(rows: Sequence[LayerRow], *, min_ratio: float = 1.0, max_ratio: float = 5.0, eigs_thresh: int = 50,
        exclude_first: bool = False, exclude_last: bool = False, embed_name: str = "embed",
        head_name: str = "head") -> list[Decision]:
    """Heavy-tail guided layerwise LR (LLR), as ``layerTempbalance`` computes it.

    ``m_i = interp(alpha_i, [alpha_min, alpha_max], [min_ratio, max_ratio])`` over the Linear, Conv2d
    and Embedding layers (ratios 1 and 5: the README and run scripts; ``remove_first_layer`` and
    ``remove_last_layer`` False: ``LLRConfig``), so every layer trains at or above the base LR and
    there is no renormalisation. A layer whose name contains ``embed_name`` or ``head_name`` (plain
    substrings, as in the reference: ``multihead`` counts) takes the largest alpha and the largest
    eigenvalue count of all tuned layers, small ones included, before the ``eigs_thresh`` filter,
    so it gets ``max_ratio`` and that alpha is the top of everyone's range.

    >>> rows = [LayerRow("embed", "embed.weight", 0, "embedding", 9.0),
    ...         LayerRow("l.0.fc", "l.0.fc.weight", 1, value=2.0), LayerRow("l.1.fc", "l.1.fc.weight", 2, value=4.0),
    ...         LayerRow("l.2.fc", "l.2.fc.weight", 3, value=3.0)]
    >>> [d.multiplier for d in llr(rows)]
    [5.0, 1.0, 5.0, 3.0]
    """
    _check_ratios(min_ratio, max_ratio)
    tuned = [i for i, row in enumerate(rows) if row.is_layer and row.kind in LLR_KINDS]
    special = {i for i in tuned if embed_name in rows[i].name or head_name in rows[i].name}
    others = [rows[i] for i in tuned if i not in special]
    alphas = [row.value for row in others if row.usable]
    counts = [row.num_evals for row in others if row.num_evals]
    rows = list(rows)
    for i in special:  # the reference's alpha = -1 / eigs_num = -1, then overwritten with the maxima
        rows[i] = replace(rows[i], value=max(alphas) if alphas else math.nan, status="success" if alphas else "failed",
                          num_evals=max(counts) if counts else None,
                          reason="" if alphas else "no other layer has an alpha to take the maximum of")
    kept, reasons = _select(rows, kinds=LLR_KINDS, exclude_first=exclude_first, exclude_last=exclude_last,
                            eigs_thresh=eigs_thresh, who="LLR")
    out = _assemble(len(rows), kept, linear_map([rows[i].value for i in kept], min_ratio, max_ratio), reasons)
    for i in special.intersection(kept):
        out[i] = Decision(out[i].multiplier, f"'{embed_name}'/'{head_name}' layer at the largest alpha (LLR)")
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
    description="TempBalance: alpha linearly to [0.5, 1.5] x base; first/last Linear/Conv2d and embeddings at base",
    norms="name",
    source="Zhou et al., NeurIPS 2023, arXiv 2312.00359; YefanZhou/TempBalance tempbalance.py (tb_linear_map)",
)
def tempbalance(rows: Sequence[LayerRow], *, min_ratio: float = 0.5, max_ratio: float = 1.5, exclude_first: bool = True,
                exclude_last: bool = True, eigs_thresh: int = 50) -> list[Decision]:
    """TempBalance's default ``tb_linear_map``: ``m_i = interp(alpha_i, [min, max], [0.5, 1.5])``.

    Only Linear/Conv2d layers are tuned; the first and last of them in model order are excluded by
    default; biases follow their layer, BatchNorms follow their conv by name and LayerNorms stay at
    the base LR (``batchnorm=True``, ``layernorm=False``), as in the reference code. The mean
    multiplier is only roughly 1: the endpoints are pinned, not the mean.

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
    norms="name",
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
    norms="name",
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
    norms="name",
    source="He et al. 2025, arXiv 2506.14562; hed-ucas/AlphaDecay LLaMa-pretraining/WeightDecayUnbalance.py",
)
def alphadecay(rows: Sequence[LayerRow], *, min_ratio: float = 0.666, max_ratio: float = 3.0, exclude_first: bool = True,
               exclude_last: bool = True, eigs_thresh: int = 50) -> list[Decision]:
    """Module-wise weight decay: ``wd_i = wd * interp(alpha_i, [min, max], [0.666, 3])``.

    A lighter tail (larger alpha) gets stronger decay. Embeddings are not tuned in AlphaDecay, so
    "first" is the first Linear in model order (``q_proj`` of layer 0) and "last" the LM head (a
    BERT encoder's pooler); both, and the LayerNorms, keep the uniform weight decay; biases follow
    their layer (``--remove_first_layer``/``--remove_last_layer`` True, ``torchrun_main.py``).

    >>> rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate([5.0, 2.0, 4.0, 3.0])]
    >>> [round(d.multiplier, 4) for d in alphadecay(rows, exclude_first=False, exclude_last=False, eigs_thresh=0)]
    [3.0, 0.666, 2.222, 1.444]
    """
    _check_ratios(min_ratio, max_ratio)
    return _tb(rows, lambda v: linear_map(v, min_ratio, max_ratio), exclude_first=exclude_first,
               exclude_last=exclude_last, eigs_thresh=eigs_thresh, who="AlphaDecay")
