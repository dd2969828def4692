import numpy as np
import pytest
import torch

from spectra.core.esd import eigenvalues, eigenvalues_batched, rank_tolerance


def _svd_evals(W: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(W, compute_uv=False) ** 2)


@pytest.mark.parametrize("shape", [(50, 20), (20, 50), (33, 33)])
@pytest.mark.parametrize("solver", ["gram", "svd"])
def test_matches_numpy_svd_squared(shape, solver):
    rng = np.random.default_rng(0)
    W = rng.standard_normal(shape)
    ev = eigenvalues(torch.tensor(W), solver=solver).numpy()
    ref = _svd_evals(W)
    assert ev.dtype == np.float64
    assert ev.shape == (min(shape),)
    np.testing.assert_allclose(ev, ref, rtol=1e-10, atol=1e-12 * ref.max())


def test_no_normalisation_lambda_max_is_squared_spectral_norm():
    W = torch.randn(40, 30, dtype=torch.float64)
    ev = eigenvalues(W)
    assert ev[-1].item() == pytest.approx(torch.linalg.matrix_norm(W, ord=2).item() ** 2, rel=1e-10)
    assert ev.sum().item() == pytest.approx((W**2).sum().item(), rel=1e-10)


def test_batch_is_pooled_and_sorted():
    a, b = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 6, dtype=torch.float64)
    pooled = eigenvalues(torch.stack([a, b]))
    expected = torch.sort(torch.cat([eigenvalues(a), eigenvalues(b)])).values
    torch.testing.assert_close(pooled, expected)


def test_float32_input_is_upcast_by_default():
    W = torch.randn(20, 10)
    assert eigenvalues(W).dtype == torch.float64
    assert eigenvalues(W, dtype=torch.float32).dtype == torch.float32


def test_batched_equals_one_by_one():
    mats = [torch.randn(12, 7) for _ in range(4)]
    for one, batched in zip([eigenvalues(m) for m in mats], eigenvalues_batched(mats)):
        torch.testing.assert_close(one, batched)


def test_batched_rejects_mixed_shapes():
    with pytest.raises(ValueError, match="share a shape"):
        eigenvalues_batched([torch.randn(3, 2), torch.randn(4, 2)])


def test_rank_deficient_matrix_has_numerical_zeros_below_tolerance():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((60, 3)) @ rng.standard_normal((3, 40))  # rank 3
    ev = eigenvalues(torch.tensor(W)).numpy()
    tol = rank_tolerance(ev[-1], 60, 40)
    assert np.count_nonzero(ev > tol) == 3
    assert (ev >= 0).all()


def test_rejects_vectors():
    with pytest.raises(ValueError):
        eigenvalues(torch.randn(5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_entries_are_reported_from_the_gram_diagonal(bad):
    from spectra.core.esd import NonFiniteMatrixError

    W = torch.randn(30, 20)
    W[7, 3] = bad
    for solver in ("gram", "svd"):
        with pytest.raises(NonFiniteMatrixError):
            eigenvalues(W, solver=solver)
    batch = [torch.randn(12, 8) for _ in range(3)]
    batch[1][0, 0] = bad
    with pytest.raises(NonFiniteMatrixError) as info:
        eigenvalues_batched(batch)
    assert info.value.indices == [1]


def test_single_thread_syrk_gram_matches_torch_matmul_path():
    W = torch.randn(300, 40, dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = eigenvalues(W)  # numpy syrk Gram
        torch.set_num_threads(2)
        many = eigenvalues(W)  # torch matmul Gram
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, many, rtol=1e-10, atol=1e-10 * float(many[-1]))
