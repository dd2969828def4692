"""HT-SR rules against hand-computed values on the fixed table of conftest.py.

Table (name: alpha): embed 5.0, layers.0.attn 2.0, layers.0.mlp 3.0, layers.1.attn 4.0,
layers.1.mlp 6.0, lm_head 3.5; every layer has 100 eigenvalues.
"""

from __future__ import annotations

import math

import pytest

from spectra.errors import ConfigError
from spectra.prescribe import LayerRow, prescribe
from spectra.prescribe.rules_htsr import linear_map, llr, tb_log2, tb_sqrt, tempbalance


def mult(lrmap, name):
    return lrmap.multiplier(f"{name}.weight")


def test_llr_defaults_embeddings_and_head_at_max_biases_follow_norms_at_base(analysis):
    lrmap = prescribe(analysis, "llr")
    # body alphas 2, 3, 4, 6 -> interp to [1, 5]: m = 1 + 4 * (a - 2) / (6 - 2) = a - 1
    assert mult(lrmap, "layers.0.attn") == pytest.approx(1.0)
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(2.0)
    assert mult(lrmap, "layers.1.attn") == pytest.approx(3.0)
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(5.0)
    assert mult(lrmap, "embed") == 5.0 and mult(lrmap, "lm_head") == 5.0
    assert "LLR" in lrmap.layer("embed").reason
    # a bias is in its Linear's group (module.parameters()); norms stay at the base LR, listed in the map
    assert lrmap.params["layers.1.mlp.bias"] == 5.0 and lrmap.params["norm.weight"] == 1.0
    assert lrmap.options["norms"] == "name"


def test_llr_custom_ratios(analysis):
    lrmap = prescribe(analysis, "llr", min_ratio=1.0, max_ratio=3.0)
    # m = 1 + 2 * (a - 2) / 4: alpha 3 -> 1.5, alpha 4 -> 2.0; embed/head at 3
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(1.5)
    assert mult(lrmap, "layers.1.attn") == pytest.approx(2.0)
    assert mult(lrmap, "embed") == 3.0


def test_tempbalance_excludes_embeddings_first_and_last(analysis):
    lrmap = prescribe(analysis, "tempbalance")
    # tuned: 0.attn(2) 0.mlp(3) 1.attn(4) 1.mlp(6) lm_head(3.5); first and last out -> 3, 4, 6
    # m = 0.5 + (a - 3) / (6 - 3)
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(0.5)
    assert mult(lrmap, "layers.1.attn") == pytest.approx(0.5 + 1 / 3)
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(1.5)
    for name, word in (("embed", "embedding"), ("layers.0.attn", "first"), ("lm_head", "last")):
        assert mult(lrmap, name) == 1.0
        assert word in lrmap.layer(name).reason
    # a bias follows its layer; LayerNorms stay at the base LR (TempBalance's layernorm=False)
    assert lrmap.params["layers.1.mlp.bias"] == pytest.approx(1.5)
    assert lrmap.params["norm.weight"] == 1.0
    assert lrmap.params["layers.0.ln.weight"] == 1.0 and lrmap.params["layers.0.attn.bias"] == 1.0


def test_tempbalance_without_exclusions(analysis):
    lrmap = prescribe(analysis, "tempbalance", exclude_first=False, exclude_last=False)
    # 2, 3, 4, 6, 3.5 -> m = 0.5 + (a - 2) / 4
    expected = {"layers.0.attn": 0.5, "layers.0.mlp": 0.75, "layers.1.attn": 1.0, "layers.1.mlp": 1.5, "lm_head": 0.875}
    for name, m in expected.items():
        assert mult(lrmap, name) == pytest.approx(m)


def test_tb_sqrt_and_log2_hand_values(analysis):
    s = math.sqrt(3) + math.sqrt(4) + math.sqrt(6)
    lrmap = prescribe(analysis, "tb-sqrt")
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(3 * math.sqrt(3) / s)
    assert mult(lrmap, "layers.1.attn") == pytest.approx(3 * 2 / s)
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(3 * math.sqrt(6) / s)
    total = math.log2(3) + 2 + math.log2(6)
    lrmap = prescribe(analysis, "tb-log2")
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(3 * math.log2(3) / total)
    assert mult(lrmap, "layers.1.attn") == pytest.approx(3 * 2 / total)
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(3 * math.log2(6) / total)


def test_alphadecay_is_weight_decay(analysis):
    lrmap = prescribe(analysis, "alphadecay")
    assert lrmap.target == "weight_decay"
    assert set(lrmap.params.values()) == {1.0}  # the LR is untouched
    # 3, 4, 6 -> 0.666 + (3 - 0.666) * (a - 3) / 3
    assert lrmap.wd_params["layers.0.mlp.weight"] == pytest.approx(0.666)
    assert lrmap.wd_params["layers.1.attn.weight"] == pytest.approx(0.666 + 2.334 / 3)
    assert lrmap.wd_params["layers.1.mlp.weight"] == pytest.approx(3.0)
    assert lrmap.wd_params["lm_head.weight"] == 1.0
    assert lrmap.wd_multiplier("layers.1.mlp.weight") == pytest.approx(3.0)


def test_eigs_thresh_leaves_small_layers_at_default(make_analysis):
    analysis = make_analysis(**{"layers.0.mlp": {"num_evals": 20}})
    lrmap = prescribe(analysis, "tempbalance")
    assert mult(lrmap, "layers.0.mlp") == 1.0
    assert "20 eigenvalues < eigs_thresh 50" in lrmap.layer("layers.0.mlp").reason
    # remaining 4, 6 -> [0.5, 1.5]
    assert mult(lrmap, "layers.1.attn") == pytest.approx(0.5)
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(1.5)
    lrmap = prescribe(analysis, "tempbalance", eigs_thresh=0)
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(0.5)


def test_failed_layer_gets_default_with_reason(make_analysis):
    analysis = make_analysis(**{"layers.1.attn": {"status": "failed", "reason": "too few tail eigenvalues",
                                                  "alpha": float("nan")}})
    lrmap = prescribe(analysis, "tempbalance")
    assert mult(lrmap, "layers.1.attn") == 1.0
    assert "too few tail eigenvalues" in lrmap.layer("layers.1.attn").reason
    # 0.mlp (3) and 1.mlp (6) remain -> 0.5 and 1.5
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(0.5)
    assert mult(lrmap, "layers.1.mlp") == pytest.approx(1.5)


def test_metric_option_reads_another_column(analysis):
    lrmap = prescribe(analysis, "llr", metric="stable_rank")
    # stable_rank = 10 * alpha in the table: the linear map is scale-free, same multipliers
    assert mult(lrmap, "layers.0.mlp") == pytest.approx(2.0)
    assert lrmap.layer("layers.0.mlp").metric == "stable_rank"
    assert lrmap.layer("layers.0.mlp").value == 30.0


def test_linear_map_degenerate_range_follows_numpy_interp():
    # every value equal: numpy.interp (the reference code) returns the high end
    assert linear_map([3.0, 3.0], 0.5, 1.5) == [1.5, 1.5]
    assert linear_map([], 0.5, 1.5) == []


def test_tb_log2_needs_values_above_one(make_rows):
    decisions = tb_log2(make_rows([0.9, 2.0, 4.0]), exclude_first=False, exclude_last=False, eigs_thresh=0)
    assert math.isnan(decisions[0].multiplier) and "log2" in decisions[0].reason
    # log2: 1 and 2 -> 2 * 1 / 3 and 2 * 2 / 3
    assert decisions[1].multiplier == pytest.approx(2 / 3)
    assert decisions[2].multiplier == pytest.approx(4 / 3)


def test_tb_sqrt_direct(make_rows):
    d = tb_sqrt(make_rows([1.0, 9.0]), exclude_first=False, exclude_last=False, eigs_thresh=0)
    # sqrt 1 and 3, sum 4, n 2 -> 0.5 and 1.5
    assert [x.multiplier for x in d] == pytest.approx([0.5, 1.5])


def test_llr_head_detection_is_a_substring_as_in_the_reference(make_rows):
    """``LRUnbalance.py``: ``if self.embed_name in name or self.head_name in name`` (plain substrings),
    so ``multihead_attn.q`` counts as a head; ``embed_name``/``head_name`` change the words."""
    from dataclasses import replace

    rows = make_rows([2.0, 4.0]) + make_rows([3.0])
    rows[2] = replace(rows[2], name="h.9.multihead_attn.q", param="h.9.multihead_attn.q.weight")
    d = llr(rows, eigs_thresh=0)
    assert d[2].multiplier == 5.0 and "largest alpha" in d[2].reason
    d = llr(rows, eigs_thresh=0, head_name="lm_head")
    assert d[2].multiplier == pytest.approx(3.0) and d[2].reason == ""  # now mapped: 1 + 4 * (3 - 2) / 2


def test_llr_embed_takes_the_max_alpha_of_every_tuned_layer_small_ones_included(make_rows):
    """The reference overwrites the embed/head alpha with the maximum over all rows *before* the
    ``eigs_thresh`` filter, so a small layer's alpha can become the top of everyone's range."""
    from dataclasses import replace

    rows = make_rows([2.0, 4.0, 9.0])
    rows[2] = replace(rows[2], num_evals=20)  # below eigs_thresh 50: left at 1, but its alpha is the max
    rows.append(LayerRow("embed", "embed.weight", 0, "embedding", 3.0, num_evals=100))
    d = llr(rows)
    assert math.isnan(d[2].multiplier) and "eigs_thresh" in d[2].reason
    assert d[3].multiplier == 5.0
    # range [2, 9]: alpha 4 -> 1 + 4 * 2 / 7
    assert d[0].multiplier == 1.0 and d[1].multiplier == pytest.approx(1 + 8 / 7)


def test_bad_ratios_are_config_errors(analysis):
    with pytest.raises(ConfigError, match="min_ratio"):
        prescribe(analysis, "tempbalance", min_ratio=2.0, max_ratio=1.0)
    with pytest.raises(ConfigError, match="min_ratio"):
        tempbalance([], min_ratio=-1.0)


def test_skipped_embedding_keeps_the_analysis_reason(make_analysis):
    analysis = make_analysis(**{"embed": {"status": "skipped", "kind": "skipped", "reason": "non-floating dtype int64"}})
    lrmap = prescribe(analysis, "llr")
    assert lrmap.layer("embed").multiplier == 1.0 and not lrmap.layer("embed").prescribed
    assert "non-floating dtype int64" in lrmap.layer("embed").reason
    assert "embed.weight" not in lrmap.params


def test_llr_gives_a_head_too_small_to_fit_max_ratio_and_covers_it(make_analysis):
    analysis = make_analysis(**{"lm_head": {"status": "skipped", "alpha": None,
                                            "reason": "too small: 5 eigenvalues < min_evals 8"}})
    lrmap = prescribe(analysis, "llr", max_ratio=4.0)
    head = lrmap.layer("lm_head")
    assert head.prescribed and "largest alpha" in head.reason
    assert head.multiplier == max(e.multiplier for e in lrmap.layers)  # the embedding shares the top
    assert lrmap.params["lm_head.weight"] == head.multiplier  # covered: no "not in the map" warning
