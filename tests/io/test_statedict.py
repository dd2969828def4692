"""Unwrapping, flattening, prefix stripping and tie detection on plain mappings."""

from __future__ import annotations

import pytest
import torch

from spectra.errors import CheckpointError
from spectra.io.statedict import dedupe_tied, extract_state_dict, find_optimizer_state, strip_prefixes


def test_nested_mapping_is_flattened_and_non_tensors_dropped():
    t = torch.zeros(2)
    obj = {"encoder": {"fc": {"weight": t, "bias": t + 1}}, "head.weight": t, "note": "x", "steps": 4}
    assert list(extract_state_dict(obj, "<x>")) == ["encoder.fc.weight", "encoder.fc.bias", "head.weight"]


def test_wrapper_precedence_state_dict_first():
    obj = {"model": {"a": torch.zeros(1)}, "state_dict": {"b": torch.zeros(1)}}
    assert list(extract_state_dict(obj, "<x>")) == ["b"]


def test_wrapper_not_used_when_top_level_has_tensors():
    obj = {"fc.weight": torch.zeros(2, 2), "model": {"inner": torch.zeros(1)}}
    assert list(extract_state_dict(obj, "<x>")) == ["fc.weight", "model.inner"]


def test_optimizer_entries_are_not_weights():
    obj = {"fc.weight": torch.zeros(2, 2), "optimizer": {"state": {0: {"exp_avg": torch.zeros(2, 2)}}}}
    assert list(extract_state_dict(obj, "<x>")) == ["fc.weight"]


def test_module_under_wrapper_key():
    net = torch.nn.Linear(3, 2)
    assert list(extract_state_dict({"model": net, "epoch": 1}, "<x>")) == ["weight", "bias"]


@pytest.mark.parametrize("obj, message", [
    ({}, r"<x>: holds no tensors \(top-level keys: none\)"),
    ({"epoch": 1}, r"<x>: holds no tensors \(top-level keys: epoch\)"),
    ([torch.zeros(1)], r"<x>: holds a list, not a state dict"),
])
def test_no_tensors(obj, message):
    with pytest.raises(CheckpointError, match=message):
        extract_state_dict(obj, "<x>")


@pytest.mark.parametrize("keys, expected, removed", [
    (["module.a", "module.b"], ["a", "b"], "module."),
    (["_orig_mod.a", "_orig_mod.b"], ["a", "b"], "_orig_mod."),
    (["module._orig_mod.a"], ["a"], "module._orig_mod."),
    (["model.a", "model.b"], ["a", "b"], "model."),
    (["model.model.a", "model.lm_head"], ["model.a", "lm_head"], "model."),
    (["model.a", "head"], ["model.a", "head"], ""),          # not on every key: part of the path
    (["net.a", "net.b"], ["net.a", "net.b"], ""),            # only exactly 'model.' is stripped
    (["models.a", "models.b"], ["models.a", "models.b"], ""),
    (["module.a", "b"], ["module.a", "b"], ""),
])
def test_strip_prefixes(keys, expected, removed):
    rename, got = strip_prefixes(keys)
    assert [rename[k] for k in keys] == expected
    assert got == removed


def test_dedupe_tied_keeps_first_and_ignores_views_and_empties():
    w = torch.randn(6, 4)
    empty = torch.zeros(0)
    tensors = {"emb": w, "head": w, "rows": w[:3], "same_values": w.clone(), "e1": empty, "e2": torch.zeros(0)}
    kept, aliases = dedupe_tied(tensors)
    assert list(kept) == ["emb", "rows", "same_values", "e1", "e2"]
    assert aliases == {"head": "emb"}


def test_find_optimizer_state_variants():
    opt = {"state": {}, "param_groups": [{"lr": 0.1, "params": []}]}
    assert find_optimizer_state(opt) == opt
    assert find_optimizer_state({"optimizer_states": [opt], "state_dict": {}}) == opt
    assert find_optimizer_state({"optim": opt}) == opt
    assert find_optimizer_state({"optimizer": opt}) == opt
    assert find_optimizer_state({"w": torch.zeros(1)}) is None
    assert find_optimizer_state(None) is None
