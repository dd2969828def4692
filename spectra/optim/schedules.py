"""Learning-rate schedules as pure factor functions, plus torch ``LambdaLR`` wrappers.

Every schedule here is a function ``factor(step) -> float`` giving the multiplier of the peak LR at
optimizer step ``step`` (0-based: the number of steps already taken). Wrapped in
:class:`torch.optim.lr_scheduler.LambdaLR`, the factor multiplies each group's *initial* LR, which
already includes the layer multiplier of an LR map, so per-layer ratios are kept. Schedulers built
here are meant to be stepped once per optimizer step.

* Phase-adaptive cosine (:func:`phase_cosine`): linear warmup then cosine decay to ``min_ratio``,
  the global schedule inside :class:`spectra.optim.DALS` (reconstruction, see
  ``spectra/optim/dals.py``).
* Slanted triangular LR (:func:`stlr`): Howard & Ruder, "Universal Language Model Fine-tuning for
  Text Classification" (ULMFiT), ACL 2018, arXiv:1801.06146, eq. 3.
* Step decay (:func:`step_decay`): factor ``gamma`` at each milestone fraction of training.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..errors import ConfigError

__all__ = [
    "phase_cosine",
    "stlr",
    "step_decay",
    "warmup_steps",
    "lambda_scheduler",
    "cosine_scheduler",
    "stlr_scheduler",
    "step_scheduler",
]


def warmup_steps(warmup: int | float, total_steps: int) -> int:
    """Warmup length in steps: an ``int`` is a step count, a ``float`` a fraction of ``total_steps``.

    >>> warmup_steps(0.05, 1000), warmup_steps(30, 1000)
    (50, 30)
    """
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)):
        raise ConfigError(f"warmup must be an int (steps) or a float fraction, got {warmup!r}")
    if isinstance(warmup, float):
        if not 0.0 <= warmup <= 1.0:
            raise ConfigError(f"warmup as a fraction must lie in [0, 1], got {warmup}")
        return int(round(warmup * total_steps))
    if warmup < 0:
        raise ConfigError(f"warmup steps must be >= 0, got {warmup}")
    return int(warmup)


def phase_cosine(step: int, *, total_steps: int, warmup: int = 0, min_ratio: float = 0.0) -> float:
    r"""Linear warmup then half-cosine decay; the factor at 0-based ``step``.

    .. math::
        f(t) = \frac{t+1}{W} \quad (t < W), \qquad
        f(t) = r + \tfrac12 (1 - r)\bigl(1 + \cos(\pi\,\min(1, \tfrac{t - W}{\max(1, T - W)}))\bigr)

    with ``W = warmup`` (steps), ``T = total_steps`` and ``r = min_ratio``. Past ``T`` the factor
    stays at ``r``.

    >>> [round(phase_cosine(t, total_steps=10, warmup=2, min_ratio=0.1), 3) for t in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))


def stlr(step: int, *, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    r"""ULMFiT slanted triangular learning rate (Howard & Ruder 2018, eq. 3), as a factor of eta_max.

    .. math::
        \mathrm{cut} = \lfloor T \cdot \mathrm{cut\_frac} \rfloor, \quad
        p = t / \mathrm{cut} \ (t < \mathrm{cut}), \quad
        p = 1 - \frac{t - \mathrm{cut}}{\mathrm{cut}\,(1/\mathrm{cut\_frac} - 1)} \ (\text{else}), \quad
        f = \frac{1 + p\,(\mathrm{ratio} - 1)}{\mathrm{ratio}}

    The paper's defaults are ``cut_frac=0.1, ratio=32``. ``p`` is clamped to [0, 1].

    >>> [round(stlr(t, total_steps=100), 4) for t in (0, 5, 10, 100)]
    [0.0312, 0.5156, 1.0, 0.0312]
    """
    cut = max(1, math.floor(total_steps * cut_frac))
    if step < cut:
        p = step / cut
    else:
        p = 1.0 - (step - cut) / max(1e-12, cut * (1.0 / cut_frac - 1.0))
    p = min(1.0, max(0.0, p))
    return (1.0 + p * (ratio - 1.0)) / ratio


def step_decay(step: int, *, total_steps: int, milestones: Sequence[float] = (0.5, 0.75),
               gamma: float = 0.1) -> float:
    """Multiply by ``gamma`` at each milestone, given as fractions of ``total_steps``.

    >>> [step_decay(t, total_steps=100) for t in (0, 49, 50, 75)]
    [1.0, 1.0, 0.1, 0.010000000000000002]
    """
    passed = sum(1 for m in milestones if step >= m * total_steps)
    return gamma ** passed


def lambda_scheduler(optimizer: Optimizer, factor: Callable[[int], float]) -> LambdaLR:
    """A :class:`LambdaLR` applying ``factor(step)`` to every group's initial LR."""
    return LambdaLR(optimizer, lr_lambda=factor)


def _check_total(total_steps: int) -> None:
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
        raise ConfigError(f"total_steps must be a positive int, got {total_steps!r}")


def cosine_scheduler(optimizer: Optimizer, *, total_steps: int, warmup: int | float = 0,
                     min_ratio: float = 0.0) -> LambdaLR:
    """Warmup + cosine decay (:func:`phase_cosine`) as a per-step scheduler."""
    _check_total(total_steps)
    w = warmup_steps(warmup, total_steps)
    return lambda_scheduler(optimizer, partial(phase_cosine, total_steps=total_steps, warmup=w,
                                               min_ratio=min_ratio))


def stlr_scheduler(optimizer: Optimizer, *, total_steps: int, cut_frac: float = 0.1,
                   ratio: float = 32.0) -> LambdaLR:
    """ULMFiT STLR (:func:`stlr`) as a per-step scheduler."""
    _check_total(total_steps)
    if not 0.0 < cut_frac < 1.0:
        raise ConfigError(f"cut_frac must lie in (0, 1), got {cut_frac}")
    if ratio < 1.0:
        raise ConfigError(f"ratio must be >= 1, got {ratio}")
    return lambda_scheduler(optimizer, partial(stlr, total_steps=total_steps, cut_frac=cut_frac, ratio=ratio))


def step_scheduler(optimizer: Optimizer, *, total_steps: int, milestones: Sequence[float] = (0.5, 0.75),
                   gamma: float = 0.1) -> LambdaLR:
    """Step decay (:func:`step_decay`) as a per-step scheduler."""
    _check_total(total_steps)
    if any(not 0.0 < m < 1.0 for m in milestones):
        raise ConfigError(f"milestones are fractions of training in (0, 1), got {list(milestones)}")
    return lambda_scheduler(optimizer, partial(step_decay, total_steps=total_steps,
                                               milestones=tuple(milestones), gamma=gamma))
