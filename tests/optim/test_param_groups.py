"""Tests for spectra.optim.param_groups: partition invariant, multipliers, decay, ties, coverage."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from spectra.errors import ConfigError
from spectra.optim.param_groups import apply_lrmap, check_lrmap, layer_index, param_groups
from spectra.prescribe import LRMap

CONTRACT_KEYS = {"params", "param_names", "lr", "lr_multiplier", "weight_decay", "depth", "layer"}


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = nn.Linear(d, d)
        self.mlp = nn.Linear(d, d)


class TinyLM(nn.Module):
    """Embedding, two blocks with a norm and two biased linears each, final norm, tied head."""

    def __init__(self, vocab: int = 11, d: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([Block(d), Block(d)])
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed.weight  # tied

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx)
        for block in self.layers:
            h = h + block.mlp(torch.relu(block.attn(block.ln(h))))
        return self.lm_head(self.norm(h))


UNIQUE_NAMES = [
    "embed.weight",
    "layers.0.ln.weight", "layers.0.ln.bias", "layers.0.attn.weight", "layers.0.attn.bias",
    "layers.0.mlp.weight", "layers.0.mlp.bias",
    "layers.1.ln.weight", "layers.1.ln.bias", "layers.1.attn.weight", "layers.1.attn.bias",
    "layers.1.mlp.weight", "layers.1.mlp.bias",
    "norm.weight", "norm.bias",
]


def names_of(groups):
    return [n for g in groups for n in g["param_names"]]


def by_name(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_every_trainable_parameter_exactly_once_and_tied_weight_once():
    model = TinyLM()
    groups = param_groups(model, base_lr=0.01)
    names = names_of(groups)
    assert sorted(names) == sorted(UNIQUE_NAMES)  # lm_head.weight is the tied embed.weight
    assert len(names) == len(set(names))
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    for g in groups:
        assert CONTRACT_KEYS <= set(g)
        assert "lr_scale" not in g
        assert [p.shape for p in g["params"]] == [dict(model.named_parameters())[n].shape for n in g["param_names"]]


def test_without_map_all_at_base_lr_with_layers_and_depths():
    groups = param_groups(TinyLM(), base_lr=0.01)
    table = by_name(groups)
    assert all(g["lr"] == 0.01 and g["lr_multiplier"] == 1.0 for g in groups)
    # embeddings 0, block i -> i + 1; norms and biases follow their layer
    assert (table["embed.weight"]["layer"], table["embed.weight"]["depth"]) == ("embed", 0)
    assert (table["layers.0.attn.bias"]["layer"], table["layers.0.attn.bias"]["depth"]) == ("layers.0.attn", 1)
    assert (table["layers.0.ln.weight"]["layer"], table["layers.0.ln.weight"]["depth"]) == ("layers.0.attn", 1)
    assert table["layers.1.mlp.weight"]["depth"] == 2
    assert table["norm.weight"]["depth"] == 2  # final norm follows the last layer before it


def test_multipliers_give_lr_and_tied_alias_key_matches():
    m = {"lm_head.weight": 5.0,  # named by its alias: the tied embedding must take it
         "layers.0.attn.weight": 0.5, "layers.0.attn.bias": 0.5, "layers.0.ln.weight": 0.5,
         "layers.1.mlp.weight": 2.0}
    lrmap = LRMap(method="t", params=m, default=1.0)
    groups = param_groups(TinyLM(), lrmap, base_lr=0.1)
    table = by_name(groups)
    assert table["embed.weight"]["lr"] == pytest.approx(0.1 * 5.0)
    assert table["embed.weight"]["lr_multiplier"] == 5.0
    assert table["layers.0.attn.weight"]["lr"] == pytest.approx(0.05)
    assert table["layers.0.ln.weight"]["lr"] == pytest.approx(0.05)
    assert table["layers.1.mlp.weight"]["lr"] == pytest.approx(0.2)
    assert table["layers.1.mlp.bias"]["lr"] == pytest.approx(0.1)  # not in the map: default 1
    # params of one layer with different multipliers land in different groups
    assert table["layers.0.ln.bias"] is not table["layers.0.ln.weight"]


def test_weight_decay_off_for_1d_and_scaled_by_wd_params():
    lrmap = LRMap(method="alphadecay", params={}, target="weight_decay",
                  wd_params={"layers.0.attn.weight": 3.0, "layers.0.attn.bias": 3.0})
    table = by_name(param_groups(TinyLM(), lrmap, base_lr=0.1, weight_decay=0.1))
    assert table["layers.0.attn.weight"]["weight_decay"] == pytest.approx(0.3)
    assert table["layers.0.attn.bias"]["weight_decay"] == 0.0  # 1-D: no decay
    assert table["layers.1.attn.weight"]["weight_decay"] == pytest.approx(0.1)
    assert table["norm.weight"]["weight_decay"] == 0.0
    table = by_name(param_groups(TinyLM(), None, weight_decay=0.1, no_decay_1d=False))
    assert table["norm.weight"]["weight_decay"] == pytest.approx(0.1)


def test_unmatched_and_uncovered_are_reported_and_strict_raises(caplog):
    lrmap = LRMap(method="t", params={"embed.weight": 2.0, "ghost.weight": 3.0})
    cov = check_lrmap(TinyLM(), lrmap)
    assert cov.unmatched == ("ghost.weight",)
    assert len(cov.uncovered) == len(UNIQUE_NAMES) - 1 and "embed.weight" not in cov.uncovered
    with caplog.at_level(logging.WARNING, logger="spectra.optim.param_groups"):
        param_groups(TinyLM(), lrmap)
    assert "ghost.weight" in caplog.text and "14 parameters are not in the map" in caplog.text
    with pytest.raises(ConfigError, match="ghost.weight"):
        param_groups(TinyLM(), lrmap, strict=True)
    full = LRMap(method="t", params={n: 1.0 for n in UNIQUE_NAMES})
    assert check_lrmap(TinyLM(), full).ok
    param_groups(TinyLM(), full, strict=True)


def test_frozen_parameters_are_left_out():
    model = TinyLM()
    model.layers[0].requires_grad_(False)
    names = names_of(param_groups(model))
    assert not any(n.startswith("layers.0.") for n in names)
    assert len(names) == len(UNIQUE_NAMES) - 6
    # a map entry for a frozen parameter is not "unmatched"
    assert check_lrmap(model, LRMap(method="t", params={"layers.0.mlp.weight": 2.0})).unmatched == ()
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable"):
        param_groups(model)


def test_groups_work_in_torch_optimizers_and_a_step_runs():
    torch.manual_seed(0)
    model = TinyLM()
    lrmap = LRMap(method="t", params={"layers.1.mlp.weight": 0.0})  # multiplier 0 freezes the layer
    opt = torch.optim.AdamW(param_groups(model, lrmap, base_lr=0.05, weight_decay=0.01), lr=0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(torch.randint(0, 11, (2, 5))).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    after = dict(model.named_parameters())
    assert torch.equal(before["layers.1.mlp.weight"], after["layers.1.mlp.weight"])
    assert not torch.equal(before["layers.0.mlp.weight"], after["layers.0.mlp.weight"])
    assert not torch.equal(before["embed.weight"], after["embed.weight"])


def test_bad_arguments():
    with pytest.raises(ConfigError, match="base_lr"):
        param_groups(TinyLM(), base_lr=-1.0)
    with pytest.raises(ConfigError, match="weight_decay"):
        param_groups(TinyLM(), weight_decay=float("nan"))


def test_layer_index_without_blocks_uses_order():
    idx = layer_index([("fc1.weight", (4, 3)), ("fc1.bias", (4,)), ("fc2.weight", (2, 4)), ("fc2.bias", (2,))])
    assert idx == {"fc1.weight": ("fc1", 0), "fc1.bias": ("fc1", 0), "fc2.weight": ("fc2", 1), "fc2.bias": ("fc2", 1)}


# ------------------------------------------------------------------ apply_lrmap


def test_apply_lrmap_on_param_groups_rescales_from_base():
    model = TinyLM()
    lrmap1 = LRMap(method="t", params={"layers.0.mlp.weight": 2.0})
    opt = torch.optim.SGD(param_groups(model, lrmap1, base_lr=0.1), lr=0.1)
    lrmap2 = LRMap(method="t", params={"layers.0.mlp.weight": 4.0, "layers.0.mlp.bias": 0.5})
    cov = apply_lrmap(opt, lrmap2)
    table = by_name(opt.param_groups)
    # base recovered as 0.2 / 2.0 = 0.1, then 0.1 * 4.0
    assert table["layers.0.mlp.weight"]["lr"] == pytest.approx(0.4)
    assert table["layers.0.mlp.bias"]["lr"] == pytest.approx(0.05)
    assert table["layers.1.mlp.weight"]["lr"] == pytest.approx(0.1)
    assert table["layers.0.mlp.weight"]["lr_multiplier"] == 4.0
    assert cov.unmatched == ()
    assert len(names_of(opt.param_groups)) == len(UNIQUE_NAMES)


def test_apply_lrmap_splits_a_plain_optimizer_group_and_keeps_state():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state_before = {id(p): opt.state[p]["exp_avg"].clone() for p in model.parameters()}
    cov = apply_lrmap(opt, LRMap(method="t", params={"1.weight": 3.0, "1.bias": 3.0, "x.weight": 1.0}), model=model)
    assert cov.unmatched == ("x.weight",) and cov.uncovered == ("0.weight", "0.bias")
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([0.01, 0.03])
    for p in model.parameters():
        assert torch.equal(opt.state[p]["exp_avg"], state_before[id(p)])
    opt.step()  # still a valid optimizer


def test_apply_lrmap_without_names_is_a_clear_error():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="param_names"):
        apply_lrmap(opt, LRMap(method="t", params={"weight": 2.0}))


def test_apply_lrmap_scales_weight_decay_and_initial_lr():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    opt = torch.optim.AdamW(param_groups(model, base_lr=0.1, weight_decay=0.1), lr=0.1)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    lrmap = LRMap(method="ad", params={"0.weight": 2.0}, target="weight_decay", wd_params={"0.weight": 3.0})
    apply_lrmap(opt, lrmap)
    table = by_name(opt.param_groups)
    assert table["0.weight"]["weight_decay"] == pytest.approx(0.3)
    assert table["0.weight"]["initial_lr"] == pytest.approx(0.2)
    assert table["0.bias"]["weight_decay"] == 0.0
    assert table["1.weight"]["weight_decay"] == pytest.approx(0.1)


def test_keys_with_a_wrapper_prefix_are_aligned(caplog):
    lrmap = LRMap(method="t", params={"module.layers.0.mlp.weight": 2.0, "module.embed.weight": 3.0})
    with caplog.at_level(logging.INFO, logger="spectra.optim.param_groups"):
        table = by_name(param_groups(TinyLM(), lrmap, base_lr=1.0))
    assert table["layers.0.mlp.weight"]["lr"] == 2.0 and table["embed.weight"]["lr"] == 3.0
    assert "prefix 'module.'" in caplog.text
    assert check_lrmap(TinyLM(), lrmap).unmatched == ()
    # the other way: the model is wrapped, the map is not
    wrapped = nn.Sequential()
    wrapped.add_module("model", TinyLM())
    table = by_name(param_groups(wrapped, LRMap(method="t", params={"layers.1.attn.weight": 0.5}), base_lr=1.0))
    assert table["model.layers.1.attn.weight"]["lr"] == 0.5


def test_apply_lrmap_aligns_prefixes():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    opt = torch.optim.SGD(param_groups(model, base_lr=0.1), lr=0.1)
    cov = apply_lrmap(opt, LRMap(method="t", params={"module.1.weight": 2.0}))
    assert by_name(opt.param_groups)["1.weight"]["lr"] == pytest.approx(0.2)
    assert cov.unmatched == ()


def test_tied_weight_with_two_multipliers_uses_first_name_and_warns(caplog):
    lrmap = LRMap(method="t", params={"embed.weight": 2.0, "lm_head.weight": 5.0})
    with caplog.at_level(logging.WARNING, logger="spectra.optim.param_groups"):
        table = by_name(param_groups(TinyLM(), lrmap, base_lr=1.0))
    assert table["embed.weight"]["lr"] == 2.0
    assert "tied parameter embed.weight" in caplog.text
