"""Norms of a gradient matrix and their spread across depth (Li, Li, Zhou 2025, "What Happened in LLMs
Layers when Trained for Fast vs. Slow Thinking: A Gradient Perspective", arXiv 2410.23743).

Frobenius, spectral and nuclear norms, the effective rank of the singular values (Roy & Vetterli
2007), the top singular value's share S_ratio, and the mean absolute difference between adjacent
layers (MAD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["GradNorms", "gradient_norms", "mean_abs_difference"]

NAN = float("nan")


@dataclass(frozen=True)
class GradNorms:
    """Norms of one gradient matrix: ||G||_F, sigma_1 (spectral), sum sigma_i (nuclear), erank."""

    fro: float
    spectral: float
    nuclear: float
    effective_rank: float

    @property
    def s_ratio(self) -> float:
        """sigma_1 / sum sigma_i: the share of the top singular value (Li et al. 2025's S_ratio)."""
        return self.spectral / self.nuclear if self.nuclear > 0 else NAN


def gradient_norms(grad: torch.Tensor) -> GradNorms:
    """Frobenius, spectral and nuclear norms and effective rank of a gradient viewed as (out, -1).

    Effective rank is exp(H(p)) with p_i = sigma_i / sum sigma_j (Roy & Vetterli 2007). A 0-D or
    1-D gradient has only a Frobenius norm (the others are NaN).

    >>> gradient_norms(torch.diag(torch.tensor([3.0, 4.0])))
    GradNorms(fro=5.0, spectral=4.0, nuclear=7.0, effective_rank=1.9...)
    """
    g = grad.detach().to(torch.float64)
    fro = float(torch.linalg.vector_norm(g))
    if g.ndim < 2:
        return GradNorms(fro, NAN, NAN, NAN)
    sv = torch.linalg.svdvals(g.reshape(g.shape[0], -1))
    total = float(sv.sum())
    if total <= 0.0:
        return GradNorms(fro, 0.0, 0.0, NAN)
    p = sv / total
    p = p[p > 0]
    erank = math.exp(float(-(p * p.log()).sum()))
    return GradNorms(fro, float(sv[0]), total, erank)


def mean_abs_difference(values: Sequence[float]) -> float:
    """MAD across depth, (1/(L-1)) sum_l |x_{l+1} - x_l| (Li et al. 2025); NaNs are dropped first.

    >>> mean_abs_difference([1.0, 3.0, 2.0])
    1.5
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(xs) < 2:
        return NAN
    return sum(abs(b - a) for a, b in zip(xs, xs[1:])) / (len(xs) - 1)
