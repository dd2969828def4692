"""Layer-update geometry: how a weight matrix moved between two checkpoints, and how a layer's
hidden-state update splits into a tokenwise part and a residual.

Weight updates (W_A -> W_B, dW = W_B - W_A; conv kernels viewed as (out, in*k*k)):

    rel_update     = ||dW||_F / ||W_A||_F
    spectral_ratio = ||dW||_2 / ||W_A||_2
    sv_growth      = sigma_1(W_B) / sigma_1(W_A) - 1
    stable_rank    = ||dW||_F^2 / ||dW||_2^2
    effective_rank = exp(-sum p_i log p_i), p_i = sigma_i / sum sigma_j     (Roy & Vetterli 2007)
    overlap        = ||U_d^T U_a||_F^2 / k_d  = mean over dW's top-k_d directions of the share of
                     each that lies in the span of W_A's top-k_a directions

with k_d = min(topk, rank(dW)) and k_a = min(topk, rank(W_A)), ranks numerical (see
:func:`numerical_rank`). Counting only the directions dW actually has matters for low-rank updates
(merged LoRA deltas, rank 4 to 16): the singular vectors of dW beyond its rank span an arbitrary
part of its null space and would drag the overlap towards the random baseline.

The random baseline is exact (our derivation): if U_d spans a uniformly random j-dimensional
subspace of R^n (any j >= 1), its projector has expectation E[U_d U_d^T] = (j/n) I, so
E ||U_d^T U_a||_F^2 = tr(U_a^T (j/n) I U_a) = j k_a / n and the overlap's expectation is k_a / n,
whatever j is. We average the left (output, n = N) and right (input, n = M) sides, so
overlap_baseline = (k_a/N + k_a/M) / 2.

Activation geometry, our reading of Yoo 2026, "On the Geometric Structure of Layer Updates in Deep
Language Models" (arXiv 2604.02459; abstract and a secondary summary only): for block l with input
tokens h_i and output h'_i, the update is D_i = h'_i - h_i. The tokenwise component T_i = A(h_i) h_i is
a map fitted per token from its k nearest neighbours in representation space (a diagonal ridge map,
``method="local"``) or one ridge map for all tokens (``method="global"``); the residual is
r_i = D_i - T_i, what no tokenwise map of that class explains (mixing between tokens, mostly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "matrix_view",
    "relative_update",
    "stable_rank",
    "effective_rank",
    "principal_angles",
    "subspace_overlap",
    "overlap_baseline",
    "numerical_rank",
    "update_rank_tolerance",
    "UpdateGeometry",
    "update_geometry",
    "ActivationGeometry",
    "tokenwise_fit",
    "activation_geometry",
]

NAN = float("nan")


def matrix_view(w: torch.Tensor) -> torch.Tensor:
    """A weight as a matrix: 2-D as stored, conv kernels (out, in, *k) as (out, in*prod(k))."""
    if w.ndim < 2:
        raise ValueError(f"need a tensor with at least 2 dimensions, got shape {tuple(w.shape)}")
    return w.reshape(w.shape[0], -1)


def relative_update(w_a: torch.Tensor, w_b: torch.Tensor) -> float:
    """||W_B - W_A||_F / ||W_A||_F (NaN when W_A is zero).

    >>> relative_update(torch.ones(2, 2), 1.5 * torch.ones(2, 2))
    0.5
    """
    a = w_a.detach().to(torch.float64)
    denom = float(torch.linalg.vector_norm(a))
    num = float(torch.linalg.vector_norm(w_b.detach().to(torch.float64) - a))
    return num / denom if denom > 0 else NAN


def stable_rank(sv: torch.Tensor) -> float:
    """sum sigma_i^2 / sigma_1^2 from singular values (any order); NaN for a zero matrix.

    >>> stable_rank(torch.tensor([2.0, 2.0, 0.0]))
    2.0
    """
    top = float(sv.max()) if sv.numel() else 0.0
    return float(sv.double().square().sum()) / top**2 if top > 0 else NAN


def effective_rank(sv: torch.Tensor) -> float:
    """exp of the Shannon entropy of p_i = sigma_i / sum sigma_j (Roy & Vetterli 2007; 0 log 0 = 0).

    >>> round(effective_rank(torch.tensor([1.0, 1.0, 1.0, 0.0])), 6)
    3.0
    """
    sv = sv.double()
    total = float(sv.sum())
    if total <= 0:
        return NAN
    p = sv[sv > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def principal_angles(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the column spans of orthonormal u and v.

    cos(theta_i) = sigma_i(u^T v) (Bjorck & Golub 1973); clamped to [0, 1] against round-off.
    """
    cos = torch.linalg.svdvals(u.double().T @ v.double()).clamp(0.0, 1.0)
    return torch.arccos(cos)


def subspace_overlap(u: torch.Tensor, v: torch.Tensor) -> float:
    """||u^T v||_F^2 / k_u in [0, 1]: how much of span(u) lies in span(v) (u, v orthonormal columns).

    The mean over u's k_u directions of the squared norm of each one's projection onto span(v); 1
    when span(u) is inside span(v), 0 when orthogonal. With k_u <= k_v it is the mean squared cosine
    of the k_u principal angles. NaN when u has no columns.

    >>> e = torch.eye(3)
    >>> subspace_overlap(e[:, :1], e[:, :2]), subspace_overlap(e[:, :2], e[:, :1])
    (1.0, 0.5)
    """
    k = u.shape[1]
    return float((u.double().T @ v.double()).square().sum()) / k if k and v.shape[1] else NAN


def overlap_baseline(k: int, n: int) -> float:
    """Expected :func:`subspace_overlap` of a uniformly random subspace (any dimension) against a fixed
    k-dimensional one in R^n: exactly k/n.

    A random j-dim projector has E[P] = (j/n) I, hence E ||U_rand^T U_k||_F^2 = j k / n, and dividing
    by j leaves k/n, independent of j.

    >>> overlap_baseline(4, 16)
    0.25
    """
    return min(k, n) / n if n > 0 else NAN


def numerical_rank(sv: torch.Tensor, tol: float) -> int:
    """Number of singular values above ``tol`` (and above zero)."""
    return int((sv > max(tol, 0.0)).sum())


def _unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2 of a floating dtype (bfloat16 2^-8, float16 2^-11, float32 2^-24, float64 2^-53)."""
    return torch.finfo(dtype).eps / 2 if dtype.is_floating_point else torch.finfo(torch.float64).eps / 2


def update_rank_tolerance(s_top: float, n: int, m: int, work: torch.dtype, stored: torch.dtype,
                          rms_a: float, rms_b: float) -> float:
    """Singular values of dW at or below this are numerical noise, not update directions.

    The larger of two floors: the SVD's own, max(N, M) eps_work sigma_1(dW) (numpy's matrix_rank
    default), and the rounding of the stored weights, u (sqrt N + sqrt M)(rms(W_A) + rms(W_B)) with
    u the unit roundoff of the checkpoint's dtype. Rounding W_A + delta to that dtype adds a matrix
    of entries at most u |w_ij| each, whose spectral norm is about u rms(W) (sqrt N + sqrt M) / sqrt 3
    (a random matrix with iid entries): so a rank-4 update merged into float32 weights has rank 4,
    not min(N, M).
    """
    svd_floor = max(n, m) * torch.finfo(work).eps * s_top
    rounding = _unit_roundoff(stored) * (math.sqrt(n) + math.sqrt(m)) * (rms_a + rms_b)
    return max(svd_floor, rounding)


@dataclass(frozen=True)
class UpdateGeometry:
    """Geometry of one update dW = W_B - W_A (see the module docstring for the formulas).

    ``topk`` is k_a, the number of W_A's singular vectors spanning its top subspace; ``dw_k`` is k_d,
    the number of dW's singular vectors compared with it, min(topk, dw_rank); ``dw_rank`` is the
    numerical rank of dW (:func:`update_rank_tolerance`).
    """

    rel_update: float
    rel_update_rms: float
    spectral_ratio: float
    sv_growth: float
    dw_stable_rank: float
    dw_effective_rank: float
    subspace_overlap: float
    overlap_left: float
    overlap_right: float
    overlap_baseline: float
    topk: int
    principal_angles: tuple[float, ...]
    norm_a: float
    norm_dw: float
    dw_rank: int = 0
    dw_k: int = 0


def update_geometry(w_a: torch.Tensor, w_b: torch.Tensor, *, topk: int = 10,
                    dtype: torch.dtype = torch.float64) -> UpdateGeometry:
    """Every weight-update metric for one matrix (or conv kernel, seen as (out, in*k*k)).

    The overlap compares dW's top k_d = min(topk, rank dW) left (and right) singular vectors with
    W_A's top k_a = min(topk, rank W_A); principal angles are between those left subspaces
    (degrees). ``dtype`` is the working precision (float32 is faster on big matrices; dW of a small
    update loses digits in it). The inputs' own dtype sets the rounding floor of the rank.

    >>> w = torch.eye(4)
    >>> g = update_geometry(w, w + 0.1 * torch.outer(torch.ones(4), torch.ones(4)), topk=2)
    >>> round(g.dw_stable_rank, 6), round(g.rel_update, 6), g.dw_rank, g.dw_k, g.topk
    (1.0, 0.2, 1, 1, 2)
    """
    stored = w_a.dtype if _unit_roundoff(w_a.dtype) >= _unit_roundoff(w_b.dtype) else w_b.dtype
    a = matrix_view(w_a.detach()).to(dtype)
    b = matrix_view(w_b.detach()).to(dtype)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    n, m = a.shape
    dw = b - a
    u_a, s_a, vh_a = torch.linalg.svd(a, full_matrices=False)
    u_d, s_d, vh_d = torch.linalg.svd(dw, full_matrices=False)
    s_b1 = float(torch.linalg.matrix_norm(b, ord=2))
    norm_a, norm_dw = float(s_a.square().sum().sqrt()), float(s_d.square().sum().sqrt())
    rms_a, rms_b = norm_a / math.sqrt(n * m), float(torch.linalg.vector_norm(b)) / math.sqrt(n * m)
    top_a = float(s_a[0])
    eps = torch.finfo(dtype).eps
    rank_a = numerical_rank(s_a, max(n, m) * eps * top_a)
    rank_d = numerical_rank(s_d, update_rank_tolerance(float(s_d[0]), n, m, dtype, stored, rms_a, rms_b))
    k_a = min(int(topk), rank_a)
    k_d = min(int(topk), rank_d)
    std_a = float(a.std()) if a.numel() > 1 else NAN
    if k_d and k_a:
        left = subspace_overlap(u_d[:, :k_d], u_a[:, :k_a])
        right = subspace_overlap(vh_d[:k_d].T, vh_a[:k_a].T)
        angles = tuple(math.degrees(t) for t in principal_angles(u_d[:, :k_d], u_a[:, :k_a]).tolist())
    else:  # no update above the rounding floor, or a zero W_A: no subspace to compare
        left = right = NAN
        angles = ()
    return UpdateGeometry(
        rel_update=norm_dw / norm_a if norm_a > 0 else NAN,
        rel_update_rms=float(dw.std()) / std_a if a.numel() > 1 and std_a > 0 else NAN,
        spectral_ratio=float(s_d[0]) / top_a if top_a > 0 else NAN,
        sv_growth=s_b1 / top_a - 1.0 if top_a > 0 else NAN,
        dw_stable_rank=stable_rank(s_d),
        dw_effective_rank=effective_rank(s_d),
        subspace_overlap=(left + right) / 2.0,
        overlap_left=left,
        overlap_right=right,
        overlap_baseline=(overlap_baseline(k_a, n) + overlap_baseline(k_a, m)) / 2.0 if k_a else NAN,
        topk=k_a,
        principal_angles=angles,
        norm_a=norm_a,
        norm_dw=norm_dw,
        dw_rank=rank_d,
        dw_k=k_d,
    )


# ------------------------------------------------------------------ activation geometry


def tokenwise_fit(h: torch.Tensor, delta: torch.Tensor, *, method: str = "local", neighbors: int = 32,
                  ridge: float = 1e-3) -> torch.Tensor:
    """Fitted tokenwise component T (n, d) of the updates ``delta`` given inputs ``h`` (both (n, d)).

    ``local``: per token i a diagonal map a_i from its ``neighbors`` nearest tokens (Euclidean, i
    included), a_i[c] = sum_j D_jc h_jc / (sum_j h_jc^2 + ridge * mean_j h_jc^2 + eps), T_i = a_i * h_i.
    ``global``: one d x d ridge map for all tokens, A = (H^T H + ridge * tr(H^T H)/d I)^-1 H^T D.
    """
    h = h.to(torch.float64)
    delta = delta.to(torch.float64)
    n, d = h.shape
    if method == "global":
        gram = h.T @ h
        reg = ridge * float(torch.trace(gram)) / d + 1e-12
        a = torch.linalg.solve(gram + reg * torch.eye(d, dtype=gram.dtype, device=gram.device), h.T @ delta)
        return h @ a
    if method != "local":
        raise ValueError(f"unknown tokenwise method {method!r}; use 'local' or 'global'")
    k = max(1, min(int(neighbors), n))
    out = torch.empty_like(delta)
    for start in range(0, n, 1024):  # bounded memory: (chunk, n) distances at a time
        hi = h[start:start + 1024]
        idx = torch.cdist(hi, h).topk(k, largest=False).indices  # (c, k)
        hn, dn = h[idx], delta[idx]  # (c, k, d)
        hh = hn.square().sum(1)
        a = (dn * hn).sum(1) / (hh + ridge * hh / k + 1e-12)
        out[start:start + 1024] = a * hi
    return out


@dataclass(frozen=True)
class ActivationGeometry:
    """Per-layer decomposition D = T + r of hidden-state updates (means over probe tokens).

    alignment = mean cos(D_i, T_i), residual_alignment = mean cos(D_i, r_i); angles are the means of
    arccos of those cosines in degrees; projection_* = mean ||U_k^T v||^2 / ||v||^2 with U_k the
    top-k right singular vectors of the stacked (uncentred) T, baseline k/d; residual_energy =
    sum ||r_i||^2 / sum ||D_i||^2; approx_error = mean ||r_i|| / ||D_i||.
    """

    tokens: int
    dim: int
    alignment: float
    residual_alignment: float
    angular_deviation: float
    residual_angle: float
    projection_update: float
    projection_tokenwise: float
    projection_residual: float
    projection_baseline: float
    residual_energy: float
    approx_error: float
    update_norm: float


def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    return ((x * y).sum(1) / (nx * ny).clamp_min(1e-300)).clamp(-1.0, 1.0)


def activation_geometry(h_in: torch.Tensor, h_out: torch.Tensor, *, k: int = 8, method: str = "local",
                        neighbors: int = 32, ridge: float = 1e-3) -> ActivationGeometry:
    """Decompose one layer's update h_out - h_in (tokens x d) into a tokenwise part and a residual."""
    h = h_in.detach().reshape(-1, h_in.shape[-1]).to(torch.float64)
    delta = h_out.detach().reshape(-1, h_out.shape[-1]).to(torch.float64) - h
    n, d = h.shape
    t = tokenwise_fit(h, delta, method=method, neighbors=neighbors, ridge=ridge)
    r = delta - t
    kk = max(1, min(int(k), d, n))
    vh = torch.linalg.svd(t, full_matrices=False).Vh[:kk]  # (k, d)

    def projection(v: torch.Tensor) -> float:
        norm = v.square().sum(1)
        keep = norm > 0
        if not bool(keep.any()):
            return NAN
        return float(((v[keep] @ vh.T).square().sum(1) / norm[keep]).mean())

    cos_t, cos_r = _cos(delta, t), _cos(delta, r)
    d_norm = delta.norm(dim=1)
    keep = d_norm > 0
    energy = float(delta.square().sum())
    return ActivationGeometry(
        tokens=n,
        dim=d,
        alignment=float(cos_t.mean()),
        residual_alignment=float(cos_r.mean()),
        angular_deviation=float(torch.rad2deg(torch.arccos(cos_t)).mean()),
        residual_angle=float(torch.rad2deg(torch.arccos(cos_r)).mean()),
        projection_update=projection(delta),
        projection_tokenwise=projection(t),
        projection_residual=projection(r),
        projection_baseline=kk / d,
        residual_energy=float(r.square().sum()) / energy if energy > 0 else NAN,
        approx_error=float((r.norm(dim=1)[keep] / d_norm[keep]).mean()) if bool(keep.any()) else NAN,
        update_norm=float(d_norm.mean()),
    )
