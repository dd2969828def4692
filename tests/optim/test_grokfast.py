"""Grokfast: the EMA filter on hand-computed tensors and the optimizer wrapper."""

from __future__ import annotations

import copy

import pytest
import torch

from spectra.errors import ConfigError
from spectra.optim import Grokfast

from spectra.optim.grokfast import amplify, ema_update_
from .optim_toys import flat, make_toy, toy_data, train


@pytest.mark.parametrize("foreach", [False, True])
def test_ema_and_amplify_by_hand(foreach):
    h = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    g = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    ema_update_(h, g, 0.75, foreach=foreach)  # 0.75 h + 0.25 g
    torch.testing.assert_close(h[0], torch.tensor([1.5, 1.5]))
    torch.testing.assert_close(h[1], torch.tensor([[1.0]]))
    out = amplify(g, h, 2.0, foreach=foreach)  # g + 2 h, inputs untouched
    torch.testing.assert_close(out[0], torch.tensor([6.0, 3.0]))
    torch.testing.assert_close(out[1], torch.tensor([[6.0]]))
    torch.testing.assert_close(g[0], torch.tensor([3.0, 0.0]))


def test_wrapper_two_steps_by_hand():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = Grokfast(torch.optim.SGD([w], lr=1.0), alpha=0.5, lamb=2.0)
    w.grad = torch.tensor([1.0, 0.0])
    opt.step()  # h = g1 -> step g1 + 2 g1
    torch.testing.assert_close(w.detach(), torch.tensor([-3.0, 0.0]))
    w.grad = torch.tensor([0.0, 4.0])
    opt.step()  # h = 0.5 g1 + 0.5 g2 = (0.5, 2) -> step (1, 8)
    torch.testing.assert_close(w.detach(), torch.tensor([-4.0, -8.0]))


def test_wrapper_matches_reference_gradfilter_loop():
    ref, ours = make_toy(), make_toy()
    x, y = toy_data()
    adamw = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    emas: dict[str, torch.Tensor] = {}
    for _ in range(8):  # the reference: filter p.grad by name between backward() and step()
        adamw.zero_grad()
        (ref(x) - y).square().mean().backward()
        for name, p in ref.named_parameters():
            emas[name] = p.grad.detach().clone() if name not in emas else emas[name] * 0.9 + p.grad * 0.1
            p.grad = p.grad + emas[name] * 3.0
        adamw.step()
    train(ours, Grokfast(torch.optim.AdamW(ours.parameters(), lr=1e-2), alpha=0.9, lamb=3.0), 8)
    torch.testing.assert_close(flat(ours), flat(ref))


def test_state_dict_round_trip_and_shared_groups():
    model = make_toy()
    opt = Grokfast(torch.optim.AdamW(model.parameters(), lr=1e-2))
    train(model, opt, 5)
    twin = copy.deepcopy(model)
    twin_opt = Grokfast(torch.optim.AdamW(twin.parameters(), lr=1e-2))
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert twin_opt.param_groups is twin_opt.base.param_groups
    train(model, opt, 5)
    train(twin, twin_opt, 5)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5)
    assert opt.base.param_groups[0]["lr"] == pytest.approx(5e-3) and sched.last_epoch == 0


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="alpha"):
        Grokfast(torch.optim.SGD(make_toy().parameters(), lr=0.1), alpha=1.0)
    with pytest.raises(ConfigError, match="wraps a torch optimizer"):
        Grokfast([torch.zeros(1)])
