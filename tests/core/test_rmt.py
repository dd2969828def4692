import math

import numpy as np
import pytest

from spectra.core.rmt import (
    jensen_shannon_distance,
    matrix_entropy,
    mp_cdf,
    mp_edges,
    mp_fit,
    norm_metrics,
)


def gram_evals(W: np.ndarray) -> np.ndarray:
    N, M = W.shape
    return np.sort(np.linalg.eigvalsh(W.T @ W if N >= M else W @ W.T))


def test_norm_metrics_by_hand():
    ev = np.array([0.5, 2.0, 8.0])
    m = norm_metrics(ev, alpha=3.0)
    assert m["norm"] == 10.5
    assert m["log_norm"] == pytest.approx(math.log10(10.5))
    assert m["lambda_max"] == m["spectral_norm"] == 8.0
    assert m["log_spectral_norm"] == pytest.approx(math.log10(8.0))
    assert m["stable_rank"] == pytest.approx(10.5 / 8.0)
    assert m["alpha_weighted"] == pytest.approx(3.0 * math.log10(8.0))
    assert m["log_alpha_norm"] == pytest.approx(math.log10(0.125 + 8.0 + 512.0))


def test_norm_metrics_without_alpha_are_nan():
    m = norm_metrics(np.array([1.0, 2.0]))
    assert math.isnan(m["alpha_weighted"]) and math.isnan(m["log_alpha_norm"])


@pytest.mark.parametrize("k", [1, 3, 10])
def test_stable_rank_of_rank_k_with_equal_singular_values_is_k(k):
    rng = np.random.default_rng(k)
    U, _ = np.linalg.qr(rng.standard_normal((60, k)))
    V, _ = np.linalg.qr(rng.standard_normal((40, k)))
    W = 3.0 * U @ V.T
    ev = gram_evals(W)
    assert norm_metrics(ev)["stable_rank"] == pytest.approx(k, rel=1e-9)


def test_entropy_bounds():
    assert matrix_entropy(np.ones(16), 16) == pytest.approx(1.0)
    assert matrix_entropy(np.array([0.0, 0.0, 5.0]), 1) == 0.0
    ev = np.array([1.0, 2.0, 3.0, 10.0])
    assert 0 < matrix_entropy(ev, 4) < 1


@pytest.mark.parametrize("N, M, sigma", [(1000, 250, 1.0), (600, 600, 0.3), (2000, 100, 2.0)])
def test_gaussian_spectrum_lies_inside_mp_edges(N, M, sigma):
    W = np.random.default_rng(N + M).normal(0, sigma, size=(N, M))
    x = gram_evals(W) / N
    lo, hi = mp_edges(sigma**2, N / M)
    # finite-size fluctuations at the edges are O(N^-2/3); allow 10%
    assert x.max() <= hi * 1.1
    assert x.min() >= lo * 0.9 - 1e-9 * hi


def test_mp_cdf_is_a_cdf_and_has_the_right_mean():
    x, F = mp_cdf(4.0)
    assert F[0] == 0 and F[-1] == pytest.approx(1.0)
    assert np.all(np.diff(F) >= -1e-12)
    mean = np.sum(np.diff(F) * (x[1:] + x[:-1]) / 2)
    assert mean == pytest.approx(1.0, rel=1e-3)  # the MP mean is sigma^2


@pytest.mark.parametrize("N, M, sigma", [(1200, 300, 0.7), (500, 500, 1.3)])
def test_mp_fit_recovers_sigma_and_finds_no_spikes_in_noise(N, M, sigma):
    W = np.random.default_rng(1).normal(0, sigma, size=(N, M))
    fit = mp_fit(gram_evals(W), N, M)
    assert fit.status == "success"
    assert fit.sigma_mp == pytest.approx(sigma, rel=0.03)
    assert fit.num_spikes == 0
    assert fit.mp_softrank == pytest.approx(1.0, abs=0.1)


def test_mp_fit_counts_planted_spikes():
    rng = np.random.default_rng(2)
    N, M = 1000, 250
    W = rng.normal(0, 1.0, size=(N, M))
    for i in range(3):  # three strong rank-one signals
        u, v = rng.standard_normal(N), rng.standard_normal(M)
        W += (4.0 + i) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * math.sqrt(N)
    fit = mp_fit(gram_evals(W), N, M)
    assert fit.num_spikes == 3
    assert fit.sigma_mp == pytest.approx(1.0, rel=0.05)
    assert fit.mp_softrank < 0.5


def test_mp_fit_degenerate_input():
    assert mp_fit(np.zeros(20), 20, 20).status == "failed"
    assert mp_fit(np.ones(3), 3, 3).status == "failed"


def test_jensen_shannon_distance():
    a = np.random.default_rng(0).lognormal(size=500)
    assert jensen_shannon_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    far = jensen_shannon_distance(a, a * 1e6)
    assert far == pytest.approx(1.0, abs=1e-9)
    near = jensen_shannon_distance(a, a * 1.5)
    assert 0 < near < far
    assert math.isnan(jensen_shannon_distance(np.zeros(3), a))
