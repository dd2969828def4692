"""LLR-style refits: re-analyse the live model, re-prescribe, ramp each group's LR multiplier.

Refits follow LLR (He et al. 2026, arXiv 2605.22297; research notes sections 1 and 10): every
``refit_every`` optimizer steps, while ``step <= refit_until * total_steps`` (default the first 20%
of training), the live model is analysed (:func:`spectra.analyze`), an LR map is prescribed
(:func:`spectra.prescribe.prescribe` with ``normalize="mean"`` by default) and each param group's
multiplier ramps linearly from its current value m0 to the new target m1 over ``ramp_steps`` steps:
``m(t) = m0 + (m1 - m0) * min(1, (t - t_refit) / ramp_steps)``. A multiplier change by a factor r
scales the group's ``lr``, ``initial_lr`` and the scheduler's ``base_lrs`` entry by r, so any
scheduler keeps composing with it (the convention: ``group["lr"]`` already includes the multiplier).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["Refitter", "set_multiplier", "group_names"]

log = logging.getLogger(__name__)


def group_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[str]]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [list(g.get("param_names") or [by_id.get(id(p), "") for p in g["params"]]) for g in optimizer.param_groups]


def set_multiplier(optimizer: torch.optim.Optimizer, scheduler: Any, index: int, multiplier: float) -> None:
    """Give param group ``index`` the LR multiplier ``multiplier``, rescaling every stored LR with it."""
    group = optimizer.param_groups[index]
    current = float(group.get("lr_multiplier", 1.0))
    if current <= 0.0:  # a frozen group stays frozen
        return
    factor = multiplier / current
    for key in ("lr", "initial_lr", "base_lr", "max_lr"):
        if key in group and isinstance(group[key], (int, float)):
            group[key] = group[key] * factor
    base_lrs = getattr(scheduler, "base_lrs", None)
    if base_lrs is not None and index < len(base_lrs):
        base_lrs[index] = base_lrs[index] * factor
    group["lr_multiplier"] = multiplier


class Refitter:
    """LLR-style periodic re-prescription with linear ramps (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, *, every: int,
                 until_step: int, ramp_steps: int, method: str, normalize: bool = True,
                 options: Mapping[str, Any] | None = None) -> None:
        if every < 1:
            raise ConfigError(f"refit_every must be >= 1 step, got {every}")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.every, self.until_step, self.ramp_steps = every, until_step, max(1, ramp_steps)
        self.method, self.normalize, self.options = method, normalize, dict(options or {})
        self.names = group_names(optimizer, model)
        self.start: list[float] = []
        self.target: list[float] = []
        self.ramp_from = 0
        self.count = 0

    def targets(self) -> list[float]:
        """One multiplier per param group from a fresh analysis of the live model."""
        from ..prescribe import prescribe

        lrmap = prescribe(self.model, self.method, normalize="mean" if self.normalize else "none", **self.options)
        out = []
        for names in self.names:
            values = [lrmap.multiplier(n) for n in names] or [float(lrmap.default)]
            if max(values) - min(values) > 1e-12:
                log.warning("a param group mixes layers with different multipliers (%s...); using their mean", names[0])
            out.append(sum(values) / len(values))
        return out

    def step(self, step: int) -> None:
        """Call with the number of optimizer steps taken so far (0 before the first)."""
        if step <= self.until_step and step % self.every == 0:
            self.start = [float(g.get("lr_multiplier", 1.0)) for g in self.optimizer.param_groups]
            self.target = self.targets()
            self.ramp_from = step
            self.count += 1
            log.info("refit %d at step %d: multipliers %s", self.count, step,
                     ", ".join(f"{t:.3g}" for t in self.target))
        if self.target:
            frac = min(1.0, (step - self.ramp_from + 1) / self.ramp_steps)
            for i, (m0, m1) in enumerate(zip(self.start, self.target)):
                set_multiplier(self.optimizer, self.scheduler, i, m0 + (m1 - m0) * frac)
            if frac >= 1.0:
                self.target = []

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "target": self.target, "ramp_from": self.ramp_from, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.start, self.target = list(state["start"]), list(state["target"])
        self.ramp_from, self.count = int(state["ramp_from"]), int(state["count"])
