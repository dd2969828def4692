"""LARS: the timm trust-ratio formula on hand-computed tensors."""

from __future__ import annotations

import pytest
import torch

from spectra.errors import ConfigError
from spectra.optim import Lars

from .optim_toys import flat, make_toy, train


def _one_step(grad, **kw):
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    opt = Lars([w], **kw)
    w.grad = torch.tensor(grad, dtype=torch.float64)
    opt.step()
    return w.detach()


def test_trust_ratio_with_weight_decay_by_hand():
    # ||w|| = 5, ||g|| = 1: ratio = 0.001 * 5 / (1 + 0.1 * 5) ; step = (g + 0.1 w) * ratio
    ratio = 0.001 * 5 / 1.5
    got = _one_step([[0.6, 0.8]], lr=1.0, weight_decay=0.1, eps=0.0)
    torch.testing.assert_close(got, torch.tensor([[3.0 - 0.9 * ratio, 4.0 - 1.2 * ratio]], dtype=torch.float64))


def test_larc_clip_by_hand():
    # ratio / lr = (0.001 * 5 / 1.5) / 0.001 = 3.33 -> clipped to 1: a plain L2 step
    got = _one_step([[0.6, 0.8]], lr=0.001, weight_decay=0.1, eps=0.0, trust_clip=True)
    torch.testing.assert_close(got, torch.tensor([[3.0 - 0.001 * 0.9, 4.0 - 0.001 * 1.2]], dtype=torch.float64))


def test_zero_gradient_norm_gives_ratio_one():
    got = _one_step([[0.0, 0.0]], lr=1.0, weight_decay=0.1, eps=0.0)
    torch.testing.assert_close(got, torch.tensor([[3.0 - 0.3, 4.0 - 0.4]], dtype=torch.float64))


def test_without_adaptation_it_is_momentum_sgd():
    ref, ours = make_toy(), make_toy()
    train(ref, torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, nesterov=True), 10)
    train(ours, Lars(ours.parameters(), lr=0.05, momentum=0.9, nesterov=True), 10)
    torch.testing.assert_close(flat(ours), flat(ref))


def test_adapt_1d_false_exempts_vectors():
    bias = torch.nn.Parameter(torch.tensor([2.0]))
    opt = Lars([bias], lr=0.1, always_adapt=True, adapt_1d=False)
    bias.grad = torch.tensor([1.0])
    opt.step()
    assert float(bias.detach()) == pytest.approx(1.9)


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="nesterov"):
        Lars(make_toy().parameters(), nesterov=True)
