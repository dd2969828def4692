"""Confidence intervals from the spread of repeated measurements: means and ratios of means.

A quantity measured once per round (a gradient-noise round, a training step) gives R estimates
x_1..x_R with weights w_r (1 for a plain mean, beta^(R-r) for an exponential moving average). The
weighted mean xbar = sum w x / W1 (W1 = sum w, W2 = sum w^2) has, for independent rounds,

    Var(xbar) = sigma^2 W2 / W1^2,   sigma^2 ~ C_xx / (W1 - W2 / W1),   C_xy = sum w (x - xbar)(y - ybar)

(the reliability-weights unbiased variance), and n_eff = W1^2 / W2 effective rounds (Kish). For
equal weights Var(xbar) = s^2 / R, which is also exactly the jackknife variance of a mean.

* :func:`mean_interval`: xbar -+ t_{df} sqrt(Var(xbar)) with df = n_eff - 1 (Student; exact for
  normal rounds).
* :func:`fieller_interval`: the interval for a ratio of two such means, theta = ybar / xbar,
  {theta : (ybar - theta xbar)^2 <= q^2 (V_yy - 2 theta V_xy + theta^2 V_xx)} (Fieller 1954, "Some
  problems in interval estimation", JRSS B 16). Exact for bivariate normal rounds, it is bounded only
  when the denominator is significantly non-zero (xbar^2 > q^2 V_xx); otherwise the confidence set
  is unbounded and we return None rather than pretend. A symmetric delta-method interval would report
  a finite, misleading range exactly when the denominator is lost in noise.

:class:`Moments` keeps the sums behind both, updated one round at a time in constant memory (West
1979, "Updating mean and variance estimates", weighted form), so an accumulator can run for a whole
training run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Moments", "t_quantile", "mean_interval", "fieller_interval"]


@dataclass(frozen=True)
class Moments:
    """Weighted running means of two series x, y and their co-moments C_xx, C_yy, C_xy.

    The weights themselves (W1, W2) are shared by every series of one accumulator and kept by it.
    """

    mean_x: float = 0.0
    mean_y: float = 0.0
    c_xx: float = 0.0
    c_yy: float = 0.0
    c_xy: float = 0.0

    def decayed(self, beta: float) -> "Moments":
        """Every past weight times beta (an EMA step); the means do not change."""
        if beta == 1.0:
            return self
        return Moments(self.mean_x, self.mean_y, self.c_xx * beta, self.c_yy * beta, self.c_xy * beta)

    def add(self, x: float, y: float, weight_after: float, w: float = 1.0) -> "Moments":
        """Fold in one observation of weight ``w``; ``weight_after`` is W1 including it (West 1979)."""
        dx, dy = x - self.mean_x, y - self.mean_y
        mx, my = self.mean_x + w * dx / weight_after, self.mean_y + w * dy / weight_after
        return Moments(mx, my, self.c_xx + w * dx * (x - mx), self.c_yy + w * dy * (y - my),
                       self.c_xy + w * dx * (y - my))

    def mean_variances(self, w1: float, w2: float) -> tuple[float, float, float]:
        """(Var xbar, Var ybar, Cov(xbar, ybar)) for independent rounds; NaN with fewer than 2 rounds."""
        denom = w1 - w2 / w1 if w1 > 0 else 0.0
        if not denom > 0:
            return (math.nan, math.nan, math.nan)
        scale = (w2 / w1**2) / denom
        return (max(self.c_xx, 0.0) * scale, max(self.c_yy, 0.0) * scale, self.c_xy * scale)


def t_quantile(level: float, df: float) -> float:
    """Two-sided Student quantile t_{(1+level)/2, df} (scipy's, loaded on first use).

    >>> round(t_quantile(0.95, 7), 4)
    2.3646
    """
    from scipy.stats import t

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(t.ppf((1.0 + level) / 2.0, df)) if df > 0 else math.inf


def mean_interval(mean: float, var_mean: float, df: float, level: float = 0.95) -> tuple[float, float] | None:
    """Student interval mean -+ t sqrt(var_mean); None when there is no spread to use (df <= 0).

    >>> mean_interval(10.0, 4.0, 1e9)  # normal limit: 10 -+ 1.96 * 2
    (6.080072..., 13.919927...)
    """
    if not (df > 0 and math.isfinite(var_mean) and math.isfinite(mean)):
        return None
    half = t_quantile(level, df) * math.sqrt(var_mean)
    return (mean - half, mean + half)


def fieller_interval(num: float, den: float, v_num: float, v_den: float, cov: float, df: float,
                     level: float = 0.95) -> tuple[float, float] | None:
    """Fieller interval for num / den from the two means and their (co)variances; None if unbounded.

    Solves a theta^2 - 2 b theta + c <= 0 with a = den^2 - q^2 v_den, b = num den - q^2 cov,
    c = num^2 - q^2 v_num. When a <= 0 the denominator is not distinguishable from zero at this
    level and the set is unbounded (the whole line, or its complement of an interval).

    >>> lo, hi = fieller_interval(10.0, 2.0, 1.0, 0.01, 0.0, 1e9)
    >>> round(lo, 3), round(hi, 3)
    (3.946, 6.151)
    """
    if not (df > 0 and all(math.isfinite(v) for v in (num, den, v_num, v_den, cov))):
        return None
    q2 = t_quantile(level, df) ** 2
    a = den * den - q2 * v_den
    if a <= 0.0:
        return None
    b = num * den - q2 * cov
    c = num * num - q2 * v_num
    root = math.sqrt(max(b * b - a * c, 0.0))
    return ((b - root) / a, (b + root) / a)
