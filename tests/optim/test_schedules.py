"""Schedules: hand-computed factors and torch scheduler wrappers that keep per-group LR ratios."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.errors import ConfigError
from spectra.optim.schedules import (cosine_scheduler, phase_cosine, step_decay, step_scheduler, stlr,
                                     stlr_scheduler, warmup_steps)


def test_phase_cosine_by_hand():
    # warmup 4 of 14 steps: (t + 1) / 4, then cosine over the remaining 10 steps down to 0.2
    assert [phase_cosine(t, total_steps=14, warmup=4, min_ratio=0.2) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    halfway = 0.2 + 0.4 * (1 + math.cos(math.pi / 2))
    assert phase_cosine(9, total_steps=14, warmup=4, min_ratio=0.2) == pytest.approx(halfway)
    assert phase_cosine(14, total_steps=14, warmup=4, min_ratio=0.2) == pytest.approx(0.2)
    assert phase_cosine(100, total_steps=14, warmup=4, min_ratio=0.2) == pytest.approx(0.2)
    assert phase_cosine(0, total_steps=10) == 1.0


def test_stlr_matches_ulmfit_equation():
    # T = 1000, cut_frac 0.1 -> cut = 100; ratio 32
    T = 1000
    assert stlr(0, total_steps=T) == pytest.approx(1 / 32)
    assert stlr(50, total_steps=T) == pytest.approx((1 + 0.5 * 31) / 32)
    assert stlr(100, total_steps=T) == pytest.approx(1.0)
    # after the peak: p = 1 - (t - cut) / (cut (1/cut_frac - 1)) = 1 - 450 / 900
    assert stlr(550, total_steps=T) == pytest.approx((1 + 0.5 * 31) / 32)
    assert stlr(1000, total_steps=T) == pytest.approx(1 / 32)


def test_step_decay_and_warmup_steps():
    assert [step_decay(t, total_steps=10, milestones=(0.3,), gamma=0.5) for t in (0, 2, 3, 9)] == [1, 1, 0.5, 0.5]
    assert warmup_steps(0.1, 50) == 5 and warmup_steps(7, 50) == 7
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ConfigError, match="warmup"):
            warmup_steps(bad, 50)


@pytest.mark.parametrize("make, factor", [
    (lambda o: cosine_scheduler(o, total_steps=10, warmup=2, min_ratio=0.1),
     lambda t: phase_cosine(t, total_steps=10, warmup=2, min_ratio=0.1)),
    (lambda o: stlr_scheduler(o, total_steps=20), lambda t: stlr(t, total_steps=20)),
    (lambda o: step_scheduler(o, total_steps=10), lambda t: step_decay(t, total_steps=10)),
])
def test_schedulers_scale_each_group_and_keep_layer_ratios(make, factor):
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.3, "lr_multiplier": 3.0}, {"params": [b], "lr": 0.1}], lr=0.1)
    sched = make(opt)
    for t in range(12):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * factor(t))
        assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * factor(t))
        opt.step()
        sched.step()


def test_scheduler_arguments_are_validated():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="total_steps"):
        cosine_scheduler(opt, total_steps=0)
    with pytest.raises(ConfigError, match="cut_frac"):
        stlr_scheduler(opt, total_steps=10, cut_frac=1.5)
    with pytest.raises(ConfigError, match="milestones"):
        step_scheduler(opt, total_steps=10, milestones=(50,))
