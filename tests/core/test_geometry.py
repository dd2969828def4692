"""Update geometry on constructed updates, and the activation decomposition on constructed layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from spectra.core.geometry import (
    activation_geometry,
    effective_rank,
    matrix_view,
    overlap_baseline,
    principal_angles,
    relative_update,
    stable_rank,
    subspace_overlap,
    tokenwise_fit,
    update_geometry,
)


def _orthonormal(n, k, gen):
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return q


def _weight(n, m, gen, spectrum=None):
    k = min(n, m)
    s = torch.as_tensor(spectrum if spectrum is not None else torch.linspace(10, 1, k), dtype=torch.float64)
    return _orthonormal(n, k, gen) @ torch.diag(s) @ _orthonormal(m, k, gen).T


def test_scalar_metrics_hand_computed():
    w = torch.diag(torch.tensor([4.0, 3.0]))
    assert relative_update(w, w + torch.diag(torch.tensor([0.0, 2.5]))) == pytest.approx(0.5)
    geo = update_geometry(w, 2 * w, topk=1)
    assert geo.sv_growth == pytest.approx(1.0)
    assert geo.spectral_ratio == pytest.approx(1.0)
    assert geo.rel_update == pytest.approx(1.0)
    assert geo.dw_stable_rank == pytest.approx((16 + 9) / 16)
    assert stable_rank(torch.tensor([3.0, 0.0])) == 1.0
    assert effective_rank(torch.tensor([2.0, 2.0])) == pytest.approx(2.0)
    assert math.isnan(stable_rank(torch.zeros(3)))


def test_rank_one_update_has_stable_and_effective_rank_one():
    gen = torch.Generator().manual_seed(0)
    w = _weight(20, 12, gen)
    dw = 0.3 * torch.outer(torch.randn(20, generator=gen, dtype=torch.float64),
                           torch.randn(12, generator=gen, dtype=torch.float64))
    geo = update_geometry(w, w + dw, topk=3)
    assert geo.dw_stable_rank == pytest.approx(1.0, abs=1e-9)
    assert geo.dw_effective_rank == pytest.approx(1.0, abs=1e-6)
    full = update_geometry(w, w + torch.randn(20, 12, generator=gen, dtype=torch.float64), topk=3)
    assert full.dw_stable_rank > 3 and full.dw_effective_rank > 8


def test_update_inside_top_subspace_has_overlap_one():
    gen = torch.Generator().manual_seed(1)
    n, m, k = 30, 20, 4
    u, v = _orthonormal(n, m, gen), _orthonormal(m, m, gen)
    s = torch.linspace(10, 1, m, dtype=torch.float64)
    w = u @ torch.diag(s) @ v.T
    dw = u[:, :k] @ torch.diag(torch.tensor([0.5, -0.2, 0.3, 0.1], dtype=torch.float64)) @ v[:, :k].T
    geo = update_geometry(w, w + dw, topk=k)
    assert geo.subspace_overlap == pytest.approx(1.0, abs=1e-9)
    assert geo.overlap_left == pytest.approx(1.0, abs=1e-9)
    assert max(geo.principal_angles) == pytest.approx(0.0, abs=1e-3)
    # an update in the bottom subspace is orthogonal to the top one
    low = u[:, -k:] @ torch.diag(torch.ones(k, dtype=torch.float64)) @ v[:, -k:].T
    assert update_geometry(w, w + 0.01 * low, topk=k).subspace_overlap == pytest.approx(0.0, abs=1e-9)


def _float32_model_weight(gen, n=160, m=96):
    """A float32 weight with a decaying spectrum and its float64 singular vectors (u, s, v)."""
    u, v = _orthonormal(n, n, gen), _orthonormal(m, m, gen)
    s = torch.logspace(1, -1, min(n, m), dtype=torch.float64)
    return (u[:, :m] @ torch.diag(s) @ v.T).float(), u, s, v


def _merge(w, delta, dtype=torch.float32):
    """W + delta rounded to the checkpoint dtype, as a merged LoRA or a saved fine-tune would be."""
    return (w.double() + delta).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rank_one_update_on_top_singular_pair_has_overlap_one(dtype):
    """Before counting only dW's numerical rank this read 0.12: null-space vectors of dW entered."""
    w, u, s, v = _float32_model_weight(torch.Generator().manual_seed(10))
    w = w.to(dtype)
    geo = update_geometry(w, _merge(w, 0.05 * s[0] * torch.outer(u[:, 0], v[:, 0]), dtype), topk=10)
    assert (geo.dw_rank, geo.dw_k, geo.topk) == (1, 1, 10)
    assert geo.subspace_overlap >= 0.99 and geo.overlap_left >= 0.99 and geo.overlap_right >= 0.99
    assert geo.overlap_baseline == pytest.approx((10 / 160 + 10 / 96) / 2)
    assert len(geo.principal_angles) == 1 and geo.principal_angles[0] < 5.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rank_three_update_orthogonal_to_top_ten_has_overlap_zero(dtype):
    w, u, s, v = _float32_model_weight(torch.Generator().manual_seed(11))
    w = w.to(dtype)
    delta = u[:, 20:23] @ torch.diag(torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)) @ v[:, 20:23].T
    geo = update_geometry(w, _merge(w, delta, dtype), topk=10)
    assert (geo.dw_rank, geo.dw_k) == (3, 3)
    assert geo.subspace_overlap <= 0.01


@pytest.mark.parametrize("rank", [4, 16])
def test_merged_lora_delta_has_its_rank_and_a_random_overlap(rank):
    """A rank-r B @ A merged into float32 weights: rank r despite the rounding of the sum."""
    gen = torch.Generator().manual_seed(12)
    w, *_ = _float32_model_weight(gen)
    overlaps = []
    for _ in range(12):
        lora_b = 0.02 * torch.randn(160, rank, generator=gen, dtype=torch.float64)
        lora_a = 0.02 * torch.randn(rank, 96, generator=gen, dtype=torch.float64)
        geo = update_geometry(w, _merge(w, lora_b @ lora_a), topk=10)
        assert (geo.dw_rank, geo.dw_k) == (rank, min(rank, 10))
        overlaps.append(geo.subspace_overlap)
    # random directions: the mean sits at the baseline (12 draws; generous bound, the exact test is below)
    assert np.mean(overlaps) == pytest.approx((10 / 160 + 10 / 96) / 2, rel=0.3)


def test_random_full_rank_update_is_within_five_percent_of_baseline():
    gen = torch.Generator().manual_seed(2)
    n, m, k = 128, 96, 10
    w = _weight(n, m, gen)
    geos = [update_geometry(w, w + torch.randn(n, m, generator=gen, dtype=torch.float64), topk=k)
            for _ in range(40)]
    baseline = (k / n + k / m) / 2
    assert all(g.dw_rank == m and g.dw_k == k and g.overlap_baseline == pytest.approx(baseline) for g in geos)
    assert np.mean([g.subspace_overlap for g in geos]) == pytest.approx(baseline, rel=0.05)


@pytest.mark.parametrize("j,k", [(3, 3), (1, 5), (6, 2)])
def test_overlap_baseline_is_exact_expectation(j, k):
    """Monte Carlo: a random j-dim subspace against a fixed k-dim one in R^n overlaps k/n on average."""
    gen = torch.Generator().manual_seed(3)
    n = 16
    fixed = _orthonormal(n, k, gen)
    values = [subspace_overlap(_orthonormal(n, j, gen), fixed) for _ in range(3000)]
    assert overlap_baseline(k, n) == pytest.approx(k / n)
    assert np.mean(values) == pytest.approx(k / n, abs=4 * np.std(values) / math.sqrt(len(values)))


def test_overlap_is_share_of_the_first_subspace_inside_the_second():
    e = torch.eye(4, dtype=torch.float64)
    assert subspace_overlap(e[:, :1], e[:, :3]) == 1.0
    assert subspace_overlap(e[:, :2], e[:, 1:2]) == 0.5
    assert math.isnan(subspace_overlap(e[:, :0], e[:, :2]))


def test_zero_weight_or_rounding_only_update_has_no_overlap():
    gen = torch.Generator().manual_seed(13)
    zero = update_geometry(torch.zeros(8, 6), torch.randn(8, 6, generator=gen), topk=3)
    assert zero.topk == 0 and math.isnan(zero.subspace_overlap) and math.isnan(zero.overlap_baseline)
    w = torch.randn(64, 32, generator=gen)
    # dW that is only the float32 rounding of W (relative 1e-7 per entry) has no direction
    rounded = (w.double() * (1 + 1e-7 * torch.randn(64, 32, generator=gen, dtype=torch.float64))).float()
    assert bool((rounded != w).any())
    geo = update_geometry(w, rounded, topk=3)
    assert geo.dw_rank == 0 and math.isnan(geo.subspace_overlap)


def test_principal_angles_match_scipy():
    gen = torch.Generator().manual_seed(4)
    a, b = _orthonormal(10, 3, gen), _orthonormal(10, 3, gen)
    ours = np.sort(principal_angles(a, b).numpy())
    ref = np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy()))
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_conv_kernel_is_viewed_as_out_by_rest():
    k = torch.randn(8, 3, 3, 3)
    assert matrix_view(k).shape == (8, 27)
    geo = update_geometry(k, k * 1.1, topk=2)
    assert geo.rel_update == pytest.approx(0.1, rel=1e-6)
    with pytest.raises(ValueError):
        matrix_view(torch.ones(3))
    with pytest.raises(ValueError, match="shapes differ"):
        update_geometry(torch.ones(2, 3), torch.ones(3, 2))


def test_zero_update_gives_nan_overlap_not_error():
    w = torch.eye(3)
    geo = update_geometry(w, w.clone())
    assert geo.rel_update == 0.0 and math.isnan(geo.subspace_overlap) and math.isnan(geo.dw_stable_rank)


@pytest.mark.parametrize("method", ["local", "global"])
def test_tokenwise_update_is_explained(method):
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(400, 8, generator=gen, dtype=torch.float64)
    scale = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    geo = activation_geometry(h, h + h * scale, k=2, method=method, ridge=1e-6)
    assert geo.alignment == pytest.approx(1.0, abs=1e-4)
    assert geo.residual_energy < 1e-4
    assert geo.angular_deviation < 1.0
    assert geo.projection_baseline == pytest.approx(2 / 8)


@pytest.mark.parametrize("method", ["local", "global"])
def test_context_mixing_update_is_residual(method):
    """An update that depends only on *other* tokens (a shuffle) is not tokenwise."""
    gen = torch.Generator().manual_seed(6)
    h = torch.randn(600, 6, generator=gen, dtype=torch.float64)
    mixed = h[torch.randperm(600, generator=gen)]
    geo = activation_geometry(h, h + mixed, method=method, neighbors=32)
    assert geo.residual_energy > 0.8
    assert geo.residual_alignment > geo.alignment


def test_tokenwise_fit_rejects_unknown_method():
    with pytest.raises(ValueError, match="local"):
        tokenwise_fit(torch.ones(3, 2), torch.ones(3, 2), method="knn")
