r"""Lookahead, and the small base class for optimizers that wrap another optimizer.

Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019,
arXiv:1907.08610 (Algorithm 1). Slow weights phi start at the initial parameters; the wrapped
("fast") optimizer takes ``k`` steps, then

.. math::
    \phi \leftarrow \phi + \alpha\,(\theta - \phi), \qquad \theta \leftarrow \phi

The paper uses k = 5, alpha = 0.5 (timm's ``Lookahead`` uses k = 6 and initializes phi at the first
synchronization instead; we follow the paper).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import ConfigError

__all__ = ["OptimizerWrapper", "Lookahead"]


class OptimizerWrapper(Optimizer):
    """An optimizer that shares ``param_groups`` with a wrapped ``base`` optimizer.

    Both see the very same group dicts, so an LR scheduler or :func:`spectra.optim.apply_lrmap`
    acting on the wrapper acts on the base too. The wrapper keeps its own per-parameter ``state``
    (for example slow weights); :meth:`state_dict` stores it next to the base optimizer's state, and
    :meth:`load_state_dict` restores both and re-shares the groups.
    """

    def __init__(self, base: Optimizer, defaults: dict[str, Any]) -> None:
        if not isinstance(base, Optimizer):
            raise ConfigError(f"{type(self).__name__} wraps a torch optimizer, got {type(base).__name__}")
        self.base = base
        # Optimizer.__init__ runs add_param_group on each of base's group dicts: the dicts are
        # shared (defaults are set on them in place); the list is replaced by base's just below.
        super().__init__(base.param_groups, dict(defaults))
        self.param_groups = base.param_groups
        self._wrapping = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not getattr(self, "_wrapping", False):  # during __init__
            super().add_param_group(param_group)
            return
        self.base.add_param_group(param_group)
        for key, value in self.defaults.items():
            self.base.param_groups[-1].setdefault(key, value)

    def state_dict(self) -> dict[str, Any]:
        own = super().state_dict()
        return {"state": own["state"], "param_groups": own["param_groups"],
                "base_state": self.base.state_dict()["state"]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "base_state" not in state_dict:
            raise ConfigError(f"not a {type(self).__name__} state dict (no 'base_state' entry)")
        groups = state_dict["param_groups"]
        self.base.load_state_dict({"state": state_dict["base_state"], "param_groups": groups})
        super().load_state_dict({"state": state_dict["state"], "param_groups": groups})
        self.param_groups = self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)


class Lookahead(OptimizerWrapper):
    """Lookahead over any torch optimizer (k fast steps, then interpolate towards slow weights).

    Args:
        base: the fast optimizer (e.g. ``torch.optim.Adam``).
        k: fast steps between synchronizations (paper: 5).
        alpha: slow-weight step size (paper: 0.5).

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> opt = Lookahead(torch.optim.Adam(model.parameters(), lr=1e-3), k=5, alpha=0.5)
        >>> model(torch.ones(1, 3)).sum().backward(); opt.step()
    """

    def __init__(self, base: Optimizer, *, k: int = 5, alpha: float = 0.5) -> None:
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"Lookahead k must be a positive int, got {k!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"Lookahead alpha must lie in [0, 1], got {alpha}")
        super().__init__(base, dict(lookahead_k=k, lookahead_alpha=alpha, lookahead_step=0))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:  # phi_0 = theta_0, taken before the first fast step
            for p in group["params"]:
                if "lookahead_slow" not in self.state[p]:
                    self.state[p]["lookahead_slow"] = p.detach().clone()
        if closure is not None:
            with torch.enable_grad():
                loss = self.base.step(closure)
        else:
            loss = self.base.step()
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["lookahead_k"] != 0:
                continue
            for p in group["params"]:
                slow = self.state[p]["lookahead_slow"]
                slow.lerp_(p.detach(), group["lookahead_alpha"])
                p.copy_(slow)
        return loss
