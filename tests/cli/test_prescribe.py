"""``spectra prescribe`` through Typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from spectra.cli import app
from spectra.prescribe import LRMap
from spectra.results import Analysis, LayerResult

runner = CliRunner()


@pytest.fixture
def analysis_json(tmp_path):
    # alphas 2, 3, 4, 6 in four blocks between an embedding and a head
    recs = [LayerResult(name="embed", param="embed.weight", kind="embedding", shape=(100, 100), depth=0,
                        num_evals=100, alpha=5.0)]
    for i, a in enumerate([2.0, 3.0, 4.0, 6.0]):
        recs.append(LayerResult(name=f"h.{i}.fc", param=f"h.{i}.fc.weight", kind="linear", shape=(100, 100),
                                depth=i + 1, num_evals=100, alpha=a))
    recs.append(LayerResult(name="lm_head", param="lm_head.weight", kind="linear", shape=(100, 100), depth=5,
                            num_evals=100, alpha=3.0))
    analysis = Analysis(layers=tuple(recs), summary={}, config={}, checkpoint="toy", created="",
                        attached={"h.0.fc.bias": "h.0.fc"})
    path = tmp_path / "analysis.json"
    analysis.to_json(path)
    return path


def test_list_shows_every_rule():
    result = runner.invoke(app, ["prescribe", "--list"])
    assert result.exit_code == 0, result.output
    for name in ("llr", "tempbalance", "tb-sqrt", "tb-log2", "alphadecay", "layer-decay", "ulmfit", "lines",
                 "noise", "update-ratio"):
        assert name in result.stdout
    assert "min_ratio=1" in result.stdout


def test_prescribe_writes_map_and_prints_table_and_depth_view(analysis_json, tmp_path):
    out = tmp_path / "lrmap.json"
    result = runner.invoke(app, ["prescribe", str(analysis_json), "--method", "llr", "-o", str(out)])
    assert result.exit_code == 0, result.output
    lrmap = LRMap.from_json(out)
    # body alphas 2, 3, 4, 6 -> 1 + 4 * (a - 2) / 4 = a - 1
    assert [lrmap.multiplier(f"h.{i}.fc.weight") for i in range(4)] == pytest.approx([1.0, 2.0, 3.0, 5.0])
    assert lrmap.multiplier("embed.weight") == 5.0
    assert "h.3.fc" in result.stdout and "5.000" in result.stdout
    assert "by depth" in result.stdout and "█" in result.stdout
    assert f"wrote {out}" in result.stderr


def test_options_reach_the_rule(analysis_json):
    result = runner.invoke(app, ["prescribe", str(analysis_json), "-m", "tempbalance", "--min-ratio", "0.8",
                                 "--max-ratio", "1.2", "--set", "exclude_first=false", "--set", "exclude_last=false",
                                 "--clip", "0.9,1.1", "--normalize", "mean", "--norms", "base", "-o", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["options"]["min_ratio"] == 0.8 and data["options"]["exclude_first"] is False
    assert data["options"]["clip"] == [0.9, 1.1] and data["options"]["norms"] == "base"
    assert all(0.9 <= e["multiplier"] <= 1.1 for e in data["layers"])
    assert data["params"]["h.0.fc.bias"] == data["params"]["h.0.fc.weight"]  # its own bias follows under any --norms


def test_layer_decay_with_set_decay(analysis_json):
    result = runner.invoke(app, ["prescribe", str(analysis_json), "-m", "layer-decay", "-s", "decay=0.5", "-o", "-"])
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    assert params["embed.weight"] == pytest.approx(0.5 ** 5) and params["h.3.fc.weight"] == pytest.approx(0.5)


def test_prescribe_from_checkpoint(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = {f"layers.{i}.fc.weight": torch.randn(64, 32) for i in range(3)}
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    result = runner.invoke(app, ["prescribe", str(path), "-m", "ulmfit", "-q", "-o", str(tmp_path / "u.json")])
    assert result.exit_code == 0, result.output
    lrmap = LRMap.from_json(tmp_path / "u.json")
    assert lrmap.multiplier("layers.2.fc.weight") == 1.0
    assert lrmap.multiplier("layers.0.fc.weight") == pytest.approx(1 / 2.6 ** 2)
    assert result.stdout == ""  # --quiet


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "nope"], "unknown prescription method 'nope'"),
        ([], "--method"),
        (["-m", "noise"], "spectra noise"),
        (["-m", "update-ratio"], "spectra diff"),
        (["-m", "tempbalance", "--clip", "2"], "--clip"),
        (["-m", "tempbalance", "--set", "decay"], "KEY=VALUE"),
        (["-m", "tempbalance", "--set", "decay=0.5"], "does not apply"),
        (["-m", "tempbalance", "--normalize", "max"], "--normalize"),
        (["-m", "tempbalance", "--metric", "colour"], "unknown analysis metric"),
    ],
)
def test_bad_input_is_one_line_error_exit_2(analysis_json, args, message):
    result = runner.invoke(app, ["prescribe", str(analysis_json), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ")


def test_missing_and_wrong_files(tmp_path):
    result = runner.invoke(app, ["prescribe", str(tmp_path / "none.json"), "-m", "llr"])
    assert result.exit_code == 2 and "no such file" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "spectra.lrmap/1", "params": {}}))
    result = runner.invoke(app, ["prescribe", str(bad), "-m", "llr"])
    assert result.exit_code == 2 and "expected spectra.analysis/1" in result.stderr
    result = runner.invoke(app, ["prescribe", str(tmp_path / "none.safetensors"), "-m", "llr"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_noise_rule_via_option(tmp_path):
    noise = {"schema": "spectra.noise/1", "source": "gradients", "summary": {},
             "layers": [{"name": "a", "params": ["a.weight"], "depth": 1, "b_simple": 1.0, "status": "success",
                         "reliable": True},
                        {"name": "b", "params": ["b.weight", "b.bias"], "depth": 2, "b_simple": 4.0, "status": "success",
                         "reliable": True}]}
    path = tmp_path / "noise.json"
    path.write_text(json.dumps(noise))
    result = runner.invoke(app, ["prescribe", "-m", "noise", "--noise", str(path), "-o", "-"])
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    # geomean 2: (2 / 1) ** 0.5 and (2 / 4) ** 0.5
    assert params["a.weight"] == pytest.approx(2 ** 0.5) and params["b.bias"] == pytest.approx(0.5 ** 0.5)
