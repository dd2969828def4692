import math

import pytest

from spectra.report import build
from spectra.results import Analysis, LayerResult

from .factories import make_diff, make_lrmap, make_noise


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


def test_alerts_count_and_name_layers(analysis):
    alerts = build.alerts(analysis)
    titles = [a.title for a in alerts]
    over = [r.name for r in analysis.layers if r.warning == "over-trained"]
    under = [r.name for r in analysis.layers if r.warning == "under-trained"]
    assert alerts[0].level == "danger" and alerts[0].layers == tuple(over)
    assert f"{len(under)} under-trained layers (alpha > 6)" in titles
    failed = next(a for a in alerts if a.title.startswith("fit failed"))
    assert failed.detail == "too few eigenvalues for a fit" and failed.layers == ("encoder.layer.0.odd",)
    skipped = next(a for a in alerts if "skipped" in a.title)
    assert skipped.level == "info" and "int64" in skipped.detail


def test_alerts_for_traps_noise_and_diff(analysis):
    trapped = Analysis(layers=(LayerResult("fc", "fc.weight", "linear", (4, 4), 1, alpha=3.0, num_traps=2),),
                       summary={}, config={}, checkpoint="x", created="")
    assert build.alerts(trapped)[0].title == "correlation traps in 1 layer"
    noise, diff = make_noise(analysis), make_diff(analysis)
    alerts = build.alerts(analysis, noise=noise, diff=diff)
    unreliable = next(a for a in alerts if a.title.startswith("gradient-noise"))
    assert unreliable.layers == ("bad.layer",)
    big = next(a for a in alerts if "moved more than" in a.title)
    expected = [r["name"] for r in diff["layers"] if r["rel_update"] > 1e-2]
    assert list(big.layers) == expected
    assert any(a.layers == ("extra.weight",) for a in alerts)


def test_no_alerts_for_a_healthy_model():
    ok = Analysis(layers=(LayerResult("fc", "fc.weight", "linear", (4, 4), 1, alpha=3.0, num_pl_spikes=50),),
                  summary={}, config={}, checkpoint="x", created="")
    assert build.alerts(ok) == []


def test_param_count_prefers_summary_and_counts_each_tensor_once():
    rec = LayerResult("e", "moe.experts", "expert", (2, 3, 4), 1)
    a = Analysis(layers=(rec, LayerResult("e1", "moe.experts", "expert", (2, 3, 4), 1)), summary={},
                 config={}, checkpoint="x", created="")
    assert build.param_count(a) == 24
    b = Analysis(layers=(rec,), summary={"num_params": 1000}, config={}, checkpoint="x", created="")
    assert build.param_count(b) == 1000


def test_cards_values(analysis):
    cards = {c["label"]: c for c in build.cards(analysis, lrmap=make_lrmap(analysis), noise=make_noise(analysis))}
    ok = analysis.successful
    assert cards["layers analysed"]["value"] == str(len(ok))
    assert cards["layers analysed"]["sub"] == "1 failed · 1 skipped"
    assert cards["mean alpha"]["value"] == build.fmt(sum(r.alpha for r in ok) / len(ok))
    assert cards["over-trained (α < 2)"]["level"] == "danger"
    assert cards["B_simple"]["value"] == "123"
    assert cards["LR map (tempbalance)"]["value"].endswith("×")


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
    assert ids["cells"][-1]["text"].startswith("skipped: non-floating dtype")
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
    assert keys[:2] == ["name", "kind"] and keys[-1] == "note"
