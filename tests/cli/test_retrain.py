"""``spectra retrain`` through CliRunner: a tiny run, its files, resume after an interrupt, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spectra.cli import app

runner = CliRunner()
TINY = ["--task", "synthetic", "--task-arg", "n_train=128", "--task-arg", "n_eval=128", "--task-arg", "width=16",
        "--task-arg", "depth=1", "--optimizer", "sgd", "--lr", "0.1", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [*args])


def test_tiny_run_writes_checkpoints_and_metrics(tmp_path):
    res = invoke("retrain", *TINY, "--epochs", "2", "--out", str(tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert "eval accuracy" in res.stdout and "synthetic / sgd" in res.stdout
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1, 2]
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["task_args"] == {"n_train": 128, "n_eval": 128, "width": 16, "depth": 1}
    assert meta["config"]["optimizer"] == "sgd" and meta["status"] == "complete"
    assert (run / "checkpoints" / "epoch-0002.safetensors").is_file() and (run / "state.pt").is_file()


def test_resume_after_interrupt_matches_uninterrupted(tmp_path, monkeypatch):
    assert invoke("retrain", *TINY, "--epochs", "3", "--out", str(tmp_path / "full"), "-q").exit_code == 0
    import spectra.train.loop as loop

    real, calls = loop.evaluate, {"n": 0}

    def dying(*a, **kw):  # epoch 0 and 1 evaluate, then the run is killed during epoch 2
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(loop, "evaluate", dying)
    cut = invoke("retrain", *TINY, "--epochs", "3", "--out", str(tmp_path / "cut"), "-q")
    assert cut.exit_code == 130 and "interrupted" in cut.stderr
    monkeypatch.setattr(loop, "evaluate", real)
    res = invoke("retrain", *TINY, "--epochs", "3", "--out", str(tmp_path / "cut"), "--resume", "-q")
    assert res.exit_code == 0, res.output
    full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    resumed = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(full)


def test_existing_run_without_resume_is_an_error(tmp_path):
    out = str(tmp_path / "run")
    assert invoke("retrain", *TINY, "--epochs", "1", "--out", out, "-q").exit_code == 0
    res = invoke("retrain", *TINY, "--epochs", "1", "--out", out, "-q")
    assert res.exit_code == 2 and "--resume" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "nope", "--out", "X"], "unknown task"),
        (["--task", "synthetic", "--optimizer", "nope", "--out", "X"], "unknown optimizer"),
        (["--task", "synthetic", "--task-arg", "novalue", "--out", "X"], "KEY=VALUE"),
        (["--task", "synthetic", "--task-arg", "bogus=1", "--out", "X"], "rejected its arguments"),
        (["--optimizer", "sgd"], "--task"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    args = [a.replace("X", str(tmp_path / "r")) for a in args]
    res = invoke("retrain", *args, "--epochs", "1", "--device", "cpu", "-q")
    assert res.exit_code == 2, res.output
    assert message in res.stderr and res.stderr.startswith("error: ") and "Traceback" not in res.output


def test_list_shows_tasks_and_optimizers():
    res = invoke("retrain", "--list")
    assert res.exit_code == 0
    for name in ("synthetic", "digits-transfer", "minilm-text", "dals-fast", "radam"):
        assert name in res.stdout
