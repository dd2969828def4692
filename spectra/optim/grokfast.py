r"""Grokfast: amplify the slow (low-frequency) component of the gradient.

Lee, Kang, Kim, Lee & Kim, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients",
arXiv:2405.20233 (2024); reference code ``ironjr/grokfast`` (``gradfilter_ema``). The EMA filter is

.. math::
    h_t = \alpha\, h_{t-1} + (1 - \alpha)\, g_t, \qquad h_1 = g_1, \qquad
    \tilde g_t = g_t + \lambda\, h_t

with the reference defaults alpha = 0.98, lambda = 2.0. The reference filters ``p.grad`` in place
between ``backward()`` and ``step()``; here the filter is a pure function (:func:`ema_update_`,
:func:`amplify`) used inside :class:`spectra.optim.DALS` (with a depth-dependent lambda) and by the
:class:`Grokfast` wrapper, which filters the gradients of any torch optimizer just before its step
and keeps the EMA in its own ``state_dict``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..errors import ConfigError
from .lookahead import OptimizerWrapper

__all__ = ["ema_update_", "lerp_", "amplify", "Grokfast"]


def ema_update_(emas: Sequence[Tensor], grads: Sequence[Tensor], alpha: float, *, foreach: bool = False) -> None:
    r"""In place ``h <- alpha * h + (1 - alpha) * g`` for each pair (computed as ``lerp``).

    >>> h = [torch.tensor([1.0, 0.0])]; ema_update_(h, [torch.tensor([0.0, 1.0])], 0.75); h[0]
    tensor([0.7500, 0.2500])
    """
    lerp_(emas, grads, 1.0 - alpha, foreach=foreach)


def lerp_(targets: Sequence[Tensor], ends: Sequence[Tensor], weight: float, *, foreach: bool = False) -> None:
    r"""In place ``x <- x + weight * (e - x)`` for each pair (one ``_foreach_lerp_`` call with ``foreach``)."""
    if not targets:
        return
    if foreach:
        torch._foreach_lerp_(list(targets), list(ends), weight)
    else:
        for x, e in zip(targets, ends):
            x.lerp_(e, weight)


def amplify(grads: Sequence[Tensor], emas: Sequence[Tensor], lamb: float, *, foreach: bool = False) -> list[Tensor]:
    r"""New tensors ``g + lamb * h`` (the filtered gradient); the inputs are not modified.

    >>> amplify([torch.tensor([1.0])], [torch.tensor([0.5])], 2.0)
    [tensor([2.])]
    """
    if not grads:
        return []
    if foreach:
        return list(torch._foreach_add(list(grads), list(emas), alpha=lamb))
    return [g.add(h, alpha=lamb) for g, h in zip(grads, emas)]


def _use_foreach(params: Sequence[Tensor]) -> bool:
    """foreach kernels when every tensor is on one CUDA device (torch's own default rule)."""
    return len({p.device for p in params}) == 1 and params[0].is_cuda


class Grokfast(OptimizerWrapper):
    """Grokfast-EMA gradient filter in front of any torch optimizer.

    Each :meth:`step` replaces every ``p.grad`` by ``g + lamb * EMA_alpha(g)`` and then runs the
    wrapped optimizer's step (the EMA is initialized to the first gradient, as in the reference
    ``gradfilter_ema``). ``param_groups`` are shared with the wrapped optimizer, so LR schedulers
    and LR maps act on both; ``state_dict`` holds the wrapped optimizer's state plus the EMAs.

    Args:
        base: the optimizer to wrap (e.g. ``torch.optim.AdamW``).
        alpha: EMA momentum (reference default 0.98; pick alpha^N ~ 0.1 for an N-step window).
        lamb: amplification of the slow component (reference default 2.0).

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> opt = Grokfast(torch.optim.AdamW(model.parameters(), lr=1e-3), alpha=0.98, lamb=2.0)
        >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
    """

    def __init__(self, base: Optimizer, *, alpha: float = 0.98, lamb: float = 2.0) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"Grokfast alpha must lie in [0, 1), got {alpha}")
        if lamb < 0.0:
            raise ConfigError(f"Grokfast lamb must be >= 0, got {lamb}")
        super().__init__(base, dict(grokfast_alpha=alpha, grokfast_lamb=lamb))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params or group["grokfast_lamb"] == 0.0:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("Grokfast does not support sparse gradients")
            grads = [p.grad for p in params]
            old = [p for p in params if "grokfast_ema" in self.state[p]]
            ema_update_([self.state[p]["grokfast_ema"] for p in old], [p.grad for p in old],
                        group["grokfast_alpha"], foreach=_use_foreach(params))
            for p in params:  # first sight: the EMA starts at the gradient (reference code)
                self.state[p].setdefault("grokfast_ema", p.grad.detach().clone())
            emas = [self.state[p]["grokfast_ema"] for p in params]
            if _use_foreach(params):
                torch._foreach_add_(grads, emas, alpha=group["grokfast_lamb"])
            else:
                for g, h in zip(grads, emas):
                    g.add_(h, alpha=group["grokfast_lamb"])
        self.base.step()
        return loss
