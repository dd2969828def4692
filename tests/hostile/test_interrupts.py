"""Interrupted work keeps what was done: Ctrl-C in analyze, and a retrain killed at any point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spectra.errors import CheckpointError, ConfigError, FormatError, Interrupted
from spectra.train import runfiles as rf
from spectra.train.loop import read_metrics, retrain

from .conftest import assert_one_error, invoke

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- analyze


def _interrupt_after(monkeypatch, calls: int):
    import spectra.analysis as analysis

    real, seen = analysis.analyze_matrix, {"n": 0}

    def counting(*a, **kw):
        seen["n"] += 1
        if seen["n"] > calls:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(analysis, "analyze_matrix", counting)


def test_ctrl_c_in_analyze_writes_the_finished_layers(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    save_file({f"h.{i}.fc.weight": torch.randn(48, 32, generator=g) for i in range(5)}, str(ckpt))
    _interrupt_after(monkeypatch, 2)
    out, esd = tmp_path / "a.json", tmp_path / "a.esd.npz"
    res = invoke("analyze", ckpt, "-o", out, "--save-esd", esd)
    assert res.exit_code == 130, res.output
    assert res.stderr.strip().splitlines() == [f"interrupted: wrote the 2 finished layers to {out} (summary.partial = true)"]
    data = json.loads(out.read_text())
    assert data["summary"]["partial"] is True and data["summary"]["num_success"] == 2
    layers = {r["name"]: r for r in data["layers"]}
    assert set(layers) == {f"h.{i}.fc" for i in range(5)}  # nothing dropped silently
    assert [layers[f"h.{i}.fc"]["status"] for i in range(5)] == ["success"] * 2 + ["skipped"] * 3
    assert layers["h.4.fc"]["reason"] == "not analysed: the run was interrupted"
    from spectra.results import Analysis

    partial = Analysis.from_json(out)
    assert partial.partial and sorted(partial.evals) == ["h.0.fc", "h.1.fc"]


def test_ctrl_c_without_output_exits_130(tmp_path, monkeypatch, small_ckpt):
    _interrupt_after(monkeypatch, 0)
    res = invoke("analyze", small_ckpt)
    assert res.exit_code == 130 and res.stderr.strip() == "interrupted"


def test_library_interrupt_carries_the_partial_result(monkeypatch):
    from spectra import analyze

    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt) as info:
        analyze({"a.weight": torch.randn(32, 16), "b.weight": torch.randn(32, 16)})
    assert isinstance(info.value, Interrupted) and info.value.partial.partial
    assert [r.status for r in info.value.partial.layers] == ["success", "skipped"]


# --------------------------------------------------------------------------- retrain killed between writes

SMALL = {"n_train": 64, "n_eval": 64, "width": 8, "depth": 1}


def _run(out, **kw):
    return retrain("synthetic", "sgd", epochs=3, lr=0.05, task_args=SMALL, device="cpu", out=out, **kw)


def _strip(history):
    return [{k: v for k, v in h.items() if k != "time"} for h in history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    _run(out, keep_checkpoints=1)
    return _strip(read_metrics(out)), _weights(out)


def _weights(out):
    from safetensors.torch import load_file

    return {k: v.tolist() for k, v in load_file(str(out / "checkpoints" / "epoch-0003.safetensors")).items()}


# every write of a run, and whether the kill comes just before or just after it
WRITES = ["start_run", "write_metrics", "save_checkpoint", "save_state", "prune_checkpoints"]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("nth", [1, 3])
def test_kill_at_any_write_then_resume(tmp_path, monkeypatch, uninterrupted, write, when, nth):
    """The run is killed before/after the nth call of one write; --resume ends with every epoch's
    metrics present exactly once and the same weights as the uninterrupted run."""
    real, calls = getattr(rf, write), {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == nth and when == "before":
            raise KeyboardInterrupt
        result = real(*a, **kw)
        if calls["n"] == nth and when == "after":
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(rf, write, dying)
    out = tmp_path / "run"
    try:
        _run(out, keep_checkpoints=1)
        killed = False
    except KeyboardInterrupt:
        killed = True
    monkeypatch.undo()
    if calls["n"] < nth:
        assert not killed
        return
    assert killed
    if (out / "run.json").exists():
        _run(out, keep_checkpoints=1, resume=True)
    else:  # killed before anything was written: a new run
        _run(out, keep_checkpoints=1)
    history, weights = uninterrupted
    assert _strip(read_metrics(out)) == history
    assert _weights(out) == weights
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path, uninterrupted):
    """A real SIGKILL (no cleanup runs) at two moments of a run in a child process."""
    code = ("import sys; from spectra.train.loop import retrain; "
            f"retrain('synthetic', 'sgd', epochs=3, lr=0.05, task_args={SMALL!r}, device='cpu', out=sys.argv[1], "
            "keep_checkpoints=1, resume=len(sys.argv) > 2)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "run"
    for delay in (2.2, 3.0):
        proc = subprocess.Popen([sys.executable, "-c", code, str(out)] + (["resume"] if (out / "run.json").exists() else []),
                                env=env, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    args = [str(out)] + (["resume"] if (out / "run.json").exists() else [])
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, capture_output=True)
    history, weights = uninterrupted
    assert _strip(read_metrics(out)) == history
    assert _weights(out) == weights


# --------------------------------------------------------------------------- corrupt run directories


def _finished(tmp_path):
    out = tmp_path / "run"
    _run(out)
    return out


def _damage_state(out, **changes):
    state = torch.load(out / "state.pt", weights_only=True)
    state.update(changes)
    for key in [k for k, v in changes.items() if v is ...]:
        del state[key]
    torch.save(state, out / "state.pt")


CORRUPT = {
    "run.json missing": (lambda o: (o / "run.json").unlink(), "holds no run"),
    "run.json garbage": (lambda o: (o / "run.json").write_text("{oops"), "invalid JSON"),
    "run.json a list": (lambda o: (o / "run.json").write_text("[]"), "expected a JSON object"),
    "run.json other schema": (lambda o: (o / "run.json").write_text('{"schema": "spectra.lrmap/1"}'), "expected spectra.run/1"),
    "run.json without config": (lambda o: (o / "run.json").write_text('{"schema": "spectra.run/1"}'), "config is missing"),
    "run.json bad status": (lambda o: (o / "run.json").write_text(
        json.dumps(dict(json.loads((o / "run.json").read_text()), status="paused"))), "status must be one of"),
    "state.pt garbage": (lambda o: (o / "state.pt").write_bytes(b"not a torch file"), "state.pt: unreadable"),
    "state.pt empty": (lambda o: (o / "state.pt").write_bytes(b""), "state.pt: unreadable"),
    "state.pt a tensor": (lambda o: torch.save(torch.zeros(3), o / "state.pt"), "not a spectra run state"),
    "state.pt without optimizer": (lambda o: _damage_state(o, optimizer=...), "has no 'optimizer'"),
    "state.pt string epoch": (lambda o: _damage_state(o, epoch="3"), "'epoch' holds a str"),
    "state.pt epoch too far": (lambda o: _damage_state(o, epoch=99), "do not fit a run of 3 epochs"),
    "state.pt bad rng": (lambda o: _damage_state(o, rng=torch.zeros(3)), "'rng' is not a torch RNG state"),
    "state.pt other optimizer": (lambda o: _damage_state(o, optimizer={"state": {}, "param_groups": []}),
                                 "does not fit this run's optimizer"),
    "state.pt short history": (lambda o: _damage_state(o, history=[]), "metrics records for epoch 3"),
    "state.pt bad history": (lambda o: _damage_state(o, history=[{"epoch": "0"}] * 4), "metrics record 0"),
    "checkpoint missing": (lambda o: (o / "checkpoints" / "epoch-0003.safetensors").unlink(), "is missing"),
    "checkpoint garbage": (lambda o: (o / "checkpoints" / "epoch-0003.safetensors").write_bytes(b"\0" * 64),
                           "epoch-0003.safetensors"),
    "checkpoint of another model": (lambda o: __import__("safetensors.torch").torch.save_file(
        {"x": torch.zeros(2)}, str(o / "checkpoints" / "epoch-0003.safetensors")), "does not fit this task's model"),
    "legacy state, corrupt metrics": (lambda o: (_damage_state(o, history=...),
                                                 (o / "metrics.jsonl").write_text('{"epoch": 0\n{"epoch": 1}\n')),
                                      "metrics.jsonl: line 1"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_run_directory_is_one_line_error(tmp_path, case):
    out = _finished(tmp_path)
    damage, needle = CORRUPT[case]
    damage(out)
    res = invoke("retrain", "--task", "synthetic", "--optimizer", "sgd", "--epochs", "3", "--lr", "0.05", "--device",
                 "cpu", "--out", out, "--resume", *sum((["--task-arg", f"{k}={v}"] for k, v in SMALL.items()), []))
    assert_one_error(res, needle)


def test_resume_of_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; drop --resume"):
        _run(tmp_path / "nope", resume=True)
    assert not (tmp_path / "nope").exists()


def test_corrupt_first_metrics_line_does_not_empty_the_file(tmp_path):
    out = _finished(tmp_path)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("garbage\n" + "\n".join(lines[1:]) + "\n")
    _run(out, resume=True)  # the state carries the metrics: the file is rebuilt from it
    assert [r["epoch"] for r in read_metrics(out)] == [0, 1, 2, 3]


def test_stray_temporary_files_are_ignored(tmp_path, uninterrupted):
    out = tmp_path / "run"
    _run(out, keep_checkpoints=1)
    (out / ".state.pt.abc.partial.pt").write_bytes(b"half")
    (out / "checkpoints" / ".epoch-0004.safetensors.x.partial.safetensors").write_bytes(b"half")
    _run(out, keep_checkpoints=1, resume=True)
    assert _strip(read_metrics(out)) == uninterrupted[0]


def test_read_state_errors_are_spectra_errors(tmp_path):
    out = _finished(tmp_path)
    (out / "state.pt").write_bytes(b"\x80\x02}q\x00.")  # a bare pickle, not a torch zip
    with pytest.raises((CheckpointError, FormatError)):
        rf.read_state(out, 3)
