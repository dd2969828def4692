"""Refit ramps and multiplier rescaling (spectra.train.refit), with hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spectra.errors import ConfigError
from spectra.train.refit import Refitter, set_multiplier


def sgd_with_linear_decay(model, lr, total_steps):
    groups = [{"params": [p], "param_names": [n], "lr": lr, "lr_multiplier": 1.0} for n, p in model.named_parameters()]
    opt = torch.optim.SGD(groups, lr=lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / total_steps)


def test_set_multiplier_rescales_every_stored_lr():
    model = nn.Linear(2, 2)
    opt, sched = sgd_with_linear_decay(model, 0.1, 10)
    set_multiplier(opt, sched, 0, 3.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3)
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(0.3)
    assert sched.base_lrs[0] == pytest.approx(0.3) and sched.base_lrs[1] == pytest.approx(0.1)
    opt.step()  # no gradients: parameters unchanged, but the scheduler may now step
    sched.step()  # the scheduler keeps composing: 0.3 * (1 - 1/10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.27)
    set_multiplier(opt, sched, 0, 1.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.135) and opt.param_groups[0]["lr_multiplier"] == 1.5


def test_refitter_ramps_linearly_and_stops_after_until(monkeypatch):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    opt = torch.optim.SGD([{"params": [p], "param_names": [n], "lr_multiplier": 1.0} for n, p in model.named_parameters()], lr=1.0)
    refit = Refitter(model, opt, None, every=10, until_step=15, ramp_steps=4, method="unused")
    targets = iter([[2.0, 2.0, 0.5, 0.5], [4.0, 4.0, 0.5, 0.5], [9.0] * 4])
    monkeypatch.setattr(refit, "targets", lambda: next(targets))
    seen = []
    for step in range(25):
        refit.step(step)
        seen.append(opt.param_groups[0]["lr_multiplier"])
    # refit at 0: 1 -> 2 over 4 steps; refit at 10: 2 -> 4; no refit at 20 (> until_step)
    assert seen[:5] == pytest.approx([1.25, 1.5, 1.75, 2.0, 2.0])
    assert seen[10:14] == pytest.approx([2.5, 3.0, 3.5, 4.0])
    assert seen[20:] == pytest.approx([4.0] * 5) and refit.count == 2
    assert opt.param_groups[2]["lr"] == pytest.approx(0.5)


def test_refit_every_must_be_positive():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="refit_every"):
        Refitter(model, opt, None, every=0, until_step=10, ramp_steps=1, method="llr")
