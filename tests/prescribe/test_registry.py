"""The rule registry: lookup, listing, defaults from signatures, option validation."""

from __future__ import annotations

import pytest

from spectra.errors import ConfigError
from spectra.prescribe import Decision, get_rule, list_rules, register_rule
from spectra.prescribe import registry

BUILTIN = {"llr", "tempbalance", "tb-sqrt", "tb-log2", "alphadecay", "layer-decay", "ulmfit", "lines", "noise",
           "update-ratio"}


def test_builtin_rules_are_registered():
    assert {info.name for info in list_rules()} == BUILTIN
    assert [info.name for info in list_rules("tb-*")] == ["tb-log2", "tb-sqrt"]


def test_defaults_come_from_signatures_and_overrides():
    assert get_rule("llr").defaults == {"min_ratio": 1.0, "max_ratio": 5.0, "eigs_thresh": 50, "exclude_first": False,
                                        "exclude_last": False, "embed_name": "embed", "head_name": "head"}
    assert get_rule("tempbalance").defaults["min_ratio"] == 0.5
    assert get_rule("alphadecay").target == "weight_decay"
    assert get_rule("layer-decay").defaults["decay"] == 0.75
    assert get_rule("ulmfit").defaults["decay"] == pytest.approx(1 / 2.6)
    assert get_rule("ulmfit").fn is get_rule("layer-decay").fn


def test_unknown_rule_lists_valid_names():
    with pytest.raises(ConfigError, match="choose one of: alphadecay, layer-decay"):
        get_rule("tempbalanse")


def test_resolve_rejects_foreign_options():
    with pytest.raises(ConfigError, match="does not apply to rule 'lines' \\(its options: a, b\\)"):
        get_rule("lines").resolve({"decay": 0.5})


def test_register_custom_rule_and_guards():
    @register_rule("test-const", description="constant", inputs="depth", metric="depth")
    def const(rows, *, value: float = 2.0):
        return [Decision(value) for _ in rows]

    try:
        info = get_rule("test-const")
        assert info.defaults == {"value": 2.0}
        with pytest.raises(ValueError, match="already registered"):
            register_rule("test-const", description="again")(const)
        with pytest.raises(ValueError, match="not options"):
            register_rule("test-other", description="x", nope=1)(const)
        with pytest.raises(ValueError, match="inputs"):
            register_rule("test-bad", description="x", inputs="files")
    finally:
        registry._REGISTRY.pop("test-const", None)
