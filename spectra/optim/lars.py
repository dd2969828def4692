r"""LARS: layer-wise adaptive rate scaling (momentum SGD with a per-tensor trust ratio).

You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", arXiv:1708.03888 (2017);
the update follows timm's ``timm/optim/lars.py`` (class ``Lars``), written here from the formulas:

.. math::
    \tau = c\,\frac{\|w\|}{\|g\| + \beta\|w\| + \epsilon} \quad (\tau = 1 \text{ if } \|w\| = 0
    \text{ or } \|g\| = 0), \qquad
    \tilde g = (g + \beta w)\,\tau, \qquad
    b \leftarrow \mu b + (1 - d)\,\tilde g, \qquad w \leftarrow w - \eta\, b

with trust coefficient ``c`` (0.001), weight decay ``beta`` folded into the gradient (L2, as in the
paper) and, for LARC (``trust_clip=True``), ``tau <- min(tau / eta, 1)``. As in timm the ratio is
only applied where ``weight_decay != 0`` or ``always_adapt``; ``adapt_1d=False`` (our addition, used
by the spectra factory) additionally exempts 0-D/1-D tensors such as biases and norm weights.
Norms are of full tensors and stay on the device (no host syncs).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch.optim import Optimizer

from ..errors import ConfigError

__all__ = ["Lars"]


class Lars(Optimizer):
    """LARS / LARC optimizer (timm semantics).

    Args:
        params: parameters or param groups.
        lr: learning rate (LARS runs are typically tuned with lr around 1 and ``trust_coeff=0.001``).
        momentum, dampening, nesterov: momentum options (torch ``SGD`` semantics).
        weight_decay: L2 penalty folded into the gradient before the trust ratio.
        trust_coeff: the trust coefficient ``c``.
        eps: denominator epsilon.
        trust_clip: LARC clipping ``min(tau / lr, 1)``.
        always_adapt: apply the trust ratio even where weight decay is 0.
        adapt_1d: apply it to 0-D/1-D tensors too (timm: yes).

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> opt = Lars(model.parameters(), lr=1.0, momentum=0.9, always_adapt=True)
        >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
    """

    def __init__(self, params: Iterable, lr: float = 1.0, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, trust_coeff: float = 0.001,
                 eps: float = 1e-8, trust_clip: bool = False, always_adapt: bool = False,
                 adapt_1d: bool = True) -> None:
        if lr < 0.0:
            raise ConfigError(f"invalid LARS lr: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"invalid LARS momentum: {momentum}")
        if weight_decay < 0.0:
            raise ConfigError(f"invalid LARS weight_decay: {weight_decay}")
        if trust_coeff <= 0.0:
            raise ConfigError(f"invalid LARS trust_coeff: {trust_coeff}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError("LARS nesterov momentum needs momentum > 0 and dampening = 0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, trust_coeff=trust_coeff, eps=eps, trust_clip=trust_clip,
                        always_adapt=always_adapt, adapt_1d=adapt_1d)
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("adapt_1d", True)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                grad = p.grad
                adapt = (wd != 0 or group["always_adapt"]) and (group["adapt_1d"] or p.ndim >= 2)
                if adapt:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    ratio = group["trust_coeff"] * w_norm / (g_norm + w_norm * wd + group["eps"])
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    if group["trust_clip"]:
                        ratio = torch.clamp(ratio / lr, max=1.0)
                    grad = grad.add(p, alpha=wd).mul_(ratio)
                elif wd != 0:
                    grad = grad.add(p, alpha=wd)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = grad.detach().clone()
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1.0 - group["dampening"])
                    grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.add_(grad, alpha=-lr)
        return loss
