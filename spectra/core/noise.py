"""Gradient noise: unbiased two-batch estimators of |G|^2 and tr(Sigma), and the simple noise scale.

Setting (McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training",
arXiv 1812.06162, appendix A.1): per-example gradients g_i have mean G and covariance Sigma, so the
gradient of a batch of B examples, G_B, satisfies

    E |G_B|^2 = |G|^2 + tr(Sigma) / B.

Measuring |G_B|^2 at two batch sizes b < B on the same parameters gives unbiased estimates

    |G|^2     ~ (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(Sigma) ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

and the simple noise scale B_simple = tr(Sigma) / |G|^2 (the Hessian-free proxy of the critical batch
size). A single estimate of |G|^2 is often negative, so numerator and denominator are smoothed
separately (a running mean or a bias-corrected EMA) and only then divided, as in gpt-neox and nanoGNS.
Per layer the estimators apply to that layer's parameters alone; the global value sums numerators and
denominators over layers first (it is not the mean of the per-layer ratios).

Every estimate carries confidence intervals from its spread over rounds (independent batches at the
same parameters; :func:`_noise_compute`, :mod:`spectra.core.intervals`): Student intervals for
|G|^2 and tr(Sigma), Fieller's interval for their ratio B_simple, and a ``reliable`` flag that is
False when the numbers are too uncertain to act on.

The module is torchmetrics-shaped: pure ``_noise_update`` / ``_noise_compute`` functions over a
:class:`NoiseState`, wrapped by the small stateful :class:`GradientNoise` accumulator that a training
loop can update every step. :func:`gradient_norms` and :func:`mean_abs_difference` (re-exported from
:mod:`spectra.core.gradstats`) give the norm statistics of a gradient matrix of Li, Li, Zhou 2025.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch

from .gradstats import GradNorms, gradient_norms, mean_abs_difference
from .intervals import Moments, fieller_interval, mean_interval

__all__ = [
    "unbiased_estimates",
    "NoiseState",
    "NoiseStats",
    "NoiseEstimate",
    "GradNorms",
    "GradientNoise",
    "RELIABLE_SPAN",
    "reliability",
    "gradient_norms",
    "adam_noise_estimates",
    "adam_noise_coefficient",
    "mean_abs_difference",
    "_noise_update",
    "_noise_add",
    "_noise_compute",
]

NAN = float("nan")


def unbiased_estimates(small_sq: float, big_sq: float, b_small: float, b_big: float) -> tuple[float, float]:
    """Unbiased ``(|G|^2, tr(Sigma))`` from squared gradient norms at two batch sizes (McCandlish A.1).

    ``small_sq`` is |G_b|^2 at batch size ``b_small`` (average it over several small batches to
    lower the variance; the estimators are linear, so they stay unbiased), ``big_sq`` is |G_B|^2 at
    ``b_big`` > ``b_small``. With per-example gradients (b = 1) this is the Bessel correction.
    Works elementwise on tensors of squared norms too.

    >>> unbiased_estimates(small_sq=5.0, big_sq=2.0, b_small=1, b_big=4)
    (1.0, 4.0)
    """
    if not b_big > b_small > 0:
        raise ValueError(f"need b_big > b_small > 0, got b_small={b_small}, b_big={b_big}")
    grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace_sigma = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq, trace_sigma


#: A B_simple interval wider than this factor (hi / lo) is too wide to act on: with the noise rule's
#: square-root mapping the learning-rate multiplier would be uncertain by more than a factor of 2.
RELIABLE_SPAN = 4.0


@dataclass(frozen=True)
class NoiseState:
    """Running moments of the per-round estimates, per group (a layer) and for the whole model.

    Round r gives, per group, g_r = its |G|^2 estimate and t_r = its tr(Sigma) estimate (sums over
    the group's keys); :class:`~spectra.core.intervals.Moments` keeps their weighted means and
    co-moments. Weights are 1 (``beta = 1``: plain mean over rounds) or beta^(R-r) (``beta < 1``:
    the bias-corrected EMA, weights normalised to sum to one); ``weight`` = W1 = sum w,
    ``weight_sq`` = W2 = sum w^2. A group missing from a round contributes (0, 0) to it: its
    gradient was zero there. Memory is constant in the number of rounds.
    """

    groups: Mapping[str, Moments] = field(default_factory=dict)
    total: Moments = field(default_factory=Moments)
    weight: float = 0.0
    weight_sq: float = 0.0
    rounds: int = 0
    beta: float = 1.0


@dataclass(frozen=True)
class NoiseStats:
    """Estimates for one group (or the whole model): B_simple = tr(Sigma)/|G|^2, snr = |G|^2/tr(Sigma).

    ``b_simple`` and ``snr`` are NaN when the mean |G|^2 or tr(Sigma) is not positive (the noise
    swamps the signal at this sample size), with ``status`` "failed" and a ``reason``.

    ``g2_ci``, ``trace_sigma_ci``, ``b_simple_ci`` are ``level`` confidence intervals from the spread
    over rounds (see :func:`_noise_compute`), None when there is no spread to use (one round) or,
    for B_simple, when the interval is unbounded. ``reliable`` is False, with ``reliable_reason``,
    when the numbers are too uncertain to act on: not measured, fewer than two rounds, a |G|^2
    interval reaching 0 or below, or a B_simple interval wider than :data:`RELIABLE_SPAN`.
    """

    grad_sq: float
    trace_sigma: float
    b_simple: float
    snr: float
    status: str = "success"
    reason: str = ""
    g2_ci: tuple[float, float] | None = None
    trace_sigma_ci: tuple[float, float] | None = None
    b_simple_ci: tuple[float, float] | None = None
    reliable: bool = False
    reliable_reason: str = ""


@dataclass(frozen=True)
class NoiseEstimate:
    """What :func:`_noise_compute` returns: per-group stats and the global (summed) stats."""

    groups: Mapping[str, NoiseStats]
    total: NoiseStats
    rounds: int


def _point(grad_sq: float, trace_sigma: float) -> NoiseStats:
    if not (math.isfinite(grad_sq) and math.isfinite(trace_sigma)):
        return NoiseStats(grad_sq, trace_sigma, NAN, NAN, "failed", "no estimate (no rounds recorded)")
    if grad_sq <= 0.0:
        return NoiseStats(grad_sq, trace_sigma, NAN, NAN, "failed",
                          "|G|^2 estimate is not positive: noise dominates, measure more batches")
    if trace_sigma <= 0.0:
        return NoiseStats(grad_sq, trace_sigma, NAN, NAN, "failed",
                          "tr(Sigma) estimate is not positive: too few batches to see the noise")
    return NoiseStats(grad_sq, trace_sigma, trace_sigma / grad_sq, grad_sq / trace_sigma)


def _g(x: float) -> str:
    return f"{x:.3g}"


def reliability(st: NoiseStats, rounds: int) -> tuple[bool, str]:
    """``(reliable, reason)`` for stats whose intervals are filled in (rules in :class:`NoiseStats`)."""
    if st.status != "success":
        return False, st.reason or st.status
    if rounds < 2 or st.g2_ci is None:
        return False, "one round: no spread over rounds to put an interval on; measure 2 or more batches"
    lo, hi = st.g2_ci
    if lo <= 0.0 or st.b_simple_ci is None:
        return False, (f"|G|^2 interval [{_g(lo)}, {_g(hi)}] reaches 0: the gradient signal is not resolved; "
                       "measure more batches")
    lo, hi = st.b_simple_ci
    if not lo > 0.0 or hi > RELIABLE_SPAN * lo:
        span = f"a factor {hi / lo:.1f}" if lo > 0 else "from 0"
        return False, (f"B_simple interval [{_g(lo)}, {_g(hi)}] spans {span} (> {RELIABLE_SPAN:g}); "
                       "measure more batches")
    return True, ""


def _stats(m: Moments, state: NoiseState, level: float) -> NoiseStats:
    st = _point(m.mean_x, m.mean_y)
    df = state.weight**2 / state.weight_sq - 1.0 if state.weight_sq > 0 else 0.0
    v_g, v_t, cov = m.mean_variances(state.weight, state.weight_sq)
    b_ci = fieller_interval(m.mean_y, m.mean_x, v_t, v_g, cov, df, level) if m.mean_x > 0 else None
    if b_ci is not None:
        b_ci = (max(b_ci[0], 0.0), b_ci[1])  # tr(Sigma) >= 0: the true ratio is never negative
    st = replace(st, g2_ci=mean_interval(m.mean_x, v_g, df, level),
                 trace_sigma_ci=mean_interval(m.mean_y, v_t, df, level), b_simple_ci=b_ci)
    ok, why = reliability(st, state.rounds)
    return replace(st, reliable=ok, reliable_reason=why)


def _noise_update(
    state: NoiseState,
    small_sq: Mapping[str, float],
    big_sq: Mapping[str, float],
    b_small: float,
    b_big: float,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> NoiseState:
    """Fold one round (one big batch made of small batches, same parameters) into ``state``.

    ``small_sq[k]`` is the mean over the small batches of |G_b|^2 for key k (a parameter), ``big_sq[k]``
    the squared norm of their mean. Keys are summed into ``groups`` (group -> keys; by default every
    key is its own group) and every key into the total. Pure: returns a new state.
    """
    estimates = {k: unbiased_estimates(float(small_sq[k]), float(big_sq[k]), b_small, b_big) for k in small_sq}
    return _noise_add(state, estimates, groups)


def _noise_add(state: NoiseState, estimates: Mapping[str, tuple[float, float]],
               groups: Mapping[str, Sequence[str]] | None = None) -> NoiseState:
    """Fold one round of per-key ``(|G|^2, tr(Sigma))`` estimates into ``state`` (see :func:`_noise_update`)."""
    owner = {k: k for k in estimates} if groups is None else {k: g for g, keys in groups.items() for k in keys}
    per_group: dict[str, list[float]] = {}
    total = [0.0, 0.0]
    for key, (g, t) in estimates.items():
        total[0] += g
        total[1] += t
        name = owner.get(key)
        if name is not None:
            acc = per_group.setdefault(name, [0.0, 0.0])
            acc[0] += g
            acc[1] += t
    beta = state.beta
    w1 = state.weight * beta + 1.0
    w2 = state.weight_sq * beta * beta + 1.0
    out = {name: m.decayed(beta) for name, m in state.groups.items()}
    for name in set(out) | set(per_group):
        g, t = per_group.get(name, (0.0, 0.0))
        out[name] = out.get(name, Moments()).add(g, t, w1)
    return replace(state, groups=out, total=state.total.decayed(beta).add(total[0], total[1], w1),
                   weight=w1, weight_sq=w2, rounds=state.rounds + 1)


def _noise_compute(state: NoiseState, names: Sequence[str] | None = None, *, level: float = 0.95) -> NoiseEstimate:
    """Per-group and global estimates, with intervals from the spread over rounds.

    Point estimates are the (weighted) means over rounds of |G|^2 and tr(Sigma), numerator and
    denominator separately, then B_simple = mean tr(Sigma) / mean |G|^2. Intervals at ``level``:

    * |G|^2 and tr(Sigma): mean -+ t_{n_eff - 1} SE, SE^2 = C / (W1 - W2/W1) * W2 / W1^2, i.e. s^2/R
      for a plain mean over R rounds (the jackknife variance of a mean);
    * B_simple: Fieller's interval for the ratio of the two means (their covariance included),
      unbounded (None) when the |G|^2 mean is not significantly above zero; clipped below at 0.

    Both assume independent rounds (different batches at the same parameters). ``names`` lists the
    groups to report; one never updated is ``skipped``.
    """
    names = list(state.groups) if names is None else list(names)
    out: dict[str, NoiseStats] = {}
    for name in names:
        m = state.groups.get(name)
        if m is None or state.rounds == 0:
            out[name] = NoiseStats(NAN, NAN, NAN, NAN, "skipped", "no gradient recorded",
                                   reliable=False, reliable_reason="no gradient recorded")
        else:
            out[name] = _stats(m, state, level)
    total = _stats(state.total, state, level) if state.rounds else NoiseStats(
        NAN, NAN, NAN, NAN, "failed", "no estimate (no rounds recorded)", reliable=False,
        reliable_reason="no rounds recorded")
    return NoiseEstimate(out, total, state.rounds)


def _floats(values: Mapping[str, Any]) -> dict[str, float]:
    """Floats from floats or 0-d tensors, with one device synchronisation for all tensors."""
    keys = list(values)
    tensors = [k for k in keys if isinstance(values[k], torch.Tensor)]
    out = {k: float(values[k]) for k in keys if k not in tensors}
    if tensors:
        stacked = torch.stack([values[k].detach().reshape(()).to(torch.float64) for k in tensors]).tolist()
        out.update(zip(tensors, stacked))
    return {k: out[k] for k in keys}


class GradientNoise:
    """Running gradient-noise estimates with confidence intervals, usable inside any training loop.

    The primitive is :meth:`update`, one round per call: for each key (a parameter or a layer) the
    mean squared norm of the small-batch gradients, ``small_sq`` (batch size ``b_small``), and the
    squared norm of the big-batch gradient, ``big_sq`` (their mean, batch size ``b_big``), all taken
    at the same parameters. It fits wherever two batch sizes meet (McCandlish et al. 2018, app. A):

    * gradient accumulation: the k micro-step gradients g_j of one optimizer step (of a *mean*-reduced
      loss over b examples each; undo a 1/k loss scaling first): ``small_sq = mean_j |g_j|^2``,
      ``big_sq = |mean_j g_j|^2``, ``b_small = b``, ``b_big = k b``;
    * data parallel: on each of n ranks the local gradient before the all-reduce (b examples) and the
      averaged one after it: ``small_sq = all_reduce(|g_local|^2) / n``, ``big_sq = |g_avg|^2``,
      ``b_small = b``, ``b_big = n b`` (both at once: ``b_small`` = one rank's micro-batch);
    * a measurement loop: :meth:`accumulate` small-batch gradients, then :meth:`close_round`.

    Values may be floats or 0-d tensors (read with one device synchronisation per round). Rounds
    are combined by a plain mean (``beta=1``) or a bias-corrected EMA (``beta<1``) of numerator and
    denominator separately; :meth:`compute` adds ``level`` intervals from the spread over rounds
    (:func:`_noise_compute`). Feeding consecutive optimizer steps, whose parameters differ, is the
    approximation gpt-neox makes: biased upward by the drift of G, and the intervals then describe
    sampling spread only.

    >>> import torch
    >>> noise = GradientNoise(accumulate=2)
    >>> noise.accumulate({"w": torch.tensor([3.0, 1.0])}, batch_size=1)
    >>> noise.accumulate({"w": torch.tensor([1.0, 1.0])}, batch_size=1)
    >>> est = noise.compute()
    >>> est.total.grad_sq, est.total.trace_sigma  # |mean|^2 = 5, minus the Bessel-corrected noise 2/2
    (4.0, 2.0)
    >>> noise.update({"w": 6.0}, {"w": 5.0}, b_small=1, b_big=2)  # the same round, given as norms
    >>> noise.compute().total.g2_ci  # two identical rounds: no spread
    (4.0, 4.0)
    """

    def __init__(self, *, accumulate: int | None = None, beta: float = 1.0,
                 groups: Mapping[str, Sequence[str]] | None = None, level: float = 0.95) -> None:
        if accumulate is not None and int(accumulate) < 2:
            raise ValueError(f"accumulate must be >= 2 (two batch sizes are needed), got {accumulate}")
        if not 0.0 < float(beta) <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        self.accumulate_every = int(accumulate) if accumulate is not None else None
        self.groups = {g: tuple(keys) for g, keys in groups.items()} if groups is not None else None
        self.level = float(level)
        self.state = NoiseState(beta=float(beta))
        self._reset_round()

    def _reset_round(self) -> None:
        self._sum: dict[str, torch.Tensor] = {}
        self._sq: dict[str, torch.Tensor] = {}
        self._count = 0
        self._batch_size: int | None = None

    def update(self, small_sq: Mapping[str, Any], big_sq: Mapping[str, Any], b_small: float, b_big: float) -> None:
        """Fold one round of squared norms per key (see the class docstring for where they come from)."""
        missing = [k for k in small_sq if k not in big_sq]
        if missing:
            raise ValueError(f"big_sq has no value for {missing[:3]}")
        small, big = _floats(small_sq), _floats({k: big_sq[k] for k in small_sq})
        self.state = _noise_update(self.state, small, big, b_small, b_big, self.groups)

    def accumulate(self, grads: Mapping[str, torch.Tensor] | torch.nn.Module, batch_size: int, *,
                   stacked: bool = False) -> None:
        """Add small-batch gradients (``{name: grad}`` or a module's ``.grad``) to the open round.

        With ``stacked=True`` each tensor's first dimension indexes several small batches at once
        (per-example gradients from ``torch.func.vmap``). With ``accumulate=k`` at construction the
        round closes by itself after k small batches.
        """
        if isinstance(grads, torch.nn.Module):
            grads = {n: p.grad for n, p in grads.named_parameters() if p.grad is not None}
        if self._batch_size is not None and batch_size != self._batch_size:
            raise ValueError(f"batch_size changed within a round ({self._batch_size} -> {batch_size})")
        self._batch_size = int(batch_size)
        count = None
        for name, g in grads.items():
            g = g.detach().to(torch.float64)
            if not stacked:
                g = g.unsqueeze(0)
            count = g.shape[0]
            sq, total = g.square().reshape(count, -1).sum(1).sum(), g.sum(0)
            self._sq[name] = self._sq[name] + sq if name in self._sq else sq
            self._sum[name] = self._sum[name] + total if name in self._sum else total
        self._count += count if count is not None else (0 if stacked else 1)
        if self.accumulate_every is not None and self._count >= self.accumulate_every:
            self.close_round()

    def close_round(self) -> dict[str, torch.Tensor]:
        """Close the open round: feed it to :meth:`update` and return its big-batch (mean) gradients.

        Keys whose gradient was exactly zero in every small batch (parameters the loss did not use)
        are left out. A round needs at least two small batches.
        """
        n, b = self._count, self._batch_size
        if n < 2:
            raise ValueError(f"a round needs at least two small batches, got {n}")
        means = {k: v / n for k, v in self._sum.items()}
        sq = _floats(self._sq)
        small = {k: v / n for k, v in sq.items() if v > 0.0}
        big = {k: means[k].square().sum() for k in small}
        self._reset_round()
        self.update(small, big, b, n * b)
        return means

    def discard_round(self) -> None:
        """Drop the open round's small batches (after a failure half-way through it)."""
        self._reset_round()

    def compute(self) -> NoiseEstimate:
        """Current per-group and global estimates with intervals (an open round is not included)."""
        names = list(self.groups) if self.groups is not None else None
        return _noise_compute(self.state, names, level=self.level)

    def reset(self) -> None:
        self.state = NoiseState(beta=self.state.beta)
        self._reset_round()


# ------------------------------------------------------------------ optimizer-state proxy


def adam_noise_coefficient(beta1: float, step: int) -> float:
    """c_t = sum_k w_k^2 for the bias-corrected Adam first moment, w_k = (1-b1) b1^k / (1-b1^t).

    Closed form c_t = (1 - b1)(1 + b1^t) / ((1 + b1)(1 - b1^t)); it tends to (1-b1)/(1+b1).
    With i.i.d. batch gradients of covariance Sigma_B, Cov(m_hat) = c_t Sigma_B. (Our derivation.)

    >>> round(adam_noise_coefficient(0.9, 10**6), 6)
    0.052632
    """
    if step < 1:
        raise ValueError(f"optimizer step must be >= 1, got {step}")
    bt = beta1 ** step
    return (1.0 - beta1) * (1.0 + bt) / ((1.0 + beta1) * (1.0 - bt))


def adam_noise_estimates(exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, *, beta1: float, beta2: float,
                         step: int) -> tuple[float, float]:
    """Offline ``(|G|^2, tr(Sigma_B))`` proxy from Adam moments (a heuristic, not a paper's estimator).

    With m_hat = exp_avg/(1-b1^t), v_hat = exp_avg_sq/(1-b2^t) and stationary i.i.d. batch noise
    of covariance Sigma_B: E sum(v_hat) = |G|^2 + tr(Sigma_B) and E |m_hat|^2 = |G|^2 + c tr(Sigma_B)
    (c from :func:`adam_noise_coefficient`), so

        tr(Sigma_B) ~ (sum(v_hat) - |m_hat|^2) / (1 - c),   |G|^2 ~ |m_hat|^2 - c tr(Sigma_B).

    Sigma_B is the covariance of the *training-batch* gradient; multiply by the batch size for the
    per-example tr(Sigma). At step 1 (c = 1) both are NaN: one gradient cannot reveal its noise. Parameter drift over the ~1/(1-b2) steps in v_hat biases tr(Sigma_B)
    upward; L2 weight decay inside Adam, clipping and loss scaling distort both moments.
    """
    c = adam_noise_coefficient(beta1, step)
    if c >= 1.0:  # step 1: m_hat^2 = v_hat, one gradient carries no information about its noise
        return NAN, NAN
    m_hat = exp_avg.detach().to(torch.float64) / (1.0 - beta1 ** step)
    v_hat = exp_avg_sq.detach().to(torch.float64) / (1.0 - beta2 ** step)
    m_sq = float(m_hat.square().sum())
    trace = (float(v_hat.sum()) - m_sq) / (1.0 - c)
    return m_sq - c * trace, trace
