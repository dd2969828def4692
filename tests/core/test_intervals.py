"""Interval helpers: streaming moments against two-pass formulas, Student and Fieller intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from spectra.core.intervals import Moments, fieller_interval, mean_interval, t_quantile

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


def _stream(xs, ys, beta):
    m, w1, w2 = Moments(), 0.0, 0.0
    for x, y in zip(xs, ys):
        w1, w2 = w1 * beta + 1.0, w2 * beta * beta + 1.0
        m = m.decayed(beta).add(x, y, w1)
    return m, w1, w2


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(finite, finite), min_size=2, max_size=30),
       beta=st.sampled_from([1.0, 0.9, 0.5]))
def test_streaming_moments_equal_the_two_pass_weighted_formulas(pairs, beta):
    xs, ys = np.array(pairs).T
    m, w1, w2 = _stream(xs, ys, beta)
    w = beta ** np.arange(len(xs))[::-1]
    assert (w1, w2) == pytest.approx((w.sum(), (w * w).sum()))
    mx, my = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
    scale = max(1.0, float(np.abs(xs).max()), float(np.abs(ys).max()))
    assert m.mean_x == pytest.approx(mx, abs=1e-9 * scale)
    assert m.mean_y == pytest.approx(my, abs=1e-9 * scale)
    assert m.c_xx == pytest.approx((w * (xs - mx) ** 2).sum(), abs=1e-7 * scale**2)
    assert m.c_xy == pytest.approx((w * (xs - mx) * (ys - my)).sum(), abs=1e-7 * scale**2)


def test_equal_weights_give_the_textbook_student_interval():
    xs = np.array([3.1, 2.4, 4.0, 3.3, 2.9])
    m, w1, w2 = _stream(xs, xs, 1.0)
    var_x, _, _ = m.mean_variances(w1, w2)
    assert var_x == pytest.approx(xs.var(ddof=1) / 5)  # s^2 / R, the jackknife variance of a mean
    lo, hi = mean_interval(m.mean_x, var_x, w1**2 / w2 - 1)
    ref = stats.t.interval(0.95, 4, loc=xs.mean(), scale=stats.sem(xs))
    assert (lo, hi) == pytest.approx(ref)
    assert mean_interval(1.0, 0.5, 0.0) is None  # one round: no spread
    assert math.isnan(Moments().mean_variances(1.0, 1.0)[0])


def test_t_quantile():
    assert t_quantile(0.95, 7) == pytest.approx(stats.t.ppf(0.975, 7))
    assert t_quantile(0.9, 1e9) == pytest.approx(1.6448536, rel=1e-6)
    with pytest.raises(ValueError, match="level"):
        t_quantile(1.5, 3)


@pytest.mark.parametrize("num,den,v_num,v_den,cov", [(10.0, 2.0, 1.0, 0.05, 0.1), (3.0, 1.0, 0.4, 0.01, -0.02),
                                                     (-1.0, 4.0, 0.3, 0.5, 0.2)])
def test_fieller_interval_is_the_set_it_defines(num, den, v_num, v_den, cov):
    df = 9
    lo, hi = fieller_interval(num, den, v_num, v_den, cov, df)
    q2 = stats.t.ppf(0.975, df) ** 2

    def inside(theta):
        return (num - theta * den) ** 2 <= q2 * (v_num - 2 * theta * cov + theta**2 * v_den)

    assert lo < num / den < hi
    grid = np.linspace(lo - 3 * (hi - lo), hi + 3 * (hi - lo), 2001)
    members = grid[[inside(t) for t in grid]]
    step = grid[1] - grid[0]
    assert members.min() == pytest.approx(lo, abs=step) and members.max() == pytest.approx(hi, abs=step)


def test_fieller_is_unbounded_when_the_denominator_is_not_resolved():
    assert fieller_interval(5.0, 0.1, 1.0, 0.01, 0.0, 20) is None  # den / se = 1 < t
    assert fieller_interval(5.0, 1.0, 1.0, 0.01, 0.0, 0) is None  # no degrees of freedom


def test_fieller_tends_to_the_delta_method_for_small_variances():
    num, den, v_num, v_den = 6.0, 3.0, 1e-6, 1e-6
    lo, hi = fieller_interval(num, den, v_num, v_den, 0.0, 1e9)
    se = math.sqrt(v_num / den**2 + num**2 * v_den / den**4)
    assert (lo, hi) == pytest.approx((2 - 1.959964 * se, 2 + 1.959964 * se), rel=1e-6)
