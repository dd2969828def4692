"""Lookahead: slow/fast weights by hand, shared groups, state_dict round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from spectra.errors import ConfigError
from spectra.optim import Lookahead

from .optim_toys import make_toy, train


def test_k_steps_forward_one_step_back_by_hand():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = Lookahead(torch.optim.SGD([w], lr=1.0), k=2, alpha=0.5)
    seen = []
    for _ in range(4):
        w.grad = torch.ones(1)
        opt.step()
        seen.append(float(w.detach()))
    # fast -1, -2 -> slow 0 + 0.5 (-2 - 0) = -1; fast -2, -3 -> slow -1 + 0.5 (-3 + 1) = -2
    assert seen == [-1.0, -1.0, -2.0, -2.0]


def test_state_dict_round_trip_resumes_bit_identically():
    model = make_toy()
    opt = Lookahead(torch.optim.Adam(model.parameters(), lr=1e-2), k=3)
    train(model, opt, 7)
    twin = copy.deepcopy(model)
    twin_opt = Lookahead(torch.optim.Adam(twin.parameters(), lr=1e-2), k=3)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    train(model, opt, 8)
    train(twin, twin_opt, 8)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


def test_add_param_group_reaches_the_base_optimizer():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = Lookahead(torch.optim.SGD([a], lr=1.0))
    opt.add_param_group({"params": [b], "lr": 0.5})
    assert len(opt.base.param_groups) == 2 and opt.param_groups[1]["lookahead_k"] == 5
    b.grad = torch.ones(1)
    opt.step()
    assert float(b.detach()) == -0.5


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="k"):
        Lookahead(torch.optim.SGD(make_toy().parameters(), lr=0.1), k=0)
