"""Depth rules (layer-decay, ulmfit, lines) against hand arithmetic on the fixed table.

Depths in the table: embed 0, layers.0.* 1, layers.1.* 2, lm_head 3.
"""

from __future__ import annotations

import pytest

from spectra.errors import ConfigError
from spectra.prescribe import LayerRow, prescribe
from spectra.prescribe.rules_depth import layer_decay, lines


def mult(lrmap, name):
    return lrmap.multiplier(f"{name}.weight")


def test_layer_decay_timm_default(analysis):
    lrmap = prescribe(analysis, "layer-decay")
    # 0.75 ** (3 - depth)
    assert mult(lrmap, "embed") == pytest.approx(0.421875)  # 0.75^3
    assert mult(lrmap, "layers.0.attn") == pytest.approx(0.5625)  # 0.75^2
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(0.75)
    assert mult(lrmap, "lm_head") == 1.0
    assert lrmap.layer("embed").metric == "depth" and lrmap.layer("embed").value == 0


def test_layer_decay_min_scale_and_custom_decay(analysis):
    lrmap = prescribe(analysis, "layer-decay", decay=0.5, min_scale=0.2)
    # 0.5^3 = 0.125 -> raised to min_scale 0.2; 0.5^2 = 0.25; 0.5; 1
    assert mult(lrmap, "embed") == pytest.approx(0.2)
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(0.25)
    assert mult(lrmap, "layers.1.attn") == pytest.approx(0.5)


def test_ulmfit_divides_by_2_6_per_layer(analysis):
    lrmap = prescribe(analysis, "ulmfit")
    assert mult(lrmap, "lm_head") == 1.0
    assert mult(lrmap, "layers.1.attn") == pytest.approx(1 / 2.6)
    assert mult(lrmap, "layers.0.attn") == pytest.approx(1 / 6.76)
    assert mult(lrmap, "embed") == pytest.approx(1 / 17.576)


def test_depth_rules_place_failed_layers_but_not_skipped(make_analysis):
    analysis = make_analysis(**{"layers.0.mlp": {"status": "failed", "alpha": float("nan")},
                                "layers.1.mlp": {"status": "skipped", "kind": "skipped", "reason": "int8 weights"}})
    lrmap = prescribe(analysis, "layer-decay", decay=0.5)
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(0.25)  # depth still known
    assert lrmap.layer("layers.1.mlp").multiplier == 1.0
    assert lrmap.layer("layers.1.mlp").reason == "int8 weights"
    assert "layers.1.mlp.weight" not in lrmap.params  # a skipped tensor is not a trainable weight


def test_lines_on_table(analysis):
    lrmap = prescribe(analysis, "lines", a=0.2, b=0.8)
    # blocks layers.0 (l=0) and layers.1 (l=1), B = 2: 0.2 + 0.8 * l
    assert mult(lrmap, "layers.0.attn") == pytest.approx(0.2)
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(1.0)
    # outside the blocks: a
    assert mult(lrmap, "embed") == pytest.approx(0.2) and mult(lrmap, "lm_head") == pytest.approx(0.2)
    assert "LiNeS" in lrmap.layer("lm_head").reason


def test_lines_three_blocks_and_defaults():
    rows = [LayerRow(f"blocks.{i}.fc", f"blocks.{i}.fc.weight", i + 1) for i in range(3)]
    d = lines(rows)
    # defaults a = b = 0.5: 0.5 + 0.5 * l / 2
    assert [x.multiplier for x in d] == pytest.approx([0.5, 0.75, 1.0])


def test_lines_without_numbered_blocks_uses_depths():
    rows = [LayerRow(n, n + ".weight", d) for n, d in (("fc1", 0), ("fc2", 1), ("fc3", 2))]
    assert [x.multiplier for x in lines(rows, a=0.0, b=1.0)] == pytest.approx([0.0, 0.5, 1.0])


def test_lines_single_block_gets_a_plus_b():
    assert lines([LayerRow("h.0.fc", "h.0.fc.weight", 1)], a=0.3, b=0.5)[0].multiplier == pytest.approx(0.8)


def test_depth_rules_reject_metric_and_bad_decay(analysis):
    with pytest.raises(ConfigError, match="depth only"):
        prescribe(analysis, "layer-decay", metric="alpha")
    with pytest.raises(ConfigError, match="decay"):
        layer_decay([], decay=0.0)


def test_a_head_too_small_to_fit_is_still_a_layer_at_its_depth(make_analysis):
    """A 2-class head has 2 eigenvalues (< min_evals): skipped by the analysis, but depth rules place it.

    Dropping it would make the layer below the top and shift every multiplier by one level."""
    skipped = {"status": "skipped", "reason": "too small: 2 eigenvalues < min_evals 8", "alpha": None}
    analysis = make_analysis(**{"lm_head": skipped})
    full = prescribe(make_analysis(), "layer-decay", decay=0.5)
    small = prescribe(analysis, "layer-decay", decay=0.5)
    assert {e.name: e.multiplier for e in small.layers} == {e.name: e.multiplier for e in full.layers}
    assert small.layer("lm_head").multiplier == 1.0 and small.layer("lm_head").prescribed
    assert "lm_head.weight" in small.params
