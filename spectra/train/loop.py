"""``spectra retrain``: train a task with a named optimizer, optionally under a (re-fitted) LR map.

A run directory holds ``run.json``, ``metrics.jsonl``, ``checkpoints/epoch-NNNN.safetensors`` and
``state.pt``; :mod:`spectra.train.runfiles` writes them so that a kill at any point leaves them
consistent (``state.pt`` is the one commit point and carries every epoch's metrics).

``resume=True`` reloads the last committed checkpoint and ``state.pt`` (``torch.load(weights_only=True)``)
and continues; batch order depends only on (seed, epoch) (see :class:`spectra.train.tasks.TensorLoader`)
and the RNG state is restored, so a resumed run repeats the uninterrupted one.

``refit_every`` re-prescribes LR multipliers during training (LLR style): see :mod:`spectra.train.refit`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .._device import resolve_device
from ..errors import CheckpointError, ConfigError
from ..results import jsonable
from . import runfiles as rf
from .refit import Refitter
from .runfiles import RUN_SCHEMA, read_metrics
from .task import Task, load_task

__all__ = ["retrain", "RunResult", "RUN_SCHEMA", "default_lr", "resolve_device", "read_metrics"]

log = logging.getLogger(__name__)

#: Fallback base LRs for factories the optimizer registry does not know (a callable ``optimizer``):
#: SGD-like rules take ~0.05, Adam-like rules ~1e-3 (the usual defaults of each family).
_FALLBACK_LR = {"sgd": 0.05, "adam": 1e-3}
_ADAM_LIKE = ("adam", "radam", "lamb", "nadam", "adamw", "lookahead", "adafactor")

OptimizerFactory = Callable[..., tuple[torch.optim.Optimizer, Any]]


@dataclass(frozen=True)
class RunResult:
    """Outcome of :func:`retrain`: the per-epoch history (epoch 0 is the model before training)."""

    task: str
    optimizer: str
    metric_name: str
    history: tuple[Mapping[str, Any], ...]
    wall_time: float
    status: str  # complete | diverged
    run_dir: Path | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    task_meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def final_metric(self) -> float:
        return float(self.history[-1]["eval_metric"]) if self.history else math.nan

    @property
    def best_metric(self) -> float:
        values = [h["eval_metric"] for h in self.history if h["eval_metric"] is not None]
        return max(values) if values else math.nan

    def epochs_to(self, threshold: float) -> int | None:
        """First epoch (1-based; 0 = before training) whose eval metric reaches ``threshold``."""
        for h in self.history:
            if h["eval_metric"] is not None and h["eval_metric"] >= threshold:
                return int(h["epoch"])
        return None


def default_lr(optimizer: str) -> float:
    """The registry's ``default_lr`` for ``optimizer``; for names it does not know, the family fallback."""
    from ..optim import get_optimizer_info

    try:
        return float(get_optimizer_info(optimizer).default_lr)
    except ConfigError:
        return _FALLBACK_LR["adam" if any(optimizer.startswith(a) for a in _ADAM_LIKE) else "sgd"]


def _optimizer_factory(optimizer: str | OptimizerFactory) -> tuple[str, OptimizerFactory]:
    if callable(optimizer):
        return getattr(optimizer, "__name__", type(optimizer).__name__), optimizer
    from ..optim import create_optimizer

    return str(optimizer), functools.partial(create_optimizer, str(optimizer))


def _load_lrmap(lrmap: Any) -> tuple[Any, str | None]:
    if lrmap is None:
        return None, None
    if isinstance(lrmap, (str, Path)):
        from ..prescribe import LRMap

        return LRMap.from_json(lrmap), str(lrmap)
    return lrmap, "in-memory"


# ---------------------------------------------------------------------------------- evaluation
def evaluate(task: Task, model: nn.Module, device: torch.device) -> tuple[float, float]:
    """Mean loss and metric over ``task.eval_loader``, each batch weighted by its size."""
    model.eval()
    total = loss_sum = metric_sum = 0.0
    with torch.no_grad():
        for batch in task.eval_loader:
            batch = tuple(t.to(device) for t in batch)
            outputs, targets = task.forward(model, batch)
            n = len(targets)
            loss_sum += float(task.loss_fn(outputs, targets)) * n
            metric_sum += float(task.metric_fn(outputs, targets)) * n
            total += n
    model.train()
    if total == 0:
        return math.nan, math.nan
    return loss_sum / total, metric_sum / total


# ----------------------------------------------------------------------------------------- main
def retrain(
    task: str | Task,
    optimizer: str | OptimizerFactory = "dals",
    *,
    epochs: int = 10,
    lr: float | None = None,
    weight_decay: float = 0.0,
    lrmap: Any = None,
    device: str = "auto",
    out: str | Path | None = None,
    resume: bool = False,
    refit_every: int = 0,
    refit_method: str = "llr",
    refit_until: float = 0.2,
    ramp_steps: int | None = None,
    refit_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    task_args: Mapping[str, Any] | None = None,
    optimizer_args: Mapping[str, Any] | None = None,
    keep_checkpoints: int = 0,
    progress: Callable[..., None] | None = None,
) -> RunResult:
    """Train ``task`` for ``epochs`` epochs with ``optimizer`` and return the per-epoch history.

    Args:
        task: a built-in name, ``package.module:function`` or a built :class:`Task` (then ``seed``
            only seeds shuffling and dropout: the model was initialised by the caller).
        optimizer: a name from :func:`spectra.optim.list_optimizers` or a factory with the signature
            of :func:`spectra.optim.create_optimizer` minus the name.
        lr: base LR (default: the optimizer's declared default, see :func:`default_lr`).
        lrmap: an ``LRMap`` or the path of a ``spectra.lrmap/1`` file; each layer's LR becomes
            ``lr * multiplier``.
        out: run directory (None: nothing is written). ``resume`` continues the run found there.
        refit_every: re-analyse and re-prescribe every this many optimizer steps (0: never), while
            ``step <= refit_until * total_steps``, ramping over ``ramp_steps`` (default
            ``min(refit_every, 50)``) steps, with the ``refit_method`` rule.
        keep_checkpoints: keep only the newest N epoch checkpoints (0 keeps all).
        progress: called as ``progress(done_steps, total_steps, label)`` after every optimizer step
            (the library-wide progress callback shape).

    Example:
        >>> result = retrain("synthetic", "sgd", epochs=2, lr=0.05)  # doctest: +SKIP
        >>> result.final_metric > 0.5  # doctest: +SKIP
        True
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 <= refit_until <= 1.0:
        raise ConfigError(f"refit_until must be a fraction of training in [0, 1], got {refit_until}")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be between 0 and 2**63 - 1, got {seed}")
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
    for name, value in (("refit_every", refit_every), ("keep_checkpoints", keep_checkpoints)):
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    dev = resolve_device(device)
    opt_name, factory = _optimizer_factory(optimizer)
    lrmap_obj, lrmap_source = _load_lrmap(lrmap)
    base_lr = float(lr) if lr is not None else default_lr(opt_name)
    task_name = task if isinstance(task, str) else task.name
    config = {
        "task": task_name, "task_args": dict(task_args or {}), "optimizer": opt_name,
        "optimizer_args": dict(optimizer_args or {}), "lr": base_lr, "weight_decay": weight_decay,
        "epochs": epochs, "seed": seed, "lrmap": lrmap_source,
        "refit": {"every": refit_every, "method": refit_method, "until": refit_until,
                  "ramp_steps": ramp_steps, "options": dict(refit_options or {})} if refit_every else None,
    }

    run_dir = Path(out) if out is not None else None
    state = rf.open_run(run_dir, config, resume, epochs) if run_dir is not None else None

    torch.manual_seed(seed)
    if isinstance(task, str):
        task = load_task(task, **(task_args or {}))
    model = task.model.to(dev)
    model.train()
    try:
        steps_per_epoch = len(task.train_loader)
    except TypeError:
        steps_per_epoch = sum(1 for _ in task.train_loader)
    if steps_per_epoch < 1:
        raise ConfigError(f"task {task_name!r} has an empty train loader")
    total_steps = steps_per_epoch * epochs
    opt, scheduler = factory(model, lr=base_lr, weight_decay=weight_decay, lrmap=lrmap_obj, total_steps=total_steps,
                             steps_per_epoch=steps_per_epoch, **(optimizer_args or {}))
    refitter = None
    if refit_every:
        ramp = ramp_steps if ramp_steps is not None else min(refit_every, 50)
        refitter = Refitter(model, opt, scheduler, every=refit_every, until_step=int(refit_until * total_steps),
                            ramp_steps=ramp, method=refit_method, options=refit_options)

    history: list[dict[str, Any]] = []
    start_epoch, step, wall = 1, 0, 0.0
    if state is not None:
        start_epoch, step, wall, history = _restore(run_dir, state, model, opt, scheduler, refitter, dev)
        log.info("resuming %s at epoch %d", run_dir, start_epoch)
    else:
        if run_dir is not None:
            rf.start_run(run_dir, config)
        torch.manual_seed(seed + 1)  # shuffling/dropout stream, independent of how the task consumed RNG
        eval_loss, metric = evaluate(task, model, dev)
        history.append(_record(0, 0, math.nan, eval_loss, metric, opt, 0.0, refitter))
        if run_dir is not None:
            rf.write_metrics(run_dir, history)

    status = "complete"
    for epoch in range(start_epoch, epochs + 1):
        if status != "complete":
            break
        t0 = time.perf_counter()
        if hasattr(task.train_loader, "set_epoch"):
            task.train_loader.set_epoch(epoch)
        loss_sum, seen = 0.0, 0
        for batch in task.train_loader:
            if refitter is not None:
                refitter.step(step)
            batch = tuple(t.to(dev) for t in batch)
            outputs, targets = task.forward(model, batch)
            loss = task.loss_fn(outputs, targets)
            if not torch.isfinite(loss):
                log.warning("%s/%s: loss is %s at step %d; stopping", task_name, opt_name, float(loss.detach()), step)
                status = "diverged"
                loss_sum, seen = math.nan, 1
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            loss_sum += float(loss.detach())
            seen += 1
            if progress is not None:
                progress(step, total_steps, f"epoch {epoch} loss {loss_sum / seen:.3f}")
        eval_loss, metric = evaluate(task, model, dev)
        wall += time.perf_counter() - t0
        history.append(_record(epoch, step, loss_sum / max(seen, 1), eval_loss, metric, opt, wall, refitter))
        log.info("epoch %d: train loss %.4f, eval %s %.4f", epoch, history[-1]["train_loss"] or math.nan,
                 task.metric_name, metric)
        if run_dir is not None:
            _save_epoch(run_dir, epoch, step, wall, model, opt, scheduler, refitter, history, keep_checkpoints)

    result = RunResult(task=task_name, optimizer=opt_name, metric_name=task.metric_name, history=tuple(history),
                       wall_time=wall, status=status, run_dir=run_dir, config=config,
                       task_meta=dict(task.meta))
    if run_dir is not None:
        rf.finish_run(run_dir, status=status, metric=task.metric_name, task_meta=task.meta,
                      final=result.final_metric, best=result.best_metric, epochs_done=int(history[-1]["epoch"]),
                      wall=wall)
    return result


def _record(epoch: int, step: int, train_loss: float, eval_loss: float, metric: float,
            opt: torch.optim.Optimizer, wall: float, refitter: Refitter | None) -> dict[str, Any]:
    # DALS keeps group["lr"] at its peak and schedules internally; it reports the LR a step used
    lrs = [float(g.get("scheduled_lr", g["lr"])) for g in opt.param_groups]
    return {
        "epoch": epoch, "step": step, "train_loss": jsonable(train_loss), "eval_loss": jsonable(eval_loss),
        "eval_metric": jsonable(metric), "lr_min": min(lrs), "lr_max": max(lrs), "time": round(wall, 4),
        "refits": refitter.count if refitter is not None else 0,
    }


def _save_epoch(run_dir: Path, epoch: int, step: int, wall: float, model: nn.Module, opt: torch.optim.Optimizer,
                scheduler: Any, refitter: Refitter | None, history: list[dict[str, Any]], keep: int) -> None:
    """Checkpoint, then the state (the commit point, with every metrics record), then the derived
    ``metrics.jsonl``, then pruning: a kill anywhere leaves a consistent run (see :mod:`.runfiles`)."""
    rf.save_checkpoint(model, rf.checkpoint_path(run_dir, epoch))
    rf.save_state(run_dir, {
        "epoch": epoch, "step": step, "wall": wall,
        "optimizer": opt.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "refit": refitter.state_dict() if refitter is not None else None,
        "history": [dict(h) for h in history],
    })
    rf.write_metrics(run_dir, history)
    rf.prune_checkpoints(run_dir, epoch, keep)


def _restore(run_dir: Path, state: Mapping[str, Any], model: nn.Module, opt: torch.optim.Optimizer, scheduler: Any,
             refitter: Refitter | None, dev: torch.device) -> tuple[int, int, float, list[dict[str, Any]]]:
    """Load the committed epoch into the live objects; any mismatch is a one-line CheckpointError."""
    epoch = int(state["epoch"])
    rf.load_checkpoint(rf.checkpoint_path(run_dir, epoch), model, dev)
    where = run_dir / "state.pt"
    try:
        opt.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if refitter is not None and state.get("refit") is not None:
            refitter.load_state_dict(state["refit"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{where}: does not fit this run's optimizer or schedule ({reason}); "
                              "delete the run directory to start over") from None
    history = state.get("history")
    if history is None:  # a state written before the metrics moved into it: metrics.jsonl must be whole
        history = [h for h in read_metrics(run_dir, strict=True) if h["epoch"] <= epoch]
        if [h["epoch"] for h in history] != list(range(epoch + 1)):
            raise CheckpointError(f"{run_dir / 'metrics.jsonl'}: lacks records of epochs 0..{epoch}; cannot resume")
    rf.write_metrics(run_dir, history)
    return epoch + 1, int(state["step"]), float(state["wall"]), [dict(h) for h in history]
