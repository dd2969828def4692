"""The optimizer registry: every strategy trains, resumes from a state dict and honours an LR map."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from spectra.errors import ConfigError
from spectra.optim import OptimizerInfo, create_optimizer, get_optimizer_info, list_optimizers
from spectra.prescribe import LRMap

from .optim_toys import make_toy, train

STRATEGIES = ["sgd", "sgd-step", "sgd-cosine", "adam", "adamw", "radam", "discriminative", "stlr", "lars", "lamb",
              "grokfast", "lookahead", "dals", "dals-fast", "dals-ft"]


def _build(name, model, **kw):
    return create_optimizer(name, model, total_steps=kw.pop("total_steps", 40), steps_per_epoch=10, **kw)


def test_every_strategy_the_benchmark_needs_is_registered():
    assert set(STRATEGIES) <= set(list_optimizers())
    assert list_optimizers("dals*") == ["dals", "dals-fast", "dals-ft"]


@pytest.mark.parametrize("name", list_optimizers())
def test_strategy_builds_partitions_params_and_reduces_loss(name):
    model = make_toy()
    opt, sched = _build(name, model)
    assert isinstance(opt, torch.optim.Optimizer)
    assert sched is None or isinstance(sched, LRScheduler)
    seen = [p for g in opt.param_groups for p in g["params"]]
    assert len(seen) == len({id(p) for p in seen}) == len(list(model.parameters()))
    losses = train(model, opt, 30, scheduler=sched)
    assert losses[-1] < 0.97 * losses[0], losses[::5]


@pytest.mark.parametrize("name", list_optimizers())
def test_state_dict_round_trip_resumes_bit_identically(name):
    model = make_toy()
    opt, sched = _build(name, model, total_steps=20)
    train(model, opt, 10, scheduler=sched)
    twin = copy.deepcopy(model)
    twin_opt, twin_sched = _build(name, twin, total_steps=20)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    if sched is not None:
        twin_sched.load_state_dict(sched.state_dict())
    train(model, opt, 10, scheduler=sched)
    train(twin, twin_opt, 10, scheduler=twin_sched)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


@pytest.mark.parametrize("name", list_optimizers())
def test_lrmap_multipliers_reach_the_groups(name):
    model = make_toy()
    lrmap = LRMap(method="test", params={"head.weight": 2.0, "head.bias": 2.0})
    opt, _ = _build(name, model, lr=0.01, lrmap=lrmap)
    by_name = {n: g for g in opt.param_groups for n in g["param_names"]}
    ratio = by_name["head.weight"]["lr"] / by_name["stem.weight"]["lr"]
    if name in ("discriminative", "stlr"):  # head depth 3, stem depth 0: ULMFiT /2.6 per level
        assert ratio == pytest.approx(2.0 * 2.6 ** 3)
        assert by_name["head.weight"]["lr_multiplier"] == pytest.approx(2.0)
    else:
        assert ratio == pytest.approx(2.0)
        assert by_name["head.weight"]["lr"] == pytest.approx(0.02) or name == "stlr"


def test_overrides_reach_the_optimizer():
    opt, _ = _build("dals", make_toy(), warmup=0, grokfast_lamb=0.5)
    assert opt.param_groups[0]["grokfast_lamb"] == 0.5 and opt.param_groups[0]["warmup"] == 0
    opt, _ = _build("sgd", make_toy(), momentum=0.5)
    assert opt.param_groups[0]["momentum"] == 0.5
    opt, _ = _build("discriminative", make_toy(), base="sgd")
    assert isinstance(opt, torch.optim.SGD)


def test_default_lr_is_used_when_lr_is_none():
    opt, _ = _build("dals", make_toy())
    head = [g for g in opt.param_groups if g["layer"] == "head"][0]
    assert head["lr"] == get_optimizer_info("dals").default_lr


@pytest.mark.parametrize("call, word", [
    (lambda m: _build("adagrad-ish", m), "unknown optimizer 'adagrad-ish'; choose one of: sgd"),
    (lambda m: _build("sgd", m, betas=(0.9, 0.99)), "does not take betas"),
    (lambda m: _build("sgd", m, total_steps=0), "total_steps"),
    (lambda m: _build("adamw", m, lr=-1.0), "lr"),
    (lambda m: _build("discriminative", m, base="lion"), "base"),
])
def test_bad_requests_raise_config_errors(call, word):
    with pytest.raises(ConfigError, match=word):
        call(make_toy())


def test_optimizer_info_is_frozen_and_describes_itself():
    info = get_optimizer_info("stlr")
    assert isinstance(info, OptimizerInfo) and info.schedule == "stlr" and "cut_frac" in info.options
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.default_lr = 1.0  # type: ignore[misc]
    assert all(get_optimizer_info(n).description for n in list_optimizers())
