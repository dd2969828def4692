"""Power-law fits of the tail of an eigenvalue spectrum (HT-SR's alpha).

The tail density is modelled as p(lambda) ~ lambda^(-alpha) for lambda >= xmin (continuous Pareto).
For a fixed xmin and the n eigenvalues x_1..x_n >= xmin, the maximum-likelihood exponent is

    alpha = 1 + n / sum_i ln(x_i / xmin)                      (Hill; Clauset, Shalizi, Newman 2009)

with standard error sigma = (alpha - 1) / sqrt(n). Fits are registered by name:

* ``ww`` (default): every eigenvalue but the largest is a candidate xmin; for each, the MLE alpha and
  the Kolmogorov-Smirnov distance D = max_k |1 - (x_k/xmin)^(1-alpha) - k/n| (k = 0..n-1, the
  one-sided empirical CDF WeightWatcher uses) are computed; the candidate with the smallest D wins.
  Eigenvalues <= 1e-5 are dropped first. This reproduces WeightWatcher 0.7.7's ``WWFit`` (alpha,
  xmin, D) for spectra of 20 or more eigenvalues, vectorised over candidates in chunks (O(n^2) work,
  O(n * chunk) memory, no Python loop per candidate). Below 20 eigenvalues WeightWatcher switches
  to a small-N path that reports the fit at the wrong index (see research notes); spectra keeps the
  same estimator at every size instead.
* ``median``: TempBalance / LLR / AlphaDecay's estimator (``pl_fitting='median'``,
  ``filter_zeros=False``): xmin is the eigenvalue at index floor(N/2) of the *whole* ascending
  spectrum, zeros and all (N counts every eigenvalue; ``thresh`` does not apply), and alpha its Hill
  estimate over the upper half (no KS search; D is still reported). The fit fails when that median
  eigenvalue is not positive (a matrix of rank below N/2). Given float32 eigenvalues it computes in
  float32 with the reference's operations (``torch.log``, ``torch.sum``), so that float32 ``svdvals``
  eigenvalues reproduce the reference's alpha to the last bit; given float64 it computes in float64.

``fix_fingers="clip_xmax"`` (WeightWatcher's "fingers" correction for finite-size outliers): refit
after dropping the top k = 1, 2, ... eigenvalues and accept the first k whose alpha falls more than
``finger_thresh`` below the unclipped alpha, stopping once alpha <= 2. spectra reports ``num_fingers``
= k, the number of eigenvalues actually removed (WeightWatcher removes k + 1 and reports k, and
ignores a user's ``max_fingers``; we do neither).

Failures (fewer than 2 positive eigenvalues in every tail, or all tail eigenvalues tied) return
``status="failed"`` with NaN numbers and a reason, never -1.

:func:`bootstrap_alpha` gives the confidence interval ``alpha_ci`` for the alpha a fit reports
(semi-parametric bootstrap, Clauset et al. 2009 sec. 4.1, the xmin search redone on every sample);
:func:`interval_warning` flags the unstable fits whose interval misses their own estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

__all__ = ["PowerLawFit", "fit_power_law", "FITS", "bootstrap_alpha", "bootstrap_replicates", "bootstrap_interval",
           "interval_warning", "EVALS_THRESH", "RESAMPLING", "INTERVALS"]

#: Eigenvalues at or below this are dropped before a fit (WeightWatcher's EVALS_THRESH).
EVALS_THRESH = 1e-5
_NAN = float("nan")
_CHUNK_ELEMENTS = 1 << 22  # rows * n per vectorised block (32 MiB of float64)


@dataclass(frozen=True)
class PowerLawFit:
    """Result of a power-law tail fit. Numbers are NaN when ``status`` is not ``"success"``."""

    alpha: float = _NAN
    xmin: float = _NAN
    xmax: float = _NAN
    D: float = _NAN
    sigma: float = _NAN
    num_pl_spikes: int | None = None
    status: str = "failed"
    reason: str = ""
    method: str = ""
    num_fingers: int | None = None
    raw_alpha: float = _NAN

    @property
    def ok(self) -> bool:
        return self.status == "success"


def _failed(reason: str, method: str) -> PowerLawFit:
    return PowerLawFit(status="failed", reason=reason, method=method)


def _tail_fit(x: np.ndarray, i: int) -> tuple[float, float]:
    """(alpha, D) of the tail x[i:] with xmin = x[i] (x ascending, positive)."""
    tail = x[i:]
    n = tail.size
    logs = np.log(tail / tail[0])
    s = logs.sum()
    if n < 2 or s <= 0 or tail[-1] == tail[0]:
        return _NAN, _NAN
    alpha = 1.0 + n / s
    cdf = 1.0 - np.exp((1.0 - alpha) * logs)
    D = float(np.max(np.abs(cdf - np.arange(n) / n)))
    return alpha, D


def _ww_alphas(x: np.ndarray, logx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MLE alpha for every candidate xmin = x[i], i = 0..n-2, and the tail sizes n_i.

    alpha_i = 1 + n_i / (S_i - n_i ln x_i) with S_i the suffix sum of ln x. Candidates whose tail is
    all ties (S_i - n_i ln x_i == 0) get alpha = nan.
    """
    n = x.size
    counts = n - np.arange(n - 1, dtype=np.float64)
    suffix = np.cumsum(logx[::-1])[::-1][: n - 1]
    denom = suffix - counts * logx[: n - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        # a tail whose values are all equal has no exponent (rounding could make denom ~1e-15 > 0)
        alphas = np.where((denom > 0) & (x[: n - 1] < x[-1]), 1.0 + counts / denom, np.nan)
    return alphas, counts


def _ks_exact(logx: np.ndarray, idx: np.ndarray, alphas: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Exact KS distance for the candidates ``idx`` (one vectorised block)."""
    lo = int(idx.min())
    cols = np.arange(lo, logx.size)
    diff = np.maximum(logx[None, lo:] - logx[idx, None], 0.0)  # ln(x_j / x_i); j < i is masked below
    k = cols[None, :] - idx[:, None]  # rank inside the tail
    gap = np.abs(1.0 - np.exp((1.0 - alphas[idx, None]) * diff) - k / counts[idx, None])
    gap[k < 0] = 0.0  # j < i lies outside candidate i's tail
    return gap.max(axis=1)


def _ww_scan(x: np.ndarray, samples: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Alpha and KS distance D for every candidate xmin, exact where it can matter.

    D_i is a maximum over the tail, so its value at a few sampled ranks is a lower bound. Candidates
    are visited in order of that bound and the exact D is computed block by block until the bound
    exceeds the best exact D found: every candidate left has D_i >= bound > best, so the argmin
    (first index on ties) is exactly that of the full O(n^2) scan, at a fraction of its cost.
    Unvisited candidates carry their lower bound in the returned ``Ds`` (marked by ``inf`` only when
    their alpha is undefined).
    """
    logx = np.log(x)
    alphas, counts = _ww_alphas(x, logx)
    Ds = np.full(x.size - 1, np.inf)
    valid = np.flatnonzero(alphas > 1)
    if not valid.size:
        return alphas, Ds
    # lower bounds from sampled ranks k = t * (n_i - 1)
    t = np.linspace(0.0, 1.0, samples)
    k = np.floor(t[None, :] * (counts[valid, None] - 1)).astype(np.int64)
    j = valid[:, None] + k
    gap = np.abs(1.0 - np.exp((1.0 - alphas[valid, None]) * (logx[j] - logx[valid, None])) - k / counts[valid, None])
    bound = gap.max(axis=1)
    order = valid[np.argsort(bound, kind="stable")]
    sorted_bound = np.sort(bound, kind="stable")
    best = np.inf
    block = max(8, min(256, _CHUNK_ELEMENTS // x.size))
    pos = 0
    while pos < order.size and sorted_bound[pos] <= best:
        idx = order[pos : pos + block]
        exact = _ks_exact(logx, idx, alphas, counts)
        Ds[idx] = exact
        best = min(best, float(exact.min()))
        pos += block
    rest = order[pos:]
    Ds[rest] = np.maximum(sorted_bound[pos:], np.nextafter(best, np.inf))  # never below the winner
    return alphas, Ds


def _fit_ww(x: np.ndarray) -> PowerLawFit:
    if x.size < 2:
        return _failed(f"only {x.size} eigenvalue(s) above {EVALS_THRESH:g}; a tail needs at least 2", "ww")
    alphas, Ds = _ww_scan(x)
    if not np.isfinite(Ds).any():
        return _failed("every candidate tail is tied (all eigenvalues equal)", "ww")
    i = int(np.argmin(Ds))
    n = x.size - i
    alpha = float(alphas[i])
    return PowerLawFit(
        alpha=alpha, xmin=float(x[i]), xmax=float(x[-1]), D=float(Ds[i]),
        sigma=(alpha - 1.0) / math.sqrt(n), num_pl_spikes=n, status="success", method="ww",
    )


def _median_tail_float32(x: np.ndarray, i: int) -> tuple[float, float]:
    """``net_esd_estimator``'s median branch in float32, operation for operation."""
    import torch

    eigs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    log = torch.log(eigs)
    n = float(x.size - i)
    alpha = 1 + n / (torch.sum(log[i:]) - n * log[i])
    D = torch.max(torch.abs(1 - (eigs[i:] / eigs[i]) ** (-alpha + 1) - torch.arange(n) / n))
    if not (torch.isfinite(alpha) and alpha > 1 and eigs[-1] > eigs[i]):
        return _NAN, _NAN
    return float(alpha), float(D)


def _fit_median(x: np.ndarray) -> PowerLawFit:
    """The reference code's fit: ``i = int(N / 2)`` over every eigenvalue (see :func:`fit_power_law`)."""
    if x.size < 2:
        return _failed(f"only {x.size} eigenvalue(s); a tail needs at least 2", "median")
    i = x.size // 2
    if not x[i] > 0:
        return _failed(f"the median eigenvalue is {x[i]:.3g}: rank below half the spectrum", "median")
    alpha, D = _median_tail_float32(x, i) if x.dtype == np.float32 else _tail_fit(x, i)
    if not math.isfinite(alpha):
        return _failed("the upper half of the spectrum is tied (all eigenvalues equal)", "median")
    n = x.size - i
    return PowerLawFit(
        alpha=alpha, xmin=float(x[i]), xmax=float(x[-1]), D=D,
        sigma=(alpha - 1.0) / math.sqrt(n), num_pl_spikes=n, status="success", method="median",
    )


FITS: dict[str, Callable[[np.ndarray], PowerLawFit]] = {"ww": _fit_ww, "median": _fit_median}


def _prepare_for(method: str, evals, thresh: float) -> np.ndarray:
    """The eigenvalues ``method`` fits: every finite one for ``median`` (its reference keeps zeros and
    float32), those above ``thresh`` in float64 for ``ww``. Fits and bootstraps both use this."""
    return _prepare(evals, -math.inf, keep_float32=True) if method == "median" else _prepare(evals, thresh)


def _prepare(evals, thresh: float, *, keep_float32: bool = False) -> np.ndarray:
    x = np.asarray(evals.detach().cpu() if hasattr(evals, "detach") else evals).ravel()
    x = x.astype(np.float32 if keep_float32 and x.dtype == np.float32 else np.float64, copy=False)
    x = x[np.isfinite(x)]
    return np.sort(x[x > thresh])


def fit_power_law(
    evals,
    *,
    method: str = "ww",
    fix_fingers: str | None = None,
    max_fingers: int = 10,
    finger_thresh: float = 1.0,
    thresh: float = EVALS_THRESH,
) -> PowerLawFit:
    """Fit the power-law tail of an eigenvalue spectrum.

    Args:
        evals: eigenvalues (tensor or array, any order).
        method: a name in :data:`FITS` (``"ww"`` or ``"median"``).
        fix_fingers: None or ``"clip_xmax"`` (refit without the top eigenvalues; see module doc).
        max_fingers: most eigenvalues ``clip_xmax`` may remove.
        finger_thresh: alpha must drop by more than this for a clipped fit to be accepted.
        thresh: eigenvalues at or below this are ignored by the ``ww`` fit; the ``median`` fit uses
            every finite eigenvalue, as its reference code does (``filter_zeros=False``).

    Returns:
        :class:`PowerLawFit`; ``num_pl_spikes`` counts eigenvalues >= xmin (the tail size).

    >>> rng = np.random.default_rng(0)
    >>> sample = (1 - rng.random(4000)) ** (-1 / 1.5)  # Pareto tail, alpha = 2.5
    >>> round(fit_power_law(sample).alpha, 1)
    2.5
    """
    if method not in FITS:
        raise ValueError(f"unknown fit {method!r}; choose one of {sorted(FITS)}")
    if fix_fingers not in (None, "clip_xmax"):
        raise ValueError(f"unknown fix_fingers {fix_fingers!r}; choose None or 'clip_xmax'")
    x = _prepare_for(method, evals, thresh)
    fit = FITS[method](x)
    if fix_fingers is None or not fit.ok:
        return fit
    return _clip_xmax(x, fit, FITS[method], max_fingers, finger_thresh)


def _clip_xmax(x, first: PowerLawFit, fitter, max_fingers: int, finger_thresh: float) -> PowerLawFit:
    """Drop the top k eigenvalues (k = 1..max_fingers, at most half the spectrum) until alpha falls."""
    limit = min(max_fingers, x.size // 2)
    for k in range(1, limit + 1):
        fit = fitter(x[:-k])
        if not fit.ok:
            break
        if fit.alpha + finger_thresh < first.alpha:
            return replace(fit, num_fingers=k, raw_alpha=first.alpha)
        if fit.alpha <= 2.0:
            break
    return replace(first, num_fingers=0, raw_alpha=first.alpha)


#: How bootstrap samples are drawn (see :func:`bootstrap_replicates`).
RESAMPLING = ("semiparametric", "nonparametric")
#: How the interval is read off the refitted alphas (see :func:`bootstrap_interval`).
INTERVALS = ("percentile", "basic")


def bootstrap_replicates(
    evals,
    *,
    n_boot: int,
    method: str = "ww",
    resample: str = "semiparametric",
    generator=None,
    thresh: float = EVALS_THRESH,
    fit: PowerLawFit | None = None,
) -> np.ndarray:
    """Alphas refitted (xmin search included) on ``n_boot`` resampled spectra; failed refits dropped.

    ``nonparametric``: draw n eigenvalues with replacement. ``semiparametric`` (Clauset, Shalizi &
    Newman 2009, sec. 4.1): keep the fitted model above xmin and the data below it: each sample has
    k ~ Binomial(n, n_tail / n) eigenvalues drawn from the fitted Pareto tail
    xmin (1 - U)^(-1 / (alpha - 1)) and n - k drawn with replacement from the eigenvalues below xmin.
    Resampled spectra then have no ties in the tail, which a nonparametric sample is full of and which
    pull the KS-selected xmin around more than new data would. ``generator`` is a ``torch.Generator``;
    ``fit`` is the fit of ``evals`` when the caller already has it.
    """
    import torch

    if resample not in RESAMPLING:
        raise ValueError(f"unknown resampling {resample!r}; choose one of {list(RESAMPLING)}")
    x = _prepare_for(method, evals, thresh)
    if x.size < 2 or n_boot <= 0:
        return np.empty(0)
    fitter = FITS[method]
    if resample == "nonparametric":
        samples = (x[row] for row in torch.randint(0, x.size, (n_boot, x.size), generator=generator).numpy())
    else:
        fit = fit if fit is not None else fitter(x)
        if not fit.ok:
            return np.empty(0)
        samples = _semiparametric_samples(x, fit, n_boot, generator)
    alphas = [f.alpha for f in (fitter(np.sort(sample)) for sample in samples) if f.ok]
    return np.asarray(alphas, dtype=np.float64)


def _semiparametric_samples(x: np.ndarray, fit: PowerLawFit, n_boot: int, generator):
    """Clauset's semi-parametric samples, one at a time (memory O(n), not O(n_boot n))."""
    import torch

    body = x[x < fit.xmin]
    p_tail = fit.num_pl_spikes / x.size if body.size else 1.0
    for _ in range(n_boot):
        # one uniform per slot picks tail or body (so k ~ Binomial(n, p_tail)) and, rescaled, the tail value
        u = torch.rand(x.size, generator=generator, dtype=torch.float64).numpy()
        pick = torch.randint(0, max(body.size, 1), (x.size,), generator=generator).numpy()
        tail = fit.xmin * (1.0 - np.minimum(u / p_tail, 1.0 - 1e-16)) ** (-1.0 / (fit.alpha - 1.0))
        yield np.where(u < p_tail, tail, body[pick] if body.size else tail)


def bootstrap_interval(alpha: float, replicates: np.ndarray, *, level: float = 0.95,
                       kind: str = "percentile") -> tuple[float, float]:
    """A ``level`` interval from refitted alphas: their quantiles (``percentile``) or the reflection
    (2 alpha - q_hi, 2 alpha - q_lo) (``basic``, which corrects a bias the bootstrap reproduces).

    Quantiles are Hyndman & Fan's type 8 (median-unbiased, numpy's ``median_unbiased``): with the
    default linear interpolation, 50 or 100 refits place the 2.5% and 97.5% points too far inside
    and a 95% interval covers 92-93% on Pareto samples; type 8 keeps coverage within a point of 95%
    from 50 to 200 refits (benchmarks/uncertainty.py).
    """
    if kind not in INTERVALS:
        raise ValueError(f"unknown interval {kind!r}; choose one of {list(INTERVALS)}")
    q_lo, q_hi = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2], method="median_unbiased")
    if kind == "basic":
        q_lo, q_hi = max(2 * alpha - q_hi, 1.0), 2 * alpha - q_lo
    return (float(q_lo), float(q_hi))


def bootstrap_alpha(
    evals,
    *,
    n_boot: int,
    method: str = "ww",
    level: float = 0.95,
    generator=None,
    thresh: float = EVALS_THRESH,
    resample: str = "semiparametric",
    interval: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap confidence interval for the alpha that ``method`` reports (xmin search included).

    Default: the semi-parametric bootstrap of Clauset et al. 2009 (:func:`bootstrap_replicates`)
    read as a percentile interval with median-unbiased quantiles (:func:`bootstrap_interval`). On
    Pareto samples with known alpha (benchmarks/uncertainty.py, reports/bench/uncertainty.md) it is
    the choice whose 95% intervals cover the truth closest to 95%; the nonparametric percentile
    interval (spectra's earlier default) and the basic interval are kept for comparison. ``generator`` is a ``torch.Generator`` (reproducible draws); failed refits
    are ignored. Returns (nan, nan) when fewer than half the refits succeed. An interval can still
    miss the estimate itself when the fit is unstable; see :func:`interval_warning`.
    """
    x = _prepare_for(method, evals, thresh)
    fit = FITS[method](x) if x.size >= 2 else None
    if fit is None or not fit.ok or n_boot <= 0:
        return (_NAN, _NAN)
    alphas = bootstrap_replicates(x, n_boot=n_boot, method=method, resample=resample, generator=generator,
                                  thresh=thresh, fit=fit)
    if alphas.size < max(2, n_boot // 2):
        return (_NAN, _NAN)
    return bootstrap_interval(fit.alpha, alphas, level=level, kind=interval)


def interval_warning(alpha: float, ci) -> str:
    """A warning when a bootstrap interval does not contain its own estimate, else ``""``.

    That happens when the fit is unstable: the KS-selected xmin, and with it alpha, jumps between
    very different tails from one resample to the next (a small tail with a huge alpha, most often),
    so neither the estimate nor the interval should be read as a measurement.

    >>> interval_warning(114.6, (6.5, 35.1))
    'unstable fit: alpha 115 lies outside its bootstrap interval [6.5, 35.1]; xmin jumps between tails'
    >>> interval_warning(3.0, (2.5, 3.6))
    ''
    """
    if ci is None or not all(math.isfinite(v) for v in (alpha, *ci)) or ci[0] <= alpha <= ci[1]:
        return ""
    return (f"unstable fit: alpha {alpha:.3g} lies outside its bootstrap interval [{ci[0]:.3g}, {ci[1]:.3g}]; "
            "xmin jumps between tails")
