"""Feedback rules: noise (from spectra.noise/1) and update-ratio (from spectra.diff/1)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.errors import ConfigError, FormatError
from spectra.noise import LayerNoise, NoiseResult
from spectra.prescribe import prescribe
from spectra.prescribe.registry import LayerRow
from spectra.prescribe.rules_feedback import noise, update_ratio


def noise_file(values, metric="b_simple"):
    layers = []
    for i, v in enumerate(values):
        rec = {"name": f"h.{i}.fc", "params": [f"h.{i}.fc.weight", f"h.{i}.fc.bias"], "depth": i + 1, "kind": "linear",
               metric: v, "status": "success" if v is not None else "failed",
               "reason": "" if v is not None else "no gradient", "reliable": v is not None}
        layers.append(rec)
    return {"schema": "spectra.noise/1", "spectra_version": "0.1.0", "source": "gradients", "summary": {}, "layers": layers}


def diff_file(values):
    return {"schema": "spectra.diff/1", "a": "a", "b": "b", "summary": {}, "mismatched": [],
            "layers": [{"name": f"h.{i}.fc", "param": f"h.{i}.fc.weight", "depth": i + 1, "kind": "linear",
                        "rel_update": v, "status": "success"} for i, v in enumerate(values)]}


def test_noise_inverse_sqrt_of_b_simple_geomean_centred():
    lrmap = prescribe(None, "noise", noise=noise_file([1.0, 4.0, 16.0, 0.0, None]))
    # geomean of 1, 4, 16 is 4: m = (4 / b) ** 0.5 -> 2, 1, 0.5
    assert lrmap.multiplier("h.0.fc.weight") == pytest.approx(2.0)
    assert lrmap.multiplier("h.1.fc.weight") == pytest.approx(1.0)
    assert lrmap.multiplier("h.2.fc.weight") == pytest.approx(0.5)
    assert lrmap.params["h.0.fc.bias"] == pytest.approx(2.0)  # attached params follow
    assert lrmap.multiplier("h.3.fc.weight") == 1.0 and "not > 0" in lrmap.layer("h.3.fc").reason
    assert lrmap.multiplier("h.4.fc.weight") == 1.0 and "no gradient" in lrmap.layer("h.4.fc").reason
    assert lrmap.options["clip"] == [0.1, 10.0]


def test_noise_snr_metric_goes_the_other_way_and_power():
    lrmap = prescribe(None, "noise", metric="snr", power=1.0, noise=noise_file([1.0, 4.0], metric="snr"))
    # geomean 2: m = snr / 2 -> 0.5, 2
    assert lrmap.multiplier("h.0.fc.weight") == pytest.approx(0.5)
    assert lrmap.multiplier("h.1.fc.weight") == pytest.approx(2.0)


def test_noise_default_clip_applies():
    lrmap = prescribe(None, "noise", noise=noise_file([1.0, 10000.0]))
    # geomean 100: (100 / 1) ** 0.5 = 10 (at the bound), (100 / 10000) ** 0.5 = 0.1
    assert lrmap.multiplier("h.0.fc.weight") == pytest.approx(10.0)
    lrmap = prescribe(None, "noise", noise=noise_file([1.0, 10000.0]), clip="0.5,2")
    assert lrmap.multiplier("h.0.fc.weight") == 2.0 and "clipped from 10" in lrmap.layer("h.0.fc").reason
    assert lrmap.multiplier("h.1.fc.weight") == 0.5


def test_noise_from_file_and_result_object(tmp_path):
    path = tmp_path / "noise.json"
    path.write_text(json.dumps(noise_file([1.0, 4.0])))
    from_file = prescribe(None, "noise", noise=path)
    assert from_file.multiplier("h.0.fc.weight") == pytest.approx(math.sqrt(2))  # (2 / 1) ** 0.5
    assert str(path) in from_file.source
    # the noise engineer's result object is accepted directly, and a noise file given as the source too
    result = NoiseResult(layers=(LayerNoise("fc", ("fc.weight",), 1, 10, b_simple=9.0, reliable=True),
                                 LayerNoise("out", ("out.weight", "out.bias"), 2, 10, b_simple=1.0, reliable=True)),
                         summary={}, config={}, source="gradients")
    lrmap = prescribe(None, "noise", noise=result)
    assert lrmap.multiplier("fc.weight") == pytest.approx(1 / math.sqrt(3))  # (3 / 9) ** 0.5
    assert lrmap.params["out.bias"] == pytest.approx(math.sqrt(3))
    assert prescribe(str(path), "noise").multiplier("h.1.fc.weight") == pytest.approx(math.sqrt(0.5))


def test_unreliable_layers_keep_the_default_with_the_reason():
    data = noise_file([1.0, 4.0, 16.0, 100.0])
    data["layers"][3].update(reliable=False, reliable_reason="B_simple interval [20, 500] spans a factor 25.0 (> 4)")
    del data["layers"][2]["reliable"]  # a file written before the flag existed
    lrmap = prescribe(None, "noise", noise=data)
    # the centre is the geomean of the reliable layers only: (1 * 4) ** 0.5 = 2 -> m = (2 / b) ** 0.5
    assert lrmap.multiplier("h.0.fc.weight") == pytest.approx(math.sqrt(2))
    assert lrmap.multiplier("h.1.fc.weight") == pytest.approx(math.sqrt(0.5))
    assert lrmap.multiplier("h.3.fc.weight") == 1.0 and lrmap.params.get("h.3.fc.bias", 1.0) == 1.0
    assert lrmap.layer("h.3.fc").reason == "unreliable noise estimate: B_simple interval [20, 500] spans a factor 25.0 (> 4)"
    assert lrmap.multiplier("h.2.fc.weight") == 1.0 and "no `reliable` flag" in lrmap.layer("h.2.fc").reason
    assert not lrmap.layer("h.3.fc").prescribed
    # reliable_only=False acts on every measured layer: geomean of 1, 4, 16, 100 = sqrt(80)
    every = prescribe(None, "noise", noise=data, reliable_only=False)
    assert every.multiplier("h.3.fc.weight") == pytest.approx((math.sqrt(80) / 100) ** 0.5)
    with pytest.raises(ConfigError, match="reliable_only"):
        noise([], reliable_only="yes")


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(min_value=1e-3, max_value=1e4), min_size=1, max_size=6),
       noisy=st.lists(st.tuples(st.integers(0, 6), st.floats(min_value=1e-3, max_value=1e4)), max_size=3))
def test_unreliable_rows_never_move_the_others(values, noisy):
    rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate(values)]
    base = [d.multiplier for d in noise(rows)]
    mixed = list(rows)
    for k, (pos, v) in enumerate(noisy):
        mixed.insert(min(pos, len(mixed)), LayerRow(f"u.{k}", f"u.{k}.weight", 1, value=v, unreliable="too wide"))
    after = noise(mixed)
    assert [d.multiplier for r, d in zip(mixed, after) if not r.unreliable] == pytest.approx(base)
    assert all(math.isnan(d.multiplier) and "too wide" in d.reason for r, d in zip(mixed, after) if r.unreliable)


def test_noise_without_file_tells_the_user_what_to_run(analysis):
    with pytest.raises(ConfigError, match="spectra noise"):
        prescribe(analysis, "noise")
    with pytest.raises(ConfigError, match="no per-layer 'alpha'; it has: grad_sq, trace_sigma, b_simple"):
        prescribe(None, "noise", metric="alpha", noise=noise_file([1.0]))
    with pytest.raises(ConfigError, match="b_simple, trace_sigma"):  # a noise field the rule does not read
        prescribe(None, "noise", metric="grad_fro", noise=noise_file([1.0]))


def test_noise_file_of_wrong_schema(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(diff_file([0.1])))
    with pytest.raises(FormatError, match="spectra.diff/1"):
        prescribe(None, "noise", noise=path)


def test_update_ratio_aims_at_geomean():
    lrmap = prescribe(None, "update-ratio", diff=diff_file([0.002, 0.008, 0.032, None]))
    # geomean (0.002 * 0.008 * 0.032) ** (1/3) = 0.008: m = 0.008 / r -> 4, 1, 0.25
    assert lrmap.multiplier("h.0.fc.weight") == pytest.approx(4.0)
    assert lrmap.multiplier("h.1.fc.weight") == pytest.approx(1.0)
    assert lrmap.multiplier("h.2.fc.weight") == pytest.approx(0.25)
    assert lrmap.multiplier("h.3.fc.weight") == 1.0


def test_update_ratio_explicit_target_and_clip():
    lrmap = prescribe(None, "update-ratio", target=0.01, diff=diff_file([0.0005, 0.02]))
    # 0.01 / 0.0005 = 20 -> clipped to 10 by default; 0.01 / 0.02 = 0.5
    assert lrmap.multiplier("h.0.fc.weight") == 10.0
    assert lrmap.multiplier("h.1.fc.weight") == pytest.approx(0.5)


def test_update_ratio_uses_analysis_attachments(analysis):
    diff = diff_file([0.01, 0.04])
    diff["layers"][1]["name"], diff["layers"][1]["param"] = "layers.1.mlp", "layers.1.mlp.weight"
    lrmap = prescribe(analysis, "update-ratio", diff=diff)
    assert lrmap.params["layers.1.mlp.bias"] == pytest.approx(0.5)  # 0.02 / 0.04, attached via the analysis


def test_update_ratio_needs_diff(analysis):
    with pytest.raises(ConfigError, match="spectra diff"):
        prescribe(analysis, "update-ratio")
    with pytest.raises(ConfigError, match="target"):
        update_ratio([], target=-1.0)
    with pytest.raises(ConfigError, match="power"):
        noise([], power=-1.0)
