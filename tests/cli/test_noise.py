"""``spectra noise`` through Typer's CliRunner, on a tiny task defined here (module:function spec)."""

from __future__ import annotations

import json
import re

import torch
from torch import nn
from typer.testing import CliRunner

from spectra.cli import app
from spectra.train.task import Task

runner = CliRunner()
TASK = "tests.cli.test_noise:make_task"


def make_task(batch_size: int = 16) -> Task:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=gen)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, 64, batch_size)]
    return Task(name="cli-tiny", model=model, train_loader=batches, eval_loader=batches)


def test_noise_writes_json_and_prints_table(tmp_path):
    out = tmp_path / "noise.json"
    res = runner.invoke(app, ["noise", "--task", TASK, "--batches", "2", "--micro-batch", "4", "--device", "cpu",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["schema"] == "spectra.noise/1" and data["source"] == "gradients"
    assert [r["name"] for r in data["layers"]] == ["0", "2"]
    assert data["config"]["b_small"] == 4 and data["config"]["b_big"] == 16
    total = sum(r["grad_sq"] for r in data["layers"])
    assert abs(data["summary"]["grad_sq"] - total) < 1e-9 * max(1.0, abs(total))
    assert "global B_simple" in res.stdout and "|G|^2" in res.stdout


def test_per_example_and_task_args_and_stdout_json():
    res = runner.invoke(app, ["noise", "--task", TASK, "--task-arg", "batch_size=8", "--batches", "3",
                              "--per-example", "--device", "cpu", "-o", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["config"]["b_small"] == 1 and data["config"]["b_big"] == 8
    assert data["summary"]["rounds"] == 3


def test_optimizer_proxy(tmp_path):
    task = make_task()
    opt = torch.optim.Adam(task.model.parameters())
    for x, y in task.train_loader:
        opt.zero_grad()
        nn.functional.cross_entropy(task.model(x), y).backward()
        opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": task.model.state_dict(), "optimizer": opt.state_dict()}, path)
    res = runner.invoke(app, ["noise", "--from-optimizer", "--checkpoint", str(path), "--batch-size", "16",
                              "-o", str(tmp_path / "n.json")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "n.json").read_text())
    assert data["source"] == "optimizer-proxy" and data["config"]["batch_size"] == 16
    assert "proxy" in res.stdout


def shuffled_task(batch_size: int = 16) -> Task:
    """Model init and data order drawn from the global RNG, as the built-in tasks do."""
    from spectra.train.tasks import TensorLoader

    x = torch.randn(96, 5)
    loader = TensorLoader((x, (x[:, 0] > 0).long()), batch_size, shuffle=True)
    return Task(name="cli-shuffled", model=nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)),
                train_loader=loader, eval_loader=loader)


def test_same_seed_gives_identical_output_other_seed_differs():
    args = ["noise", "--task", "tests.cli.test_noise:shuffled_task", "--batches", "3", "--device", "cpu"]
    runs = [runner.invoke(app, args + ["--seed", seed]) for seed in ("0", "0", "1")]
    assert all(r.exit_code == 0 for r in runs), runs[0].output
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout != runs[2].stdout
    assert re.search(r"\|G\|\^2 \S+ \[\S+, \S+\]", runs[0].stdout)  # the global |G|^2 with its interval


def test_optimizer_proxy_at_step_one_explains_instead_of_crashing(tmp_path):
    task = make_task()
    opt = torch.optim.Adam(task.model.parameters())
    x, y = task.train_loader[0]
    nn.functional.cross_entropy(task.model(x), y).backward()
    opt.step()
    path = tmp_path / "step1.pt"
    torch.save({"model": task.model.state_dict(), "optimizer": opt.state_dict()}, path)
    res = runner.invoke(app, ["noise", "--from-optimizer", "--checkpoint", str(path), "-o", str(tmp_path / "n.json")])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert "step 1" in res.stdout and "--task" in res.stdout
    data = json.loads((tmp_path / "n.json").read_text())
    assert all(r["status"] == "failed" for r in data["layers"]) and data["summary"]["reliable"] is False


def test_errors_are_one_line_exit_2(tmp_path):
    cases = [
        ["noise"],
        ["noise", "--task", "no-such-task"],
        ["noise", "--task", TASK, "--task-arg", "oops"],
        ["noise", "--task", TASK, "--batches", "0"],
        ["noise", "--from-optimizer"],
        ["noise", "--from-optimizer", "--checkpoint", str(tmp_path / "missing.pt")],
        ["noise", "--task", TASK, "-o", str(tmp_path / "noise.txt")],
        ["noise", "--task", TASK, "--checkpoint", str(tmp_path / "c.pt"), "-o", str(tmp_path / "c.pt")],
    ]
    for args in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.startswith("error: ") and "Traceback" not in res.output, (args, res.stderr)


def test_help_documents_flags():
    res = runner.invoke(app, ["noise", "--help"])
    assert res.exit_code == 0
    for flag in ("--task", "--checkpoint", "--batches", "--micro-batch", "--per-example", "--from-optimizer"):
        assert flag in res.stdout
