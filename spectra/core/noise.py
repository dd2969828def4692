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

The module is torchmetrics-shaped: pure ``_noise_update`` / ``_noise_compute`` functions over a
:class:`NoiseState`, wrapped by the small stateful :class:`GradientNoise` accumulator that a training
loop can update every step. :func:`gradient_norms` gives the Frobenius, spectral and nuclear norms of a
gradient matrix (Li, Li, Zhou 2025, "What Happened in LLMs Layers when Trained for Fast vs. Slow
Thinking", arXiv 2410.23743) and the effective rank of its singular values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import torch

__all__ = [
    "unbiased_estimates",
    "NoiseState",
    "NoiseStats",
    "NoiseEstimate",
    "GradNorms",
    "GradientNoise",
    "gradient_norms",
    "adam_noise_estimates",
    "adam_noise_coefficient",
    "mean_abs_difference",
    "_noise_update",
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


@dataclass(frozen=True)
class NoiseState:
    """Smoothed sums behind the estimates, keyed by name (a parameter or a layer).

    Each estimate is kept as a weighted sum ``num`` with total weight ``den`` and read as num/den:
    with ``beta = 1`` that is the plain mean of all rounds, with ``beta < 1`` it is the
    bias-corrected EMA (weights beta^k normalised to sum to one, the 1/(1 - beta^t) correction).
    """

    grad_sq: Mapping[str, float] = field(default_factory=dict)
    trace_sigma: Mapping[str, float] = field(default_factory=dict)
    weight: float = 0.0
    rounds: int = 0
    beta: float = 1.0


@dataclass(frozen=True)
class NoiseStats:
    """Estimates for one key (or the whole model): B_simple = tr(Sigma)/|G|^2, snr = |G|^2/tr(Sigma).

    ``b_simple`` and ``snr`` are NaN when the smoothed |G|^2 or tr(Sigma) is not positive (the
    noise swamps the signal at this sample size), with ``status`` "failed" and a ``reason``.
    """

    grad_sq: float
    trace_sigma: float
    b_simple: float
    snr: float
    status: str = "success"
    reason: str = ""


@dataclass(frozen=True)
class NoiseEstimate:
    """What :func:`_noise_compute` returns: per-group stats and the global (summed) stats."""

    groups: Mapping[str, NoiseStats]
    total: NoiseStats
    rounds: int


def _stats(grad_sq: float, trace_sigma: float) -> NoiseStats:
    if not (math.isfinite(grad_sq) and math.isfinite(trace_sigma)):
        return NoiseStats(grad_sq, trace_sigma, NAN, NAN, "failed", "no estimate (no rounds recorded)")
    if grad_sq <= 0.0:
        return NoiseStats(grad_sq, trace_sigma, NAN, NAN, "failed",
                          "|G|^2 estimate is not positive: noise dominates, measure more batches")
    if trace_sigma <= 0.0:
        return NoiseStats(grad_sq, trace_sigma, NAN, NAN, "failed",
                          "tr(Sigma) estimate is not positive: too few batches to see the noise")
    return NoiseStats(grad_sq, trace_sigma, trace_sigma / grad_sq, grad_sq / trace_sigma)


def _noise_update(
    state: NoiseState,
    small_sq: Mapping[str, float],
    big_sq: Mapping[str, float],
    b_small: float,
    b_big: float,
) -> NoiseState:
    """Fold one round (one big batch made of small batches, same parameters) into ``state``.

    ``small_sq[k]`` is the mean over the small batches of |G_b|^2 for key k, ``big_sq[k]`` the
    squared norm of their mean. Pure: returns a new state.
    """
    beta = state.beta
    keys = set(state.grad_sq) | set(small_sq)
    grad_sq: dict[str, float] = {}
    trace: dict[str, float] = {}
    for key in keys:
        g_prev = state.grad_sq.get(key, 0.0) * beta
        t_prev = state.trace_sigma.get(key, 0.0) * beta
        if key in small_sq:
            g, t = unbiased_estimates(small_sq[key], big_sq[key], b_small, b_big)
            g_prev, t_prev = g_prev + g, t_prev + t
        grad_sq[key], trace[key] = g_prev, t_prev
    return replace(state, grad_sq=grad_sq, trace_sigma=trace, weight=state.weight * beta + 1.0,
                   rounds=state.rounds + 1)


def _noise_compute(state: NoiseState, groups: Mapping[str, Sequence[str]] | None = None) -> NoiseEstimate:
    """Per-group and global estimates from ``state``: sum numerators and denominators, then divide.

    ``groups`` maps a group name (a layer) to the keys it sums; by default every key is a group.
    The global stats sum over every key in the state.
    """
    if groups is None:
        groups = {key: (key,) for key in state.grad_sq}
    w = state.weight if state.weight > 0 else NAN
    out: dict[str, NoiseStats] = {}
    for name, keys in groups.items():
        present = [k for k in keys if k in state.grad_sq]
        if not present:
            out[name] = NoiseStats(NAN, NAN, NAN, NAN, "skipped", "no gradient recorded")
            continue
        g = sum(state.grad_sq[k] for k in present) / w
        t = sum(state.trace_sigma[k] for k in present) / w
        out[name] = _stats(g, t)
    total = _stats(sum(state.grad_sq.values(), 0.0) / w, sum(state.trace_sigma.values(), 0.0) / w)
    return NoiseEstimate(out, total, state.rounds)


class GradientNoise:
    """Running gradient-noise estimates usable inside any training loop.

    Each :meth:`update` records one small-batch gradient (of a mean-reduced loss over
    ``batch_size`` examples). Every ``accumulate`` updates close a round: the small batches' mean
    squared norm and the squared norm of their mean feed the two-batch estimators with
    b = batch_size and B = accumulate * batch_size. Rounds are combined by a plain mean
    (``beta=1``) or a bias-corrected EMA of numerator and denominator separately (``beta<1``).

    Within one round the parameters should not change (micro-batches of one accumulation step).
    Feeding consecutive optimizer steps instead is the approximation gpt-neox makes; it is biased
    upward by the drift of G between steps.

    >>> import torch
    >>> noise = GradientNoise(accumulate=2)
    >>> noise.update({"w": torch.tensor([3.0, 1.0])}, batch_size=1)
    >>> noise.update({"w": torch.tensor([1.0, 1.0])}, batch_size=1)
    >>> est = noise.compute()
    >>> est.total.grad_sq, est.total.trace_sigma  # |mean|^2 = 5, minus the Bessel-corrected noise 2/2
    (4.0, 2.0)
    """

    def __init__(self, *, accumulate: int = 2, beta: float = 1.0,
                 groups: Mapping[str, Sequence[str]] | None = None) -> None:
        if int(accumulate) < 2:
            raise ValueError(f"accumulate must be >= 2 (two batch sizes are needed), got {accumulate}")
        if not 0.0 < float(beta) <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.accumulate = int(accumulate)
        self.groups = dict(groups) if groups is not None else None
        self.state = NoiseState(beta=float(beta))
        self._reset_round()

    def _reset_round(self) -> None:
        self._sum: dict[str, torch.Tensor] = {}
        self._sq: dict[str, float] = {}
        self._count = 0
        self._batch_size: int | None = None

    def update(self, grads: Mapping[str, torch.Tensor] | torch.nn.Module, batch_size: int) -> None:
        """Record one small-batch gradient: a ``{name: grad}`` mapping or a module's ``.grad``s."""
        if isinstance(grads, torch.nn.Module):
            grads = {n: p.grad for n, p in grads.named_parameters() if p.grad is not None}
        if self._batch_size is not None and batch_size != self._batch_size:
            raise ValueError(f"batch_size changed within a round ({self._batch_size} -> {batch_size})")
        self._batch_size = int(batch_size)
        for name, g in grads.items():
            g = g.detach().to(torch.float64)
            self._sq[name] = self._sq.get(name, 0.0) + float(g.square().sum())
            self._sum[name] = self._sum[name] + g if name in self._sum else g.clone()
        self._count += 1
        if self._count == self.accumulate:
            n = self._count
            small = {k: v / n for k, v in self._sq.items()}
            big = {k: float((v / n).square().sum()) for k, v in self._sum.items()}
            self.state = _noise_update(self.state, small, big, self._batch_size, n * self._batch_size)
            self._reset_round()

    def compute(self) -> NoiseEstimate:
        """Current per-group and global estimates (rounds not yet closed are not included)."""
        return _noise_compute(self.state, self.groups)

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
    per-example tr(Sigma). Parameter drift over the ~1/(1-b2) steps in v_hat biases tr(Sigma_B)
    upward; L2 weight decay inside Adam, clipping and loss scaling distort both moments.
    """
    c = adam_noise_coefficient(beta1, step)
    m_hat = exp_avg.detach().to(torch.float64) / (1.0 - beta1 ** step)
    v_hat = exp_avg_sq.detach().to(torch.float64) / (1.0 - beta2 ** step)
    m_sq = float(m_hat.square().sum())
    trace = (float(v_hat.sum()) - m_sq) / (1.0 - c)
    return m_sq - c * trace, trace


# ------------------------------------------------------------------ gradient norm statistics


@dataclass(frozen=True)
class GradNorms:
    """Norms of one gradient matrix: ||G||_F, sigma_1 (spectral), sum sigma_i (nuclear), erank."""

    fro: float
    spectral: float
    nuclear: float
    effective_rank: float

    @property
    def s_ratio(self) -> float:
        """sigma_1 / sum sigma_i: the share of the top singular value (Li et al. 2025's S_ratio)."""
        return self.spectral / self.nuclear if self.nuclear > 0 else NAN


def gradient_norms(grad: torch.Tensor) -> GradNorms:
    """Frobenius, spectral and nuclear norms and effective rank of a gradient viewed as (out, -1).

    Effective rank is exp(H(p)) with p_i = sigma_i / sum sigma_j (Roy & Vetterli 2007). A 0-D or
    1-D gradient has only a Frobenius norm (the others are NaN).

    >>> gradient_norms(torch.diag(torch.tensor([3.0, 4.0])))
    GradNorms(fro=5.0, spectral=4.0, nuclear=7.0, effective_rank=1.9...)
    """
    g = grad.detach().to(torch.float64)
    fro = float(torch.linalg.vector_norm(g))
    if g.ndim < 2:
        return GradNorms(fro, NAN, NAN, NAN)
    sv = torch.linalg.svdvals(g.reshape(g.shape[0], -1))
    total = float(sv.sum())
    if total <= 0.0:
        return GradNorms(fro, 0.0, 0.0, NAN)
    p = sv / total
    p = p[p > 0]
    erank = math.exp(float(-(p * p.log()).sum()))
    return GradNorms(fro, float(sv[0]), total, erank)


def mean_abs_difference(values: Sequence[float]) -> float:
    """MAD across depth, (1/(L-1)) sum_l |x_{l+1} - x_l| (Li et al. 2025); NaNs are dropped first.

    >>> mean_abs_difference([1.0, 3.0, 2.0])
    1.5
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(xs) < 2:
        return NAN
    return sum(abs(b - a) for a, b in zip(xs, xs[1:])) / (len(xs) - 1)
