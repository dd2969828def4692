"""prescribe(): inputs, normalisation, clipping, --norms, and properties that hold for every rule."""

from __future__ import annotations

import math
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.errors import ConfigError
from spectra.prescribe import LayerRow, get_rule, list_rules, prescribe
from spectra.prescribe.build import parse_clip
from spectra.prescribe.registry import run_rule
from spectra.results import Analysis, LayerResult

ALPHA_RULES = ["llr", "tempbalance", "tb-sqrt", "tb-log2", "alphadecay"]
alphas = st.lists(st.floats(min_value=1.05, max_value=20.0, allow_nan=False), min_size=3, max_size=10)


def rows_of(values, names=None):
    names = names or [f"h.{i}.fc" for i in range(len(values))]
    return [LayerRow(n, f"{n}.weight", i + 1, "linear", v, num_evals=100) for i, (n, v) in enumerate(zip(names, values))]


def analysis_of(values, attached=None):
    recs = tuple(LayerResult(name=f"h.{i}.fc", param=f"h.{i}.fc.weight", kind="linear", shape=(100, 100), depth=i + 1,
                             num_evals=100, alpha=v) for i, v in enumerate(values))
    return Analysis(layers=recs, summary={}, config={}, checkpoint="h", created="", attached=attached or {})


def prescribed(info, rows, **options):
    return [d.multiplier for d in run_rule(info, rows, info.resolve(options), info.metric)]


# ----------------------------------------------------------------------- properties


@pytest.mark.parametrize("method", ALPHA_RULES)
@settings(max_examples=40, deadline=None)
@given(values=alphas)
def test_alpha_rules_are_monotone_in_alpha(method, values):
    info = get_rule(method)
    opts = {} if method == "llr" else {"exclude_first": False, "exclude_last": False}
    mults = prescribed(info, rows_of(values), **opts)
    pairs = [(v, m) for v, m in zip(values, mults) if math.isfinite(m)]
    for (v1, m1) in pairs:
        for (v2, m2) in pairs:
            if v1 < v2:
                assert m1 <= m2 + 1e-12


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(min_value=1e-4, max_value=1e4), min_size=2, max_size=8))
def test_feedback_rules_decrease_in_noise_and_update(values):
    for method in ("noise", "update-ratio"):
        info = get_rule(method)
        mults = prescribed(info, rows_of(values))
        for v1, m1 in zip(values, mults):
            for v2, m2 in zip(values, mults):
                if v1 < v2:
                    assert m1 >= m2 * (1 - 1e-12)


@pytest.mark.parametrize("method", ["llr", "tempbalance", "alphadecay", "layer-decay", "lines"])
@settings(max_examples=25, deadline=None)
@given(values=alphas)
def test_normalize_mean_gives_mean_one(method, values):
    lrmap = prescribe(analysis_of(values), method, normalize="mean", eigs_thresh=0) if method not in (
        "layer-decay", "lines") else prescribe(analysis_of(values), method, normalize="mean")
    mults = [e.multiplier for e in lrmap.layers if e.prescribed]
    if mults:
        assert sum(mults) / len(mults) == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(values=alphas)
def test_normalize_geomean_gives_geomean_one(values):
    lrmap = prescribe(analysis_of(values), "tb-sqrt", normalize="geomean", eigs_thresh=0)
    logs = [math.log(e.multiplier) for e in lrmap.layers if e.prescribed]
    assert sum(logs) / len(logs) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["llr", "tempbalance", "tb-log2", "ulmfit", "lines"])
@settings(max_examples=25, deadline=None)
@given(values=alphas, lo=st.floats(0.0, 1.0), width=st.floats(0.0, 3.0))
def test_clip_bounds_hold(method, values, lo, width):
    hi = lo + width
    lrmap = prescribe(analysis_of(values), method, clip=(lo, hi))
    for entry in lrmap.layers:
        if entry.prescribed:
            assert lo <= entry.multiplier <= hi
        else:
            assert entry.multiplier == 1.0 and entry.reason


@pytest.mark.parametrize("method", ["llr", "tempbalance", "tb-sqrt", "tb-log2", "alphadecay", "noise", "update-ratio"])
@settings(max_examples=30, deadline=None)
@given(values=alphas, where=st.lists(st.integers(0, 10), min_size=1, max_size=3))
def test_failed_layers_do_not_move_the_others(method, values, where):
    info = get_rule(method)
    # with first/last exclusion a failed layer can be the excluded one (see the test below)
    opts = {k: False for k in ("exclude_first", "exclude_last") if k in info.defaults}
    rows = rows_of(values)
    base = prescribed(info, rows, **opts)
    with_failed = list(rows)
    for k, pos in enumerate(where):
        bad = LayerRow(f"bad.{k}", f"bad.{k}.weight", 1, "linear", 99.0 if k % 2 else math.nan, "failed", "fit failed")
        with_failed.insert(min(pos, len(with_failed)), bad)
    after = prescribed(info, with_failed, **opts)
    kept = [m for r, m in zip(with_failed, after) if not r.name.startswith("bad.")]
    assert kept == pytest.approx(base, nan_ok=True)
    assert all(math.isnan(m) for r, m in zip(with_failed, after) if r.name.startswith("bad."))


@pytest.mark.parametrize("method", ["tempbalance", "tb-sqrt", "tb-log2", "alphadecay"])
@settings(max_examples=30, deadline=None)
@given(values=alphas, bad_first=st.booleans(), small_last=st.booleans())
def test_first_and_last_are_positions_in_model_order_whatever_the_fit(method, values, bad_first, small_last):
    """``build_optimizer_param_group`` drops the first and last tuned module *before* it drops small
    layers (and spectra, failed ones): a failed first layer is the excluded one, the next is mapped."""
    info = get_rule(method)
    rows = rows_of(values)
    if bad_first:
        rows[0] = LayerRow(rows[0].name, rows[0].param, 1, "linear", math.nan, "failed", "fit failed", num_evals=100)
    if small_last:
        rows[-1] = LayerRow(rows[-1].name, rows[-1].param, 9, "linear", 3.0, num_evals=10)
    decisions = run_rule(info, rows, info.resolve({}), info.metric)
    assert "first layer excluded" in decisions[0].reason
    assert "last layer excluded" in decisions[-1].reason
    inner = [d for d in decisions[1:-1] if d.prescribed]
    assert len(inner) >= 1 or method == "tb-log2"  # tb-log2 leaves alpha <= 1 out; alphas here are > 1.05
    assert decisions[1].prescribed


# ------------------------------------------------------------------- orchestration


def test_every_rule_returns_one_decision_per_row():
    rows = rows_of([2.0, 3.0, 5.0])
    for info in list_rules():
        decisions = run_rule(info, rows, info.resolve({}), info.metric)
        assert len(decisions) == len(rows), info.name
        assert info.description and info.source


def test_norms_base_follow_and_name(analysis):
    follow = prescribe(analysis, "tempbalance", norms="follow")
    base = prescribe(analysis, "tempbalance", norms="base")
    name = prescribe(analysis, "tempbalance")  # the rule's default: TempBalance's batchnorm_type='name'
    assert name.options["norms"] == "name"
    for lrmap in (follow, base, name):  # a layer's own bias always follows it (module.parameters())
        assert lrmap.params["layers.1.mlp.bias"] == pytest.approx(1.5)
        assert lrmap.multiplier("layers.1.mlp.weight") == pytest.approx(1.5)
    assert follow.params["norm.weight"] == pytest.approx(1.5)
    assert base.params["norm.weight"] == 1.0 and name.params["norm.weight"] == 1.0
    assert set(base.params) == set(follow.params) == set(name.params)  # attached params are listed either way
    assert follow.layer("layers.1.mlp").params == ("layers.1.mlp.weight", "layers.1.mlp.bias", "norm.weight")
    assert base.layer("layers.1.mlp").params == ("layers.1.mlp.weight", "layers.1.mlp.bias")


def test_norms_name_moves_a_batchnorm_with_its_conv_by_name():
    """TempBalance ``batchnorm_type='name'``: ``layer1.0.bn1`` follows ``layer1.0.conv1`` (``bn`` ->
    ``conv``); ``downsample.1`` (a BatchNorm not named like a conv) and any LayerNorm do not."""
    table = [("conv1", 2.0), ("layer1.0.conv1", 2.0), ("layer1.0.conv2", 4.0), ("layer1.0.downsample.0", 3.0),
             ("fc", 3.0)]
    recs = tuple(LayerResult(name=n, param=f"{n}.weight", kind="conv2d", shape=(64, 64, 3, 3), depth=i,
                             num_evals=576, alpha=a) for i, (n, a) in enumerate(table))
    attached = {"bn1.weight": "conv1", "layer1.0.bn1.weight": "layer1.0.conv1", "layer1.0.bn1.bias": "layer1.0.conv1",
                "layer1.0.bn2.weight": "layer1.0.conv2", "layer1.0.downsample.1.weight": "layer1.0.downsample.0",
                "fc.bias": "fc"}
    lrmap = prescribe(Analysis(layers=recs, summary={}, config={}, checkpoint="r", created="", attached=attached),
                      "tempbalance")
    # conv1 first and fc last are excluded; 2, 4, 3 -> 0.5, 1.5, 1.0
    assert lrmap.params["layer1.0.bn1.weight"] == lrmap.params["layer1.0.bn1.bias"] == pytest.approx(0.5)
    assert lrmap.params["layer1.0.bn2.weight"] == pytest.approx(1.5)
    assert lrmap.params["layer1.0.downsample.1.weight"] == 1.0
    assert lrmap.params["bn1.weight"] == 1.0  # its conv is the excluded first layer
    assert lrmap.params["fc.bias"] == 1.0


def test_clip_and_reason(analysis):
    lrmap = prescribe(analysis, "llr", clip="1.5,4")
    assert lrmap.multiplier("layers.0.attn.weight") == 1.5  # 1 -> 1.5
    assert lrmap.multiplier("layers.1.attn.weight") == pytest.approx(3.0)  # inside
    assert lrmap.multiplier("embed.weight") == 4.0  # 5 -> 4
    assert "clipped from 1" in lrmap.layer("layers.0.attn").reason


def test_normalize_mean_on_table(analysis):
    lrmap = prescribe(analysis, "llr", normalize="mean")
    # raw: embed 5, 1, 2, 3, 5, head 5 -> mean 21 / 6 = 3.5
    assert lrmap.multiplier("layers.0.attn.weight") == pytest.approx(1 / 3.5)
    assert lrmap.multiplier("embed.weight") == pytest.approx(5 / 3.5)


def test_experts_sharing_one_tensor_get_the_mean():
    recs = tuple(LayerResult(name=f"moe.experts.{e}", param="moe.experts.weight", kind="expert", shape=(4, 8, 8),
                             depth=1, num_evals=100, alpha=a, expert=e) for e, a in enumerate([2.0, 4.0]))
    lrmap = prescribe(Analysis(layers=recs, summary={}, config={}, checkpoint="m", created=""), "tempbalance",
                      exclude_first=False, exclude_last=False)
    assert lrmap.multiplier("moe.experts.weight") == pytest.approx((0.5 + 1.5) / 2)


def test_option_errors(analysis):
    with pytest.raises(ConfigError, match="does not apply"):
        prescribe(analysis, "tempbalance", decay=0.5)
    with pytest.raises(ConfigError, match="unknown prescription method 'nope'.*tempbalance"):
        prescribe(analysis, "nope")
    with pytest.raises(ConfigError, match="unknown analysis metric"):
        prescribe(analysis, "tempbalance", metric="bogus")
    with pytest.raises(ConfigError, match="normalize"):
        prescribe(analysis, "tempbalance", normalize="median")
    with pytest.raises(ConfigError, match="norms"):
        prescribe(analysis, "tempbalance", norms="some")
    with pytest.raises(ConfigError, match="needs an analysis"):
        prescribe(None, "tempbalance")
    with pytest.raises(ConfigError, match="geometric mean"):
        prescribe(analysis, "lines", a=0.0, normalize="geomean")


@pytest.mark.parametrize("text, expected", [("0.5,2", (0.5, 2.0)), ((0, 1), (0.0, 1.0)), (None, None)])
def test_parse_clip(text, expected):
    assert parse_clip(text) == expected


@pytest.mark.parametrize("bad", ["2,1", "x,1", "1", "-1,2"])
def test_parse_clip_rejects(bad):
    with pytest.raises(ConfigError, match="--clip"):
        parse_clip(bad)


def test_from_a_checkpoint_analyses_first(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = {"embed.weight": torch.randn(80, 32)}
    for i in range(2):
        sd[f"layers.{i}.fc.weight"] = torch.randn(64, 32)
        sd[f"layers.{i}.fc.bias"] = torch.zeros(64)
    sd["head.weight"] = torch.randn(10, 32)
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    lrmap = prescribe(str(path), "layer-decay", decay=0.5)
    # depths: embed 0, layers.0 1, layers.1 2, head 3 -> 0.5 ** (3 - depth)
    assert lrmap.multiplier("embed.weight") == pytest.approx(0.125)
    assert lrmap.params["layers.0.fc.bias"] == pytest.approx(0.25)
    assert lrmap.multiplier("head.weight") == 1.0
    assert "m.safetensors (order: canonical" in lrmap.source
    htsr = prescribe(path, "tempbalance", eigs_thresh=0, exclude_first=False, exclude_last=False)
    values = [e.value for e in htsr.layers if e.prescribed]
    assert len(values) == 3 and all(v > 1 for v in values)  # three linears fitted (median fit)
    assert sorted(e.multiplier for e in htsr.layers if e.prescribed)[::2] == pytest.approx([0.5, 1.5])


class _ConvNet(torch.nn.Module):
    """conv1/bn1 ... as torchvision names them, registered out of alphabetical order."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.layer1 = torch.nn.Module()
        self.layer1.conv1 = torch.nn.Conv2d(16, 16, 3)
        self.layer1.bn1 = torch.nn.BatchNorm2d(16)
        self.layer1.conv2 = torch.nn.Conv2d(16, 16, 3)
        self.layer1.bn2 = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16, 10)


def test_a_live_module_gives_its_own_order_and_no_buffers_in_the_map():
    """What an in-training controller does every N steps: prescribe on the module itself."""
    model = _ConvNet()
    lrmap = prescribe(model, "tempbalance", eigs_thresh=0)
    assert [e.name for e in lrmap.layers] == ["conv1", "layer1.conv1", "layer1.conv2", "fc"]
    assert "order: module, _ConvNet.named_modules()" in lrmap.source
    assert not {k for k in lrmap.keys() if "running" in k or "num_batches" in k}
    assert lrmap.layer("conv1").reason.startswith("first layer") and lrmap.layer("fc").reason.startswith("last")
    m1, m2 = lrmap.multiplier("layer1.conv1.weight"), lrmap.multiplier("layer1.conv2.weight")
    assert {m1, m2} == {0.5, 1.5}
    assert lrmap.params["layer1.bn1.weight"] == lrmap.params["layer1.bn1.bias"] == m1  # bn1 -> conv1 by name
    assert lrmap.params["layer1.bn2.weight"] == m2 and lrmap.params["layer1.conv2.bias"] == m2
    assert lrmap.params["bn1.weight"] == 1.0  # its conv is the excluded first layer
