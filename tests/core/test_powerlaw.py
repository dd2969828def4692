import math

import numpy as np
import pytest
import torch

from spectra.core.powerlaw import (
    EVALS_THRESH,
    FITS,
    bootstrap_alpha,
    bootstrap_interval,
    bootstrap_replicates,
    fit_power_law,
    interval_warning,
)


def pareto(alpha: float, n: int, xmin: float = 1.0, seed: int = 0) -> np.ndarray:
    """Continuous Pareto sample with density ~ x^-alpha above xmin (inverse-CDF draw)."""
    u = np.random.default_rng(seed).random(n)
    return xmin * (1 - u) ** (-1 / (alpha - 1))


def reference_ww(evals: np.ndarray):
    """The WeightWatcher estimator written as the plain loop over candidates (the oracle)."""
    x = np.sort(evals[evals > EVALS_THRESH])
    best = (math.inf, None, None)
    for i in range(x.size - 1):
        tail = x[i:]
        n = tail.size
        s = np.sum(np.log(tail)) - n * np.log(x[i])
        if s <= 0:
            continue
        a = 1 + n / s
        D = np.max(np.abs(1 - (tail / x[i]) ** (1 - a) - np.arange(n) / n))
        if D < best[0]:
            best = (D, a, x[i])
    return best


@pytest.mark.parametrize("alpha", [1.8, 2.5, 3.5, 5.0])
def test_pareto_alpha_recovered_by_ww_and_median(alpha):
    x = pareto(alpha, 6000, seed=int(alpha * 10))
    for method in ("ww", "median"):
        fit = fit_power_law(x, method=method)
        assert fit.ok
        # sigma = (alpha-1)/sqrt(n) is the MLE's standard error; allow 4 of them
        assert abs(fit.alpha - alpha) < 4 * fit.sigma + 0.02, (method, fit)


def test_pareto_with_noise_below_xmin_finds_the_tail():
    rng = np.random.default_rng(3)
    body = rng.uniform(0.1, 1.0, 3000)
    tail = pareto(3.0, 3000, xmin=1.0, seed=4)
    fit = fit_power_law(np.concatenate([body, tail]))
    assert fit.xmin == pytest.approx(1.0, rel=0.15)
    assert fit.alpha == pytest.approx(3.0, abs=0.2)


@pytest.mark.parametrize("n", [5, 12, 19, 20, 64, 700])
def test_ww_equals_the_plain_loop_at_every_size(n):
    x = np.abs(np.random.default_rng(n).standard_cauchy(n)) + 0.01
    D, a, xmin = reference_ww(x)
    fit = fit_power_law(x)
    assert fit.alpha == pytest.approx(a, rel=1e-9)
    assert fit.xmin == pytest.approx(xmin, rel=1e-12)
    assert fit.D == pytest.approx(D, rel=1e-9)
    assert fit.num_pl_spikes == np.count_nonzero(x >= fit.xmin)
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(fit.num_pl_spikes))


def test_matches_weightwatcher_wwfit_on_identical_eigenvalues():
    ww = pytest.importorskip("weightwatcher.WW_powerlaw")
    rng = np.random.default_rng(7)
    for trial in range(8):
        N, M = rng.integers(80, 500), rng.integers(25, 300)
        W = rng.standard_t(3, size=(N, M))
        ev = np.sort(np.linalg.eigvalsh(W.T @ W if N >= M else W @ W.T))
        ref = ww.WWFit(ev[ev > EVALS_THRESH])
        fit = fit_power_law(ev)
        assert fit.alpha == pytest.approx(ref.alpha, rel=1e-6)
        assert fit.xmin == pytest.approx(ref.xmin, rel=1e-6)
        assert fit.D == pytest.approx(ref.D, rel=1e-6)


def test_agrees_with_powerlaw_package_at_fixed_xmin():
    powerlaw = pytest.importorskip("powerlaw")
    x = pareto(2.5, 3000, seed=11)
    ours = fit_power_law(x)
    theirs = powerlaw.Fit(x, xmin=ours.xmin, verbose=False)
    assert theirs.power_law.alpha == pytest.approx(ours.alpha, rel=1e-6)
    assert theirs.power_law.D == pytest.approx(ours.D, abs=2 / ours.num_pl_spikes)


@pytest.mark.parametrize(
    "evals, why, why_median",
    [
        (np.array([]), "at least 2", "at least 2"),
        (np.array([3.0]), "at least 2", "at least 2"),
        (np.zeros(50), "at least 2", "rank below half"),
        (np.full(40, 2.5), "tied", "tied"),
        (np.array([0.0] * 30 + [1e-7] * 5), "at least 2", "rank below half"),
    ],
)
def test_degenerate_spectra_fail_with_reason_and_nan(evals, why, why_median):
    for method, reason in (("ww", why), ("median", why_median)):
        fit = fit_power_law(evals, method=method)
        assert fit.status == "failed"
        assert reason in fit.reason
        assert math.isnan(fit.alpha) and math.isnan(fit.xmin) and math.isnan(fit.D)
        assert fit.num_pl_spikes is None


def test_median_uses_the_middle_eigenvalue_as_xmin():
    x = np.arange(1.0, 101.0)
    fit = fit_power_law(x, method="median")
    assert fit.xmin == 51.0
    tail = x[50:]
    assert fit.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / 51.0)))


def test_clip_xmax_removes_fingers():
    x = pareto(3.0, 400, seed=5)
    fingers = np.concatenate([x, [x.max() * 40, x.max() * 60]])
    raw = fit_power_law(fingers)
    fixed = fit_power_law(fingers, fix_fingers="clip_xmax")
    if fixed.num_fingers:
        assert fixed.alpha + 1.0 < raw.alpha
        assert fixed.raw_alpha == raw.alpha
        assert fixed.xmax < fingers.max()
    clean = fit_power_law(x, fix_fingers="clip_xmax", finger_thresh=100.0)
    assert clean.num_fingers == 0 and clean.alpha == fit_power_law(x).alpha


def test_unknown_options_are_rejected():
    with pytest.raises(ValueError, match="unknown fit"):
        fit_power_law(np.ones(5), method="nope")
    with pytest.raises(ValueError, match="fix_fingers"):
        fit_power_law(np.ones(5), fix_fingers="peak")


def test_bootstrap_interval_covers_truth_and_is_reproducible():
    x = pareto(2.5, 800, seed=9)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    lo, hi = bootstrap_alpha(x, n_boot=60, generator=g1)
    assert (lo, hi) == bootstrap_alpha(x, n_boot=60, generator=g2)
    assert lo < 2.5 < hi
    assert lo < fit_power_law(x).alpha < hi
    other = bootstrap_alpha(x, n_boot=60, generator=torch.Generator().manual_seed(1), resample="nonparametric")
    assert other != (lo, hi) and other[0] < 2.5 < other[1]
    with pytest.raises(ValueError, match="resampling"):
        bootstrap_replicates(x, n_boot=2, resample="jackknife")
    with pytest.raises(ValueError, match="interval"):
        bootstrap_alpha(x, n_boot=4, interval="bca")


def test_semiparametric_samples_keep_the_body_and_draw_the_fitted_tail():
    """Clauset's scheme: below xmin only observed eigenvalues, above it Pareto(alpha_hat), tail share n_tail/n."""
    from spectra.core.powerlaw import _semiparametric_samples

    rng = np.random.default_rng(3)
    x = np.sort(np.concatenate([rng.uniform(0.1, 0.9, 300), pareto(3.0, 200, seed=4)]))
    fit = FITS["median"](x)  # xmin at the median: body and tail both 250
    samples = np.concatenate(list(_semiparametric_samples(x, fit, 200, torch.Generator().manual_seed(0))))
    body, tail = samples[samples < fit.xmin], samples[samples >= fit.xmin]
    assert np.isin(body, x).all()
    assert tail.size / samples.size == pytest.approx(fit.num_pl_spikes / x.size, abs=0.01)
    # Pareto(alpha) above xmin: ln(x / xmin) is exponential with mean 1 / (alpha - 1)
    assert np.log(tail / fit.xmin).mean() == pytest.approx(1 / (fit.alpha - 1), rel=0.02)
    assert not np.isin(tail, x).any()


def test_basic_and_percentile_intervals_hand_computed():
    reps = np.arange(1.0, 102.0) / 10 + 2.0  # 2.1 .. 12.1
    lo, hi = np.quantile(reps, [0.025, 0.975], method="median_unbiased")
    assert bootstrap_interval(5.0, reps, kind="percentile") == pytest.approx((lo, hi))
    assert bootstrap_interval(5.0, reps, kind="basic") == pytest.approx((max(10 - hi, 1.0), 10 - lo))


@pytest.mark.parametrize("method", ["ww", "median"])
def test_bootstrap_coverage_on_pareto_samples(method):
    """A small version of benchmarks/uncertainty.py: 120 samples of n = 100, 40 refits each."""
    alpha, hits = 3.0, 0
    for trial in range(120):
        x = pareto(alpha, 100, seed=1000 + trial)
        lo, hi = bootstrap_alpha(x, n_boot=40, method=method, generator=torch.Generator().manual_seed(trial))
        hits += lo <= alpha <= hi
    assert 0.88 <= hits / 120 <= 0.99


def test_interval_that_misses_its_estimate_is_flagged():
    assert interval_warning(114.6, (6.5, 35.1)).startswith("unstable fit: alpha 115")
    assert interval_warning(3.0, (2.0, 4.0)) == ""
    assert interval_warning(3.0, None) == "" and interval_warning(3.0, (float("nan"), float("nan"))) == ""


def test_accepts_tensors():
    x = torch.tensor(pareto(2.0, 500, seed=2))
    assert fit_power_law(x).alpha == fit_power_law(x.numpy()).alpha


def test_median_fit_keeps_every_eigenvalue_as_the_reference_does():
    """TempBalance/LLR/AlphaDecay (``filter_zeros=False``): i = int(N / 2) over the whole spectrum,
    zeros included, so a low-rank matrix's xmin is its median eigenvalue, not the median of the
    eigenvalues above 1e-5 (the WeightWatcher threshold the ``ww`` fit keeps)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([np.zeros(150), 1e-7 * rng.random(30), pareto(3.0, 220, seed=4)])
    fit = fit_power_law(x, method="median")
    s = np.sort(x)
    i = s.size // 2
    n = s.size - i
    expected = 1 + n / (np.log(s[i:]).sum() - n * np.log(s[i]))
    assert fit.xmin == s[i] and fit.num_pl_spikes == n
    assert fit.alpha == pytest.approx(expected, rel=1e-12)
    filtered = fit_power_law(x[x > 1e-5], method="median")
    assert abs(filtered.alpha - fit.alpha) > 0.01  # the old, thresholded fit was a different number


def test_median_bootstrap_fits_the_same_eigenvalues_as_the_reported_fit():
    """The median fit keeps zeros (its reference's filter_zeros=False); its interval must too."""
    rng = np.random.default_rng(8)
    x = np.concatenate([np.zeros(150), rng.uniform(0.01, 0.5, 150), pareto(3.0, 100, seed=8)])
    reported = fit_power_law(x, method="median").alpha
    thresholded = fit_power_law(x[x > EVALS_THRESH], method="median").alpha
    assert abs(reported - thresholded) > 0.1  # dropping the zeros would move the median, and alpha
    lo, hi = bootstrap_alpha(x, n_boot=60, method="median", generator=torch.Generator().manual_seed(0))
    assert lo <= reported <= hi
    reps = bootstrap_replicates(x, n_boot=60, method="median", generator=torch.Generator().manual_seed(0))
    assert abs(np.median(reps) - reported) < abs(np.median(reps) - thresholded)
