import json

import pytest
from typer.testing import CliRunner

from spectra.cli import app

runner = CliRunner()


def test_table_and_json(tiny_safetensors, tmp_path):
    out = tmp_path / "a.json"
    res = runner.invoke(app, ["analyze", str(tiny_safetensors), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "encoder.layers.1.mlp.fc2" in res.stdout
    assert "alpha mean" in res.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "spectra.analysis/1"
    assert data["config"]["min_evals"] == 8


def test_json_to_stdout_is_pure_json(tiny_safetensors):
    res = runner.invoke(app, ["analyze", str(tiny_safetensors), "-o", "-"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["layers"]


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_table_formats(tiny_safetensors, tmp_path, ext):
    pytest.importorskip("pandas")
    if ext == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"a.{ext}"
    res = runner.invoke(app, ["analyze", str(tiny_safetensors), "-q", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 0


def test_options_reach_the_analysis(tiny_safetensors, tmp_path):
    out, esd = tmp_path / "a.json", tmp_path / "e.npz"
    res = runner.invoke(app, ["analyze", str(tiny_safetensors), "-q", "-o", str(out), "--save-esd", str(esd),
                              "--fit", "median", "--bootstrap", "5", "--mp-fit", "--min-evals", "16",
                              "--exclude", "attention", "--seed", "3"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["config"]["fit"] == "median" and data["config"]["bootstrap"] == 5
    recs = {r["name"]: r for r in data["layers"]}
    assert recs["encoder.layers.0.attention.q"]["status"] == "skipped"
    assert recs["encoder.layers.0.mlp.fc1"]["sigma_mp"] is not None
    assert recs["encoder.layers.0.mlp.fc1"]["fit"] == "median"
    assert esd.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["analyze", "/no/such/model.safetensors"], "no such file"),
        (["analyze", "{ckpt}", "--fit", "bogus"], "unknown fit"),
        (["analyze", "{ckpt}", "-o", "{ckpt}/sub/a.json"], "is not a directory"),
        (["analyze", "{ckpt}", "-o", "{tmp}/a.txt"], "writes .json or .csv or .parquet here, not .txt"),
        (["analyze", "{ckpt}", "--include", "("], "invalid --include"),
        (["analyze", "{garbage}"], "garbage"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tiny_safetensors, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all")
    args = [a.format(ckpt=tiny_safetensors, tmp=tmp_path, garbage=garbage) for a in args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in res.output


def test_help_lists_options():
    res = runner.invoke(app, ["analyze", "--help"])
    assert res.exit_code == 0
    for opt in ("--bootstrap", "--mp-fit", "--randomize", "--save-esd", "--trust-pickle", "--device"):
        assert opt in res.stdout
