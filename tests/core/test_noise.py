"""Gradient-noise estimators against synthetic per-example gradients with known mean and covariance."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from spectra.core.noise import (
    GradientNoise,
    NoiseState,
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
            noise.update(g, batch_size=5)
        small = {k: sum(float(g[k].double().square().sum()) for g in grads) / 3 for k in grads[0]}
        big = {k: float((sum(g[k].double() for g in grads) / 3).square().sum()) for k in grads[0]}
        state = _noise_update(state, small, big, 5, 15)
    noise.update(grads[0], batch_size=5)  # an open round is not counted
    est, ref = noise.compute(), _noise_compute(state, groups)
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
        noise.update(model, batch_size=1)
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


def test_adam_coefficient_closed_form_matches_sum():
    for beta1, t in [(0.9, 1), (0.9, 7), (0.5, 30), (0.99, 200)]:
        w = [(1 - beta1) * beta1**k / (1 - beta1**t) for k in range(t)]
        assert adam_noise_coefficient(beta1, t) == pytest.approx(sum(x * x for x in w), rel=1e-10)
    assert adam_noise_coefficient(0.9, 1) == pytest.approx(1.0)


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
