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


def test_random_update_overlap_matches_baseline():
    gen = torch.Generator().manual_seed(2)
    n, m, k = 48, 32, 4
    w = _weight(n, m, gen)
    overlaps = [update_geometry(w, w + torch.randn(n, m, generator=gen, dtype=torch.float64), topk=k).subspace_overlap
                for _ in range(60)]
    baseline = (k / n + k / m) / 2
    assert update_geometry(w, w + 1, topk=k).overlap_baseline == pytest.approx(baseline)
    assert np.mean(overlaps) == pytest.approx(baseline, rel=0.2)


def test_overlap_baseline_is_exact_expectation():
    gen = torch.Generator().manual_seed(3)
    n, k = 16, 3
    fixed = _orthonormal(n, k, gen)
    values = [subspace_overlap(_orthonormal(n, k, gen), fixed) for _ in range(3000)]
    assert overlap_baseline(k, n) == pytest.approx(k / n)
    assert np.mean(values) == pytest.approx(k / n, abs=4 * np.std(values) / math.sqrt(len(values)))


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
