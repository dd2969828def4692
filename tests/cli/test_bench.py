"""``spectra bench strategies`` through CliRunner on a tiny grid."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from spectra.cli import app

runner = CliRunner()
TINY = ["--task-arg", "synthetic:n_train=128", "--task-arg", "synthetic:n_eval=128", "--task-arg", "synthetic:width=16",
        "--task-arg", "synthetic:depth=1", "--device", "cpu"]


def test_tiny_grid_writes_markdown_plot_and_json(tmp_path):
    out = tmp_path / "bench" / "strategies.md"
    res = runner.invoke(app, ["bench", "strategies", "--tasks", "synthetic", "--strategies", "sgd,adam", "--seeds", "2",
                              "--epochs", "2", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "| G1 fixed | sgd | 0.05 |" in text and "| G3 adaptive | adam | 0.001 |" in text
    assert "--task-arg synthetic:n_train=128" in text and "strategies.png" in text
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["schema"] == "spectra.bench-strategies/1"
    assert sorted((r["strategy"], r["seed"]) for r in data["runs"]) == [("adam", 0), ("adam", 1), ("sgd", 0), ("sgd", 1)]
    assert all(len(r["curve"]) == 3 for r in data["runs"])
    assert "synthetic: final eval metric over 2 seed(s)" in res.stdout


def test_unknown_strategy_and_bad_task_arg(tmp_path):
    res = runner.invoke(app, ["bench", "strategies", "--strategies", "sgd,warp-drive", "--out", str(tmp_path / "a.md")])
    assert res.exit_code == 2 and "unknown strategy warp-drive" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["bench", "strategies", "--task-arg", "n_train=5", "--out", str(tmp_path / "a.md")])
    assert res.exit_code == 2 and "TASK:KEY=VALUE" in res.stderr


def test_list_strategies_covers_five_generations():
    res = runner.invoke(app, ["bench", "strategies", "--list"])
    assert res.exit_code == 0
    for word in ("G1 fixed", "G2 schedule", "G3 adaptive", "G4 layer", "G5 layer-time", "dals+llr", "stlr", "lookahead"):
        assert word in res.stdout
