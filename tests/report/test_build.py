import math

import pytest

from spectra.report import build
from spectra.results import Analysis, LayerResult

from .factories import make_lrmap


@pytest.mark.parametrize("value, text", [
    (None, "–"), (math.nan, "–"), (2.3456, "2.35"), (12345, "12,345"), (1.5e-5, "1.50e-5"),
    (123456.0, "1.23e5"), (0.0, "0"), (True, "true"), ("abc", "abc"),
])
def test_fmt(value, text):
    assert build.fmt(value) == text


def test_role_strips_block_prefix_and_groups_outside_blocks():
    assert build.role("encoder.layer.3.attention.self.query", "linear") == "attention.self.query"
    assert build.role("model.layers.10.mlp.down_proj", "linear") == "mlp.down_proj"
    assert build.role("model.layers.1.mlp.experts.3", "expert") == "mlp.experts"
    assert build.role("embeddings.word_embeddings", "embedding") == "embedding"
    assert build.role("pooler.dense", "linear") == "linear"


def test_roles_fall_back_to_kind_when_too_many_groups():
    items = [(f"layers.0.part{i}", "linear") for i in range(build.MAX_ROLES + 1)] + [("emb", "embedding")]
    groups = build.roles(items)
    assert set(groups.values()) == {"linear", "embedding"}
    few = build.roles(items[:3])
    assert len(set(few.values())) == 3


def test_positions_dodge_within_depth():
    pos = build.positions([("a", 1), ("b", 1), ("c", 1), ("d", 2)])
    assert pos["d"] == 2
    assert pos["a"] == pytest.approx(1 - 0.33) and pos["c"] == pytest.approx(1 + 0.33)
    assert pos["b"] == pytest.approx(1.0)


def test_depth_ticks_label_embedding_and_head():
    ticks = build.depth_ticks([("emb", 0, "embedding"), ("layers.0.fc", 1, "linear"), ("head", 2, "linear")])
    assert ticks == [(0, "emb"), (1, "1"), (2, "head")]


def test_table_columns_follow_inputs_and_rows_sort(analysis):
    cols, rows = build.table(analysis, {})
    keys = [c.key for c in cols]
    assert "lr" not in keys and "b_simple" not in keys and "mp_softrank" in keys
    assert "num_traps" not in keys  # no layer has the randomisation group
    lrmap = make_lrmap(analysis)
    cols, rows = build.table(analysis, {"lrmap": build.by_name(lrmap["layers"])})
    keys = [c.key for c in cols]
    lr = keys.index("lr")
    # depth 0 first; within a depth the analysis's (model) order, not the alphabet
    assert [r["name"] for r in rows][:2] == ["embeddings.word_embeddings", "embeddings.position_ids"]
    word, ids = rows[0], rows[1]
    assert ids["cells"][keys.index("note")]["text"].startswith("skipped: non-floating dtype")
    assert ids["cells"][keys.index("kind")]["text"] == "–"  # a tensor with no matrix kind
    assert float(word["cells"][lr]["sort"]) == lrmap["layers"][0]["multiplier"]
    assert ids["cells"][lr] == {"text": "–", "sort": "", "num": True}
    block = [r["name"] for r in rows if r["name"].startswith("encoder.layer.0.")]
    assert block[:4] == [f"encoder.layer.0.attention.{p}" for p in ("self.query", "self.key", "self.value",
                                                                       "output.dense")]
    depths = [int(float(r["cells"][keys.index("depth")]["sort"])) for r in rows]
    assert depths == sorted(depths)


def test_table_drops_empty_columns():
    a = Analysis(layers=(LayerResult("fc", "fc.weight", "linear", (4, 4), 1, alpha=3.0),), summary={},
                 config={}, checkpoint="x", created="")
    keys = [c.key for c in build.table(a, {})[0]]
    assert "alpha_ci" not in keys and "entropy" not in keys
    assert keys[:3] == ["name", "alpha", "note"] and "kind" in keys


def test_note_comes_right_after_alpha_and_kinds_are_matrix_kinds(analysis):
    cols, _ = build.table(analysis, {})
    keys = [c.key for c in cols]
    assert keys[:4] == ["name", "alpha", "alpha_ci", "note"]  # next to the number it explains, not off-screen
    weighted = next(c for c in cols if c.key == "alpha_weighted")
    assert weighted.label != "α̂" and "alpha_weighted" in weighted.title  # said in words, with a tooltip
    assert build.kinds(analysis) == ["embedding", "linear"]  # "skipped" is a status, not a kind
