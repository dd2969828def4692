"""Random-matrix-theory metrics of an eigenvalue spectrum (lambda = sigma^2 of an N x M matrix).

Norm metrics follow WeightWatcher's definitions so the columns mean the same thing:

* ``norm`` = sum(lambda) = ||W||_F^2, ``log_norm`` = log10(norm)
* ``lambda_max`` = ``spectral_norm`` = ||W||_2^2, ``log_spectral_norm`` = log10(lambda_max)
* ``stable_rank`` = sum(lambda) / lambda_max
* ``alpha_weighted`` = alpha * log10(lambda_max) ("alpha-hat", Martin & Mahoney 2021)
* ``log_alpha_norm`` = log10(sum_i lambda_i^alpha) (the Schatten alpha-norm to the power alpha)
* ``entropy`` = -sum p_i ln p_i / ln(rank) with p_i = lambda_i / sum(lambda): the spectral entropy
  normalised to [0, 1] by the matrix rank (WeightWatcher adds 1e-10 to every p_i and to the rank; we
  sum over p_i > 0 instead, which differs by less than 1e-8).

Marchenko-Pastur (MP) fit. For an N x M matrix (Q = N / M >= 1) with i.i.d. entries of variance
sigma^2, the eigenvalues of W^T W / N fill [sigma^2 (1 - Q^-1/2)^2, sigma^2 (1 + Q^-1/2)^2] with the MP
density. :func:`mp_fit` finds sigma^2 by minimising the Kolmogorov-Smirnov distance between the
empirical spectrum and the MP law: the MP CDF for variance 1 is tabulated once per Q and rescaled for
each trial sigma (a 200-point log grid, then a bounded scalar refinement), so a whole model takes
seconds rather than WeightWatcher's per-layer kernel-density grid search. Eigenvalues above the bulk
edge plus a Tracy-Widom margin are spikes: the largest eigenvalue of a white Wishart matrix sits at
mu = sigma^2 (sqrt N + sqrt M)^2 with fluctuations of scale
s = sigma^2 (sqrt N + sqrt M)(1/sqrt N + 1/sqrt M)^(1/3) (Johnstone 2001); the threshold is
mu + 2.02 s, the 99th percentile of the Tracy-Widom (beta = 1) law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "norm_metrics",
    "matrix_entropy",
    "MPFit",
    "mp_fit",
    "mp_cdf",
    "mp_edges",
    "jensen_shannon_distance",
]

_NAN = float("nan")
TW_99 = 2.0234  # 99th percentile of the Tracy-Widom beta=1 distribution


def norm_metrics(evals: np.ndarray, alpha: float = _NAN) -> dict[str, float]:
    """Norm-based metrics of a spectrum (see module docstring); alpha-based ones NaN without alpha.

    >>> m = norm_metrics(np.array([1.0, 4.0]), alpha=2.0)
    >>> m["stable_rank"], m["log_alpha_norm"]
    (1.25, 1.2304489213782739)
    """
    ev = np.asarray(evals, dtype=np.float64)
    total = float(ev.sum())
    lmax = float(ev.max()) if ev.size else _NAN
    out = {
        "norm": total,
        "log_norm": math.log10(total) if total > 0 else _NAN,
        "lambda_max": lmax,
        "spectral_norm": lmax,
        "log_spectral_norm": math.log10(lmax) if lmax > 0 else _NAN,
        "stable_rank": total / lmax if lmax > 0 else _NAN,
        "alpha_weighted": _NAN,
        "log_alpha_norm": _NAN,
    }
    if math.isfinite(alpha) and lmax > 0:
        out["alpha_weighted"] = alpha * math.log10(lmax)
        with np.errstate(over="ignore"):
            # sum lambda^alpha computed as lmax^alpha * sum (lambda/lmax)^alpha to avoid overflow
            rel = float(np.sum((ev[ev > 0] / lmax) ** alpha))
        out["log_alpha_norm"] = alpha * math.log10(lmax) + math.log10(rel)
    return out


def matrix_entropy(evals: np.ndarray, rank: int) -> float:
    """Spectral entropy normalised by ln(rank): 1 for a flat spectrum, 0 for rank one.

    >>> round(matrix_entropy(np.ones(4), 4), 6)
    1.0
    """
    ev = np.asarray(evals, dtype=np.float64)
    total = ev.sum()
    if total <= 0 or rank <= 1:
        return 0.0 if rank == 1 else _NAN
    p = ev[ev > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(rank))


# ------------------------------------------------------------------ Marchenko-Pastur


def mp_edges(sigma2: float, Q: float) -> tuple[float, float]:
    """Bulk edges of the MP law for eigenvalues of W^T W / N with entry variance sigma2, Q = N/M."""
    r = 1.0 / math.sqrt(Q)
    return sigma2 * (1.0 - r) ** 2, sigma2 * (1.0 + r) ** 2


def mp_cdf(Q: float, points: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Tabulated MP CDF for variance 1 and aspect ratio Q >= 1: (x grid, F(x)).

    The density is sqrt((b - x)(x - a)) / (2 pi y x) on [a, b] with y = 1/Q. It is integrated with
    the substitution x = a + (b - a)(1 - cos t)/2, which removes the square-root endpoints, so a
    trapezoid rule on t is accurate to ~1e-6.
    """
    if Q < 1:
        raise ValueError(f"Q must be >= 1, got {Q}")
    y = 1.0 / Q
    a, b = mp_edges(1.0, Q)
    t = np.linspace(0.0, math.pi, points)
    x = a + (b - a) * (1.0 - np.cos(t)) / 2.0
    dx_dt = (b - a) * np.sin(t) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        dens = np.sqrt(np.clip((b - x) * (x - a), 0.0, None)) / (2.0 * math.pi * y * x)
    dens = np.nan_to_num(dens)
    integrand = dens * dx_dt
    F = np.concatenate([[0.0], np.cumsum((integrand[1:] + integrand[:-1]) / 2.0 * np.diff(t))])
    F /= F[-1]  # Q == 1 puts no mass at 0 either; normalise away the quadrature error
    return x, F


@dataclass(frozen=True)
class MPFit:
    """Marchenko-Pastur fit of a spectrum (in the units of the input eigenvalues)."""

    sigma_mp: float = _NAN  # entry standard deviation of the matching random matrix
    bulk_min: float = _NAN
    bulk_max: float = _NAN
    num_spikes: int | None = None
    mp_softrank: float = _NAN  # bulk_max / lambda_max
    D: float = _NAN
    status: str = "failed"
    reason: str = ""


def _ks_to_mp(x_sorted: np.ndarray, grid: np.ndarray, F: np.ndarray, sigma2: float) -> float:
    model = np.interp(x_sorted / sigma2, grid, F, left=0.0, right=1.0)
    n = x_sorted.size
    upper = np.arange(1, n + 1) / n
    lower = np.arange(0, n) / n
    return float(max(np.max(np.abs(upper - model)), np.max(np.abs(model - lower))))


def mp_fit(evals: np.ndarray, N: int, M: int) -> MPFit:
    """Fit a Marchenko-Pastur bulk to the eigenvalues of W^T W (N x M, N >= M) by minimum KS distance.

    Returns sigma_mp (entry std), the bulk edges and spike count in the eigenvalue units of ``evals``.

    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(0, 0.5, size=(800, 200))
    >>> fit = mp_fit(np.linalg.eigvalsh(W.T @ W), 800, 200)
    >>> round(fit.sigma_mp, 2), fit.num_spikes
    (0.5, 0)
    """
    ev = np.sort(np.asarray(evals, dtype=np.float64))
    N, M = max(N, M), min(N, M)
    if ev.size < 8 or ev[-1] <= 0:
        return MPFit(reason="fewer than 8 eigenvalues or an all-zero spectrum")
    Q = N / M
    x = ev / N
    grid, F = mp_cdf(Q)
    s0 = float(np.mean(x))  # the MP mean equals sigma^2; spikes only inflate it
    trial = np.geomspace(0.05 * s0, 2.0 * s0, 200)
    ks = np.array([_ks_to_mp(x, grid, F, s) for s in trial])
    i = int(np.argmin(ks))
    lo, hi = trial[max(i - 1, 0)], trial[min(i + 1, trial.size - 1)]
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda s: _ks_to_mp(x, grid, F, s), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6 * s0})
    sigma2 = float(res.x) if res.fun <= ks[i] else float(trial[i])
    D = min(float(res.fun), float(ks[i]))
    a, b = mp_edges(sigma2, Q)
    mu = sigma2 * (math.sqrt(N) + math.sqrt(M)) ** 2
    scale = sigma2 * (math.sqrt(N) + math.sqrt(M)) * (1 / math.sqrt(N) + 1 / math.sqrt(M)) ** (1 / 3)
    threshold = mu + TW_99 * scale  # in units of W^T W
    return MPFit(
        sigma_mp=math.sqrt(sigma2),
        bulk_min=a * N,
        bulk_max=b * N,
        num_spikes=int(np.count_nonzero(ev > threshold)),
        mp_softrank=b * N / float(ev[-1]),
        D=D,
        status="success",
    )


def jensen_shannon_distance(evals_a: np.ndarray, evals_b: np.ndarray, bins: int = 100) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two spectra's log10 histograms.

    Both spectra share one set of log-spaced bins spanning their positive eigenvalues. (WeightWatcher
    instead treats the two sorted eigenvalue vectors themselves as probability vectors.)
    """
    a = np.asarray(evals_a, dtype=np.float64)
    b = np.asarray(evals_b, dtype=np.float64)
    a, b = a[a > 0], b[b > 0]
    if not a.size or not b.size:
        return _NAN
    la, lb = np.log10(a), np.log10(b)
    lo, hi = min(la.min(), lb.min()), max(la.max(), lb.max())
    if hi <= lo:
        return 0.0
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(la, edges)[0].astype(np.float64)
    q = np.histogram(lb, edges)[0].astype(np.float64)
    p /= p.sum()
    q /= q.sum()
    m = (p + q) / 2

    def kl(u, v):
        mask = u > 0
        return float(np.sum(u[mask] * np.log2(u[mask] / v[mask])))

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))
