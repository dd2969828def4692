"""LAMB: the timm update on hand-computed tensors, global clipping, limit case Adam."""

from __future__ import annotations

import math

import torch

from spectra.optim import Lamb

from .optim_toys import flat, make_toy, train


def test_first_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    opt = Lamb([w], lr=0.1, weight_decay=0.01, eps=1e-6, max_grad_norm=None)
    g = torch.tensor([[0.6, -0.8]], dtype=torch.float64)
    w.grad = g.clone()
    opt.step()
    # step 1: m^ = g, v^ = g^2 -> u = g / (|g| + eps) + wd w ; tau = ||w|| / ||u||
    u = g / (g.abs() + 1e-6) + 0.01 * torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    tau = 5.0 / u.norm()
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0]], dtype=torch.float64) - 0.1 * tau * u)


def test_global_gradient_clipping_scales_the_moments():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = Lamb([a, b], lr=0.1, weight_decay=0.0, max_grad_norm=1.0)
    a.grad, b.grad = torch.tensor([6.0, 0.0]), torch.tensor([8.0])  # ||g_all|| = 10
    opt.step()
    torch.testing.assert_close(opt.state[a]["exp_avg"], 0.1 * torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(opt.state[b]["exp_avg"], 0.1 * torch.tensor([0.8]))


def test_trust_clip_caps_the_ratio_at_one():
    w = torch.nn.Parameter(torch.tensor([[30.0, 40.0]]))
    opt = Lamb([w], lr=0.1, weight_decay=0.0, always_adapt=True, trust_clip=True, max_grad_norm=None, eps=0.0)
    w.grad = torch.tensor([[1.0, 1.0]])
    opt.step()  # u = (1, 1), ||w|| / ||u|| = 50 / sqrt(2) -> clipped to 1
    torch.testing.assert_close(w.detach(), torch.tensor([[29.9, 39.9]]))


def test_without_adaptation_or_clipping_it_is_adam():
    ref, ours = make_toy(), make_toy()
    train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2, eps=1e-6), 10)
    train(ours, Lamb(ours.parameters(), lr=1e-2, weight_decay=0.0, max_grad_norm=None), 10)
    torch.testing.assert_close(flat(ours), flat(ref))


def test_decoupled_decay():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    opt = Lamb([w], lr=0.1, weight_decay=0.5, decoupled_decay=True, max_grad_norm=None, eps=0.0)
    w.grad = torch.tensor([[1.0, 1.0]])
    opt.step()  # w (1 - 0.05) = (2.85, 3.8); u = (1, 1), tau = ||w_decayed|| / sqrt(2)
    tau = math.hypot(2.85, 3.8) / math.sqrt(2)
    torch.testing.assert_close(w.detach(), torch.tensor([[2.85 - 0.1 * tau, 3.8 - 0.1 * tau]]))
