"""``spectra diff`` through Typer's CliRunner."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from spectra.cli import app
from tests.test_diff import make_toy_task

runner = CliRunner()


def _files(tmp_path):
    gen = torch.Generator().manual_seed(0)
    a = {"layers.0.fc.weight": torch.randn(12, 8, generator=gen), "layers.0.fc.bias": torch.randn(12, generator=gen),
         "head.weight": torch.randn(3, 12, generator=gen), "old.weight": torch.randn(2, 2, generator=gen)}
    b = {k: v.clone() for k, v in a.items() if k != "old.weight"}
    b["layers.0.fc.weight"] += torch.outer(torch.ones(12), torch.ones(8))
    b["head.weight"] *= 1.5
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def test_diff_writes_json_and_prints_table(tmp_path):
    a, b = _files(tmp_path)
    out = tmp_path / "diff.json"
    res = runner.invoke(app, ["diff", str(a), str(b), "--topk", "2", "--no-alpha", "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["schema"] == "spectra.diff/1"
    rec = {r["name"]: r for r in data["layers"]}
    assert abs(rec["layers.0.fc"]["dw_stable_rank"] - 1.0) < 1e-5
    assert abs(rec["head"]["rel_update"] - 0.5) < 1e-6 and abs(rec["head"]["sv_growth"] - 0.5) < 1e-6
    assert rec["head"]["alpha_a"] is None
    assert data["mismatched"] == [{"param": "old.weight", "reason": "only in A"}]
    assert {row["depth"] for row in data["by_depth"]} == {1, 2}
    assert "layers.0.fc" in res.stdout and "mismatched old.weight" in res.stdout


def test_diff_with_activations(tmp_path):
    task = make_toy_task()
    sd = {k: v.clone().contiguous() for k, v in task.model.state_dict().items()}
    save_file(sd, tmp_path / "a.safetensors")
    save_file({k: v * 1.05 for k, v in sd.items()}, tmp_path / "b.safetensors")
    res = runner.invoke(app, ["diff", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                              "--no-alpha", "--activations", "--task", "tests.test_diff:make_toy_task",
                              "--device", "cpu", "-o", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    rows = data["activations"]["layers"]
    assert [r["name"] for r in rows] == ["layers.0", "layers.1"]
    assert rows[0]["alignment_a"] > 0.99 and rows[1]["residual_energy_b"] > 0.5


def test_errors_are_one_line_exit_2(tmp_path):
    a, b = _files(tmp_path)
    cases = [
        ["diff", str(a), str(tmp_path / "missing.safetensors")],
        ["diff", str(a), str(b), "--activations"],
        ["diff", str(a), str(b), "--topk", "0"],
        ["diff", str(a), str(b), "--activations", "--task", "tests.test_diff:make_toy_task", "--tokenwise", "knn"],
    ]
    for args in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.startswith("error: ") and "Traceback" not in res.output, (args, res.stderr)


def test_help_documents_flags():
    res = runner.invoke(app, ["diff", "--help"])
    assert res.exit_code == 0
    for flag in ("--topk", "--no-alpha", "--activations", "--task", "--max-tokens"):
        assert flag in res.stdout


def test_steps_are_recorded_for_the_report(tmp_path):
    a, b = _files(tmp_path)
    out = tmp_path / "d.json"
    res = runner.invoke(app, ["diff", str(a), str(b), "--no-alpha", "--steps", "250", "-q", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["config"]["steps"] == 250
    res = runner.invoke(app, ["diff", str(a), str(b), "--steps", "0"])
    assert res.exit_code == 2 and "--steps" in res.stderr
