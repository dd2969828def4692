"""Gradient-noise estimators against synthetic per-example gradients with known mean and covariance."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from spectra.core.noise import (
    RELIABLE_SPAN,
    GradientNoise,
    NoiseState,
    _noise_add,
    _noise_compute,
    _noise_update,
    adam_noise_coefficient,
    adam_noise_estimates,
    gradient_norms,
    mean_abs_difference,
    unbiased_estimates,
)


def test_unbiased_estimates_hand_computed():
    # |G_b|^2 = |G|^2 + tr/b: with |G|^2 = 2, tr = 8, b = 2, B = 8 -> small 6, big 3
    assert unbiased_estimates(6.0, 3.0, 2, 8) == pytest.approx((2.0, 8.0))
    with pytest.raises(ValueError, match="b_big > b_small"):
        unbiased_estimates(1.0, 1.0, 4, 4)


def test_per_example_estimator_is_bessel_corrected_sample_variance():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(10, 7, generator=gen, dtype=torch.float64) + 0.5
    small = float(g.square().sum(1).mean())
    big = float(g.mean(0).square().sum())
    grad_sq, trace = unbiased_estimates(small, big, 1, 10)
    expected_trace = float(g.var(0, unbiased=True).sum())
    assert trace == pytest.approx(expected_trace, rel=1e-12)
    assert grad_sq == pytest.approx(big - expected_trace / 10, rel=1e-12)


@pytest.mark.parametrize("b_small,n_small", [(1, 8), (4, 2), (3, 5)])
def test_estimators_unbiased_on_gaussian_gradients(b_small, n_small):
    """Average of many rounds converges to the true |G|^2 and tr(Sigma) (not to the biased |G_B|^2)."""
    gen = torch.Generator().manual_seed(1)
    d, rounds = 6, 20000
    mean = torch.tensor([1.0, -0.5, 0.25, 0.0, 0.3, 0.2], dtype=torch.float64)
    std = torch.tensor([2.0, 1.0, 0.5, 3.0, 1.0, 0.1], dtype=torch.float64)
    true_g, true_tr = float(mean.square().sum()), float(std.square().sum())
    ex = mean + std * torch.randn(rounds, n_small, b_small, d, generator=gen, dtype=torch.float64)
    micro = ex.mean(2)  # (rounds, n, d): gradients of the small batches
    small = micro.square().sum(-1).mean(1)
    big = micro.mean(1).square().sum(-1)
    g_est, t_est = unbiased_estimates(small, big, b_small, b_small * n_small)
    # standard errors from the sample itself; 5 sigma
    assert abs(float(g_est.mean()) - true_g) < 5 * float(g_est.std()) / math.sqrt(rounds)
    assert abs(float(t_est.mean()) - true_tr) < 5 * float(t_est.std()) / math.sqrt(rounds)
    # the naive big-batch norm is biased by tr/B: the test would catch using it directly
    assert float(big.mean()) - true_g > 10 * float(big.std()) / math.sqrt(rounds)


def test_accumulator_matches_pure_functions_and_sums_over_groups():
    gen = torch.Generator().manual_seed(2)
    groups = {"fc": ("fc.weight", "fc.bias"), "out": ("out.weight",)}
    noise = GradientNoise(accumulate=3, groups=groups)
    state = NoiseState()
    for _ in range(4):
        grads = [{"fc.weight": torch.randn(3, 2, generator=gen) + 1, "fc.bias": torch.randn(3, generator=gen),
                  "out.weight": torch.randn(1, 3, generator=gen) - 2} for _ in range(3)]
        for g in grads:
            noise.accumulate(g, batch_size=5)
        small = {k: sum(float(g[k].double().square().sum()) for g in grads) / 3 for k in grads[0]}
        big = {k: float((sum(g[k].double() for g in grads) / 3).square().sum()) for k in grads[0]}
        state = _noise_update(state, small, big, 5, 15, groups)
    noise.accumulate(grads[0], batch_size=5)  # an open round is not counted
    est, ref = noise.compute(), _noise_compute(state)
    assert est.rounds == ref.rounds == 4
    for name in groups:
        assert est.groups[name].grad_sq == pytest.approx(ref.groups[name].grad_sq)
        assert est.groups[name].trace_sigma == pytest.approx(ref.groups[name].trace_sigma)
    total_g = sum(est.groups[n].grad_sq for n in groups)
    total_t = sum(est.groups[n].trace_sigma for n in groups)
    assert est.total.grad_sq == pytest.approx(total_g)
    assert est.total.trace_sigma == pytest.approx(total_t)
    # global B_simple is the ratio of sums, not the mean of per-layer ratios
    assert est.total.b_simple == pytest.approx(total_t / total_g)


def test_accumulator_reads_module_grads():
    model = torch.nn.Linear(2, 1, bias=False)
    noise = GradientNoise(accumulate=2)
    for target in (1.0, 3.0):
        model.zero_grad()
        model.weight.grad = torch.tensor([[target, 0.0]])
        noise.accumulate(model, batch_size=1)
    est = noise.compute().groups["weight"]
    # g = 1, 3: small 5, big 4 -> |G|^2 = 2*4 - 5 = 3, tr = (5 - 4) / (1 - 1/2) = 2
    assert (est.grad_sq, est.trace_sigma) == pytest.approx((3.0, 2.0))


def test_ema_smooths_numerator_and_denominator_separately():
    beta = 0.5
    state = NoiseState(beta=beta)
    state = _noise_update(state, {"w": 5.0}, {"w": 2.0}, 1, 4)  # -> (1, 4)
    state = _noise_update(state, {"w": 1.0}, {"w": 1.0}, 1, 4)  # -> (1, 0)
    est = _noise_compute(state).groups["w"]
    assert est.grad_sq == pytest.approx((beta * 1 + 1) / (beta + 1))
    assert est.trace_sigma == pytest.approx((beta * 4 + 0) / (beta + 1))
    assert est.b_simple == pytest.approx((beta * 4) / (beta * 1 + 1))


def test_negative_signal_estimate_fails_with_reason():
    state = _noise_update(NoiseState(), {"w": 10.0}, {"w": 1.0}, 1, 2)  # |G|^2 = 2 - 10 < 0
    est = _noise_compute(state).groups["w"]
    assert est.status == "failed" and "not positive" in est.reason
    assert math.isnan(est.b_simple) and math.isnan(est.snr)


def test_accumulator_validates_arguments():
    with pytest.raises(ValueError, match="accumulate"):
        GradientNoise(accumulate=1)
    with pytest.raises(ValueError, match="beta"):
        GradientNoise(beta=0.0)
    with pytest.raises(ValueError, match="level"):
        GradientNoise(level=1.0)
    noise = GradientNoise()
    noise.accumulate({"w": torch.ones(2)}, batch_size=4)
    with pytest.raises(ValueError, match="two small batches"):
        noise.close_round()
    with pytest.raises(ValueError, match="batch_size changed"):
        noise.accumulate({"w": torch.ones(2)}, batch_size=2)
    with pytest.raises(ValueError, match="big_sq"):
        noise.update({"w": 1.0}, {}, 1, 2)


def test_adam_coefficient_closed_form_matches_sum():
    for beta1, t in [(0.9, 1), (0.9, 7), (0.5, 30), (0.99, 200)]:
        w = [(1 - beta1) * beta1**k / (1 - beta1**t) for k in range(t)]
        assert adam_noise_coefficient(beta1, t) == pytest.approx(sum(x * x for x in w), rel=1e-10)
    assert adam_noise_coefficient(0.9, 1) == pytest.approx(1.0)


def test_adam_proxy_at_step_one_is_nan_not_a_division_by_zero():
    g = torch.tensor([0.3, -0.2])
    grad_sq, trace = adam_noise_estimates(0.1 * g, 0.001 * g * g, beta1=0.9, beta2=0.999, step=1)
    assert math.isnan(grad_sq) and math.isnan(trace)


def test_adam_proxy_recovers_signal_and_noise():
    gen = torch.Generator().manual_seed(3)
    runs, steps, beta1, beta2 = 4000, 60, 0.9, 0.95
    mean = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    std = torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64)
    m = torch.zeros(runs, 3, dtype=torch.float64)
    v = torch.zeros(runs, 3, dtype=torch.float64)
    for _ in range(steps):
        g = mean + std * torch.randn(runs, 3, generator=gen, dtype=torch.float64)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
    ests = torch.tensor([adam_noise_estimates(m[i], v[i], beta1=beta1, beta2=beta2, step=steps)
                         for i in range(runs)])
    g_mean, t_mean = ests.mean(0).tolist()
    assert g_mean == pytest.approx(float(mean.square().sum()), rel=0.05)
    assert t_mean == pytest.approx(float(std.square().sum()), rel=0.05)


def test_gradient_norms_hand_computed():
    n = gradient_norms(torch.diag(torch.tensor([3.0, 4.0])))
    assert (n.fro, n.spectral, n.nuclear) == pytest.approx((5.0, 4.0, 7.0))
    assert n.s_ratio == pytest.approx(4 / 7)
    rank1 = gradient_norms(torch.outer(torch.arange(1.0, 4.0), torch.ones(5)))
    assert rank1.effective_rank == pytest.approx(1.0, abs=1e-6)
    conv = gradient_norms(torch.ones(2, 3, 2, 2))  # viewed as (2, 12), rank 1
    assert conv.spectral == pytest.approx(math.sqrt(2 * 12))
    vec = gradient_norms(torch.tensor([3.0, 4.0]))
    assert vec.fro == 5.0 and math.isnan(vec.nuclear)


def test_mean_abs_difference():
    assert mean_abs_difference([1.0, 3.0, 2.0, float("nan")]) == pytest.approx(1.5)
    assert math.isnan(mean_abs_difference([1.0]))


def test_core_imports_no_frame_plot_or_cli_library():
    code = ("import sys, spectra.core.noise, spectra.core.geometry; "
            "bad = [m for m in ('pandas', 'matplotlib', 'typer', 'rich', 'seaborn') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------ intervals and reliability


def _rounds(gen, rounds, *, mean, std, b_small, n_small):
    """Per round: (small_sq, big_sq) of n_small small batches of b_small Gaussian per-example gradients."""
    ex = mean + std * torch.randn(rounds, n_small, b_small, mean.numel(), generator=gen, dtype=torch.float64)
    micro = ex.mean(2)
    return micro.square().sum(-1).mean(1), micro.mean(1).square().sum(-1)


def test_intervals_are_student_over_the_per_round_estimates():
    from scipy import stats

    gen = torch.Generator().manual_seed(4)
    small, big = _rounds(gen, 6, mean=torch.full((50,), 0.3, dtype=torch.float64),
                         std=torch.ones(50, dtype=torch.float64), b_small=2, n_small=4)
    state = NoiseState()
    for s, b in zip(small.tolist(), big.tolist()):
        state = _noise_update(state, {"w": s}, {"w": b}, 2, 8)
    st = _noise_compute(state).groups["w"]
    g, t = unbiased_estimates(small, big, 2, 8)
    for ci, x in ((st.g2_ci, g.numpy()), (st.trace_sigma_ci, t.numpy())):
        assert ci == pytest.approx(stats.t.interval(0.95, 5, loc=x.mean(), scale=stats.sem(x)))
    lo, hi = st.b_simple_ci
    assert lo < st.b_simple < hi and st.reliable and st.reliable_reason == ""
    assert (st.grad_sq, st.trace_sigma) == pytest.approx((float(g.mean()), float(t.mean())))


def test_interval_coverage_on_gaussian_gradients():
    """400 experiments of 8 rounds with known |G|^2 = 4.5 and tr(Sigma) = 50 (B_simple 11.1)."""
    gen = torch.Generator().manual_seed(5)
    d, trials, rounds = 50, 400, 8
    mean, std = torch.full((d,), 0.3, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    truth = {"g2_ci": 4.5, "trace_sigma_ci": 50.0, "b_simple_ci": 50.0 / 4.5}
    small, big = _rounds(gen, trials * rounds, mean=mean, std=std, b_small=4, n_small=4)
    hits = {k: 0 for k in truth}
    for i in range(trials):
        state = NoiseState()
        for r in range(i * rounds, (i + 1) * rounds):
            state = _noise_update(state, {"w": float(small[r])}, {"w": float(big[r])}, 4, 16)
        st = _noise_compute(state).total
        for key, value in truth.items():
            ci = getattr(st, key)
            hits[key] += ci is None or ci[0] <= value <= ci[1]  # None: an unbounded interval covers
    for key in truth:
        assert 0.92 <= hits[key] / trials <= 0.98, (key, hits[key] / trials)


def test_reliability_flags_one_round_unresolved_signal_and_wide_intervals():
    one = _noise_compute(_noise_update(NoiseState(), {"w": 5.0}, {"w": 2.0}, 1, 4)).groups["w"]
    assert one.status == "success" and not one.reliable and "one round" in one.reliable_reason
    assert one.g2_ci is None and one.b_simple_ci is None
    # |G|^2 estimates with mean 0.7 but a spread that reaches below 0: the signal is not resolved
    state = NoiseState()
    for g in (2.0, -0.5, 1.5, -0.2):
        state = _noise_add(state, {"w": (g, 10.0)})
    st = _noise_compute(state).groups["w"]
    assert st.status == "success" and st.g2_ci[0] <= 0 and st.b_simple_ci is None
    assert not st.reliable and "not resolved" in st.reliable_reason
    state = NoiseState()
    for g, t in ((0.8, 10.0), (1.0, 10.0), (1.2, 10.0), (1.0, 10.0), (0.9, 10.0), (1.1, 10.0)):
        state = _noise_add(state, {"w": (g, t)})
    st = _noise_compute(state).groups["w"]
    assert st.g2_ci[0] > 0 and st.reliable, st
    lo, hi = st.b_simple_ci
    assert hi / lo < RELIABLE_SPAN
    state = NoiseState()
    for g, t in ((0.25, 10.0), (1.0, 10.0), (1.75, 10.0), (1.0, 10.0), (0.3, 10.0), (1.7, 10.0)):
        state = _noise_add(state, {"w": (g, t)})
    st = _noise_compute(state).groups["w"]
    assert st.g2_ci[0] > 0 and not st.reliable and "spans a factor" in st.reliable_reason


def test_failed_estimate_is_never_reliable():
    state = NoiseState()
    for g in (-1.0, -2.0, -1.5):
        state = _noise_add(state, {"w": (g, 4.0)})
    st = _noise_compute(state).groups["w"]
    assert st.status == "failed" and not st.reliable and st.reliable_reason == st.reason


def test_update_takes_norms_as_tensors_or_floats_and_fits_ddp_ranks():
    """Simulated data parallel: 4 ranks of 8 examples; local norms before, averaged gradient after."""
    gen = torch.Generator().manual_seed(6)
    by_accumulate, by_norms, by_floats = GradientNoise(), GradientNoise(), GradientNoise()
    for _ in range(3):
        local = [{"w": torch.randn(5, generator=gen) + 0.5, "b": torch.randn(2, generator=gen)} for _ in range(4)]
        for g in local:
            by_accumulate.accumulate(g, batch_size=8)
        by_accumulate.close_round()
        small = {k: sum(g[k].double().square().sum() for g in local) / 4 for k in ("w", "b")}  # all_reduce / n
        big = {k: (sum(g[k].double() for g in local) / 4).square().sum() for k in ("w", "b")}
        by_norms.update(small, big, b_small=8, b_big=32)
        by_floats.update({k: float(v) for k, v in small.items()}, {k: float(v) for k, v in big.items()}, 8, 32)
    a, b, c = by_accumulate.compute(), by_norms.compute(), by_floats.compute()
    for key in ("w", "b"):
        assert b.groups[key].grad_sq == pytest.approx(a.groups[key].grad_sq)
        assert b.groups[key].g2_ci == pytest.approx(a.groups[key].g2_ci)
        assert c.groups[key] == b.groups[key]


def test_group_missing_from_a_round_counts_as_zero_gradient():
    state = NoiseState()
    state = _noise_add(state, {"a": (2.0, 4.0), "b": (1.0, 1.0)})
    state = _noise_add(state, {"a": (4.0, 8.0)})
    est = _noise_compute(state, ["a", "b", "c"])
    assert est.groups["b"].grad_sq == pytest.approx(0.5) and est.groups["c"].status == "skipped"
    assert est.total.grad_sq == pytest.approx((3.0 + 4.0) / 2)
