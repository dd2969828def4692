"""Depth rules: multipliers from a layer's position alone (no spectral metric needed).

* ``layer-decay`` (timm ``param_groups_layer_decay``, after BEiT): ``m_i = max(min_scale,
  decay^(D - d_i))`` with ``d_i`` the layer's depth (embeddings 0, blocks 1..L, head last) and
  ``D`` the largest depth, so the head trains at the base LR and the embeddings at ``decay^D``.
  timm's default ``decay`` is 0.75; BEiT/MAE recipes use 0.65-0.75.
* ``ulmfit`` (Howard & Ruder 2018, discriminative fine-tuning, arXiv 1801.06146): the same form with
  ``decay = 1/2.6``, i.e. ``eta^(l-1) = eta^l / 2.6`` going down from the top layer.
* ``lines`` (Wang et al., "LiNeS", ICLR 2025, arXiv 2410.17146; wang-kee/LiNeS ``LiNeS_scaling``):
  ``m_l = a + b * l / (B - 1)`` for residual block ``l = 0..B-1`` and ``a`` for everything outside
  the blocks (embeddings, head, final norm). LiNeS scales a task vector after training; as an LR
  map it is the same linear-in-depth shape. With one block ``l / (B - 1)`` is taken as 1.

Layers whose fit failed or that were too small to fit are still placed by depth (the rule does not
read the metric); only tensors skipped for their type (not layers) stay at the default.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import ConfigError
from ..layers import block_key
from .registry import Decision, LayerRow, leave, register_rule

__all__ = ["layer_decay", "lines"]


def _placed(rows: Sequence[LayerRow]) -> list[int]:
    return [i for i, row in enumerate(rows) if row.is_layer]


@register_rule(
    "layer-decay",
    description="timm/BEiT layer-wise LR decay: decay^(D - depth), head at base (default decay 0.75)",
    inputs="depth",
    metric="depth",
    source="timm timm/optim/_param_groups.py param_groups_layer_decay; Bao et al. BEiT (arXiv 2106.08254)",
)
def layer_decay(rows: Sequence[LayerRow], *, decay: float = 0.75, min_scale: float = 0.0) -> list[Decision]:
    """``m_i = max(min_scale, decay ** (D - depth_i))`` with ``D`` the deepest layer's depth.

    >>> rows = [LayerRow(n, n + ".weight", d) for n, d in [("emb", 0), ("b.0.fc", 1), ("b.1.fc", 2), ("head", 3)]]
    >>> [d.multiplier for d in layer_decay(rows, decay=0.5)]
    [0.125, 0.25, 0.5, 1.0]
    """
    if not (math.isfinite(decay) and decay > 0):
        raise ConfigError(f"decay must be a number > 0, got {decay!r}")
    if not (math.isfinite(min_scale) and min_scale >= 0):
        raise ConfigError(f"min_scale must be a number >= 0, got {min_scale!r}")
    placed = _placed(rows)
    out = [leave(row.reason or "skipped in the analysis") for row in rows]
    if not placed:
        return out
    top = max(rows[i].depth for i in placed)
    for i in placed:
        out[i] = Decision(max(min_scale, decay ** (top - rows[i].depth)))
    return out


register_rule(
    "ulmfit",
    description="ULMFiT discriminative fine-tuning: LR divided by 2.6 per layer going down",
    inputs="depth",
    metric="depth",
    source="Howard & Ruder 2018, Universal Language Model Fine-tuning, arXiv 1801.06146, section 3.2",
    decay=1 / 2.6,
)(layer_decay)


@register_rule(
    "lines",
    description="LiNeS: a + b * l/(B-1) over residual blocks l = 0..B-1, a outside blocks",
    inputs="depth",
    metric="depth",
    source="Wang et al., ICLR 2025, arXiv 2410.17146; wang-kee/LiNeS src/eval/eval.py LiNeS_scaling",
)
def lines(rows: Sequence[LayerRow], *, a: float = 0.5, b: float = 0.5) -> list[Decision]:
    """``m = a + b * l / (B - 1)`` for block ``l`` of ``B``; ``a`` outside the numbered blocks.

    Blocks are the numbered containers of :func:`spectra.layers.block_key` (``layers.3``,
    ``blocks.0``), ranked by depth. A model with no numbered blocks (a plain MLP) treats each depth
    as a block. ``a = c, b = 1 - c`` is LiNeS's single-task form (deepest block at 1).

    >>> rows = [LayerRow(n, n + ".weight", d) for n, d in [("emb", 0), ("h.0.fc", 1), ("h.1.fc", 2), ("h.2.fc", 3), ("head", 4)]]
    >>> [round(d.multiplier, 6) for d in lines(rows, a=0.2, b=0.8)]
    [0.2, 0.2, 0.6, 1.0, 0.2]
    """
    for name, value in (("a", a), ("b", b)):
        if not math.isfinite(value):
            raise ConfigError(f"lines option {name} must be a finite number, got {value!r}")
    placed = _placed(rows)
    in_block = [i for i in placed if block_key(rows[i].name) is not None]
    if not in_block:
        in_block = placed
    depths = sorted({rows[i].depth for i in in_block})
    rank = {d: k for k, d in enumerate(depths)}
    out = [leave(row.reason or "skipped in the analysis") for row in rows]
    for i in placed:
        out[i] = Decision(a, "outside the residual blocks: a (LiNeS)")
    for i in in_block:
        frac = rank[rows[i].depth] / (len(depths) - 1) if len(depths) > 1 else 1.0
        out[i] = Decision(a + b * frac)
    return out
