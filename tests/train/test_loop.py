"""The retrain loop with a local SGD factory: training works, files, exact resume, refit ramps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from spectra.errors import ConfigError
from spectra.train import Task
from spectra.train.loop import default_lr, read_metrics, resolve_device, retrain
from spectra.train.tasks import TensorLoader

SMALL = {"n_train": 256, "n_eval": 256, "width": 32, "depth": 2}


def sgd_factory(model, *, lr, weight_decay, lrmap, total_steps, steps_per_epoch, **kw):
    """One group per parameter (named), SGD-momentum, linear decay to 0: the shape of create_optimizer."""
    groups = [{"params": [p], "param_names": [n], "lr": lr, "lr_multiplier": 1.0} for n, p in model.named_parameters()]
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / total_steps)


def run(tmp_path=None, name="run", **kw):
    options = dict(epochs=3, lr=0.2, device="cpu", task_args=SMALL)
    options.update(kw)
    return retrain("synthetic", sgd_factory, out=(tmp_path / name) if tmp_path else None, **options)


def test_training_improves_and_history_shape():
    result = run()
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert result.history[0]["train_loss"] is None
    assert result.final_metric > result.history[0]["eval_metric"] + 0.25
    assert result.status == "complete" and result.optimizer == "sgd_factory"
    assert result.epochs_to(0.0) == 0 and result.epochs_to(1.01) is None
    # the linear scheduler: lr after epoch e of 3 equals 0.05 * (1 - e/3)
    assert result.history[1]["lr_max"] == pytest.approx(0.2 * 2 / 3)


def test_same_seed_same_run_other_seed_differs():
    a, b, c = run(seed=1), run(seed=1), run(seed=2)
    assert [h["eval_metric"] for h in a.history] == [h["eval_metric"] for h in b.history]
    assert [h["eval_metric"] for h in a.history] != [h["eval_metric"] for h in c.history]


def test_run_directory_files(tmp_path):
    from safetensors.torch import load_file

    from spectra.train.loop import evaluate
    from spectra.train import load_task

    result = run(tmp_path)
    run_dir = tmp_path / "run"
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["schema"] == "spectra.run/1" and meta["status"] == "complete"
    assert meta["config"]["lr"] == 0.2 and meta["final_metric"] == pytest.approx(result.final_metric)
    assert meta["last_checkpoint"] == "checkpoints/epoch-0003.safetensors"
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0, 1, 2, 3]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"epoch-000{i}.safetensors" for i in (1, 2, 3)]
    # oracle: the last checkpoint, loaded into a fresh model, reproduces the final eval metric
    task = load_task("synthetic", **SMALL)
    task.model.load_state_dict(load_file(str(run_dir / meta["last_checkpoint"])))
    assert evaluate(task, task.model, torch.device("cpu"))[1] == pytest.approx(result.final_metric)


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    run(tmp_path, keep_checkpoints=1)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["epoch-0003.safetensors"]


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path):
    full = run(tmp_path, name="full", epochs=4)
    steps = {"n": 0}

    def interrupt(done, total, label=""):
        steps["n"] = done
        assert total == 16
        if done == 2 * 4 + 3:  # 4 steps per epoch: die inside epoch 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, name="cut", epochs=4, progress=interrupt)
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut")] == [0, 1, 2]
    resumed = run(tmp_path, name="cut", epochs=4, resume=True)
    assert [h["eval_metric"] for h in resumed.history] == [h["eval_metric"] for h in full.history]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full/checkpoints/epoch-0004.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/epoch-0004.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run changes nothing
    again = run(tmp_path, name="cut", epochs=4, resume=True)
    assert again.history == resumed.history


def test_existing_run_needs_resume_and_same_settings(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(ConfigError, match="--resume"):
        run(tmp_path, epochs=1)
    with pytest.raises(ConfigError, match="lr: run has 0.2, now 0.1"):
        run(tmp_path, epochs=1, lr=0.1, resume=True)


def test_divergence_stops_the_run():
    class NanLoss:
        calls = 0

        def __call__(self, outputs, targets):
            NanLoss.calls += 1
            loss = nn.functional.cross_entropy(outputs, targets)
            return loss * math.nan if NanLoss.calls > 3 else loss

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    task = Task("toy", nn.Linear(4, 2), TensorLoader((x, y), 8), TensorLoader((x, y), 64), loss_fn=NanLoss())
    result = retrain(task, sgd_factory, epochs=5, lr=0.1, device="cpu")
    assert result.status == "diverged" and len(result.history) == 2
    assert result.history[-1]["train_loss"] is None


def test_device_and_lr_defaults():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
    assert default_lr("adamw") < 0.01 < default_lr("sgd")


def test_bad_epochs():
    with pytest.raises(ConfigError, match="epochs"):
        run(epochs=0)


def test_refit_every_prescribes_from_the_live_model(tmp_path):
    result = run(tmp_path, epochs=2, refit_every=2, refit_until=0.5, ramp_steps=1, task_args={**SMALL, "width": 64})
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["refit"]["every"] == 2 and meta["config"]["refit"]["method"] == "llr"
    # 8 steps in all, refits at steps 0, 2 and 4 (<= 0.5 * 8)
    assert result.history[-1]["refits"] == 3
    # with the registry's per-layer groups, two prescribed 64x64 layers get different (LLR, mean-1) multipliers
    torch.manual_seed(0)
    res = retrain("synthetic", "sgd", epochs=1, lr=0.05, device="cpu", refit_every=1, refit_until=0.0,
                  ramp_steps=1, task_args={**SMALL, "width": 64, "depth": 3})
    assert res.history[-1]["lr_max"] > 0.05 >= res.history[-1]["lr_min"]


@pytest.mark.gpu
def test_retrain_on_cuda_writes_cpu_checkpoints(tmp_path):
    from safetensors.torch import load_file

    result = run(tmp_path, epochs=1, device="cuda")
    assert result.final_metric > 0.3
    state = load_file(str(tmp_path / "run" / "checkpoints" / "epoch-0001.safetensors"))
    assert all(t.device.type == "cpu" for t in state.values())


def _toy_task():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 6, generator=gen), torch.randint(0, 3, (48,), generator=gen)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return Task("toy", model, TensorLoader((x, y), 16, shuffle=True, seed=1), TensorLoader((x, y), 48))


def _optimizer_names():
    from spectra.optim import list_optimizers

    return list_optimizers()


@pytest.mark.parametrize("name", _optimizer_names())
def test_every_registry_optimizer_resumes_exactly(tmp_path, name):
    """Optimizer, scheduler and wrapper state (Lookahead, Grokfast, DALS) survive weights_only reloads."""
    from safetensors.torch import load_file

    def go(out, **kw):
        torch.manual_seed(0)
        return retrain(_toy_task(), name, epochs=2, device="cpu", out=tmp_path / out, **kw)

    go("full")

    def die(done, total, label=""):
        if done == 4:  # 3 steps per epoch: inside epoch 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        go("cut", progress=die)
    go("cut", resume=True)
    a = load_file(str(tmp_path / "full/checkpoints/epoch-0002.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/epoch-0002.safetensors"))
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-7) for k in a), name
