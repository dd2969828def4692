r"""LAMB: layer-wise adaptive moments (Adam direction with a per-tensor trust ratio).

You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
arXiv:1904.00962 (ICLR 2020); the update follows timm's ``timm/optim/lamb.py`` (class ``Lamb``, the
NVLAMB / FusedLAMB form), written here from the formulas:

.. math::
    g \leftarrow g / \max(1, \|g_{all}\| / G), \quad
    m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,

    u = \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon} + \lambda w, \qquad
    \tau = \|w\| / \|u\| \ (1 \text{ if either is } 0), \qquad w \leftarrow w - \eta\,\tau\,u

with global gradient-norm clipping at ``G = max_grad_norm`` (over every parameter of the optimizer),
LAMBC clipping ``tau <- min(tau, 1)`` when ``trust_clip`` and decoupled decay
``w <- w (1 - eta lambda)`` instead of ``+ lambda w`` when ``decoupled_decay``. The ratio applies
where ``weight_decay != 0`` or ``always_adapt``; ``adapt_1d=False`` (our addition) exempts 0-D/1-D
tensors. All norms stay on the device.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim import Optimizer

from ..errors import ConfigError

__all__ = ["Lamb"]


class Lamb(Optimizer):
    """LAMB optimizer (timm semantics).

    Args:
        params: parameters or param groups.
        lr: learning rate.
        bias_correction: Adam bias correction.
        betas, eps: Adam moments and epsilon.
        weight_decay: decay added to the update (or decoupled, see ``decoupled_decay``).
        grad_averaging: use ``1 - beta1`` on the gradient in the first moment.
        max_grad_norm: global gradient-norm clip (None: no clipping).
        trust_clip: LAMBC clipping of the trust ratio at 1.
        always_adapt: apply the trust ratio even where weight decay is 0.
        adapt_1d: apply it to 0-D/1-D tensors too (timm: yes).
        decoupled_decay: AdamW-style decay outside the trust ratio.

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> opt = Lamb(model.parameters(), lr=1e-3, weight_decay=0.01)
        >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 grad_averaging: bool = True, max_grad_norm: float | None = 1.0, *, trust_clip: bool = False,
                 always_adapt: bool = False, adapt_1d: bool = True, decoupled_decay: bool = False) -> None:
        if lr < 0.0:
            raise ConfigError(f"invalid LAMB lr: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ConfigError(f"invalid LAMB betas: {betas}")
        if eps < 0.0 or weight_decay < 0.0:
            raise ConfigError(f"invalid LAMB eps / weight_decay: {eps} / {weight_decay}")
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ConfigError(f"invalid LAMB max_grad_norm: {max_grad_norm}")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay, grad_averaging=grad_averaging, max_grad_norm=max_grad_norm,
                        trust_clip=trust_clip, always_adapt=always_adapt, adapt_1d=adapt_1d,
                        decoupled_decay=decoupled_decay)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("adapt_1d", True)
            group.setdefault("decoupled_decay", False)

    def _clip_divisor(self):
        """``max(1, ||g_all|| / G)`` as a device tensor (G as given to the constructor), or None."""
        max_norm = self.defaults["max_grad_norm"]
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if max_norm is None or not grads:
            return None
        device = grads[0].device
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32).to(device)
                                                      for g in grads]))
        return torch.clamp(total / max_norm, min=1.0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        divisor = self._clip_divisor()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            beta3 = 1.0 - beta1 if group["grad_averaging"] else 1.0
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                grad = p.grad if divisor is None else p.grad / divisor.to(p.grad.device)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                bc1 = 1.0 - beta1 ** t if group["bias_correction"] else 1.0
                bc2 = 1.0 - beta2 ** t if group["bias_correction"] else 1.0
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=beta3)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(bc2)).add_(group["eps"])
                update = (exp_avg / bc1).div_(denom)
                if wd != 0:
                    if group["decoupled_decay"]:
                        p.mul_(1.0 - lr * wd)
                    else:
                        update.add_(p, alpha=wd)
                if (wd != 0 or group["always_adapt"]) and (group["adapt_1d"] or p.ndim >= 2):
                    w_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    if group["trust_clip"]:
                        ratio = torch.clamp(ratio, max=1.0)
                    update.mul_(ratio)
                p.add_(update, alpha=-lr)
        return loss
