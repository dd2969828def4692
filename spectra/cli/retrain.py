"""``spectra retrain``: train a built-in or user task with a named optimizer, LR map and refits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import DeviceOpt, QuietOpt, command, parse_pairs, progress_callback
from ._views import render_history, render_lists


@command("retrain")
def retrain_cmd(
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Built-in task (synthetic, digits, digits-transfer, minilm-text; see --list) or package.module:function returning a spectra.train.Task.")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", help="Strategy from the optimizer registry (dals, dals-fast, sgd, adamw, radam, lars, lamb, ...; see --list).")] = "dals",
    lrmap: Annotated[Optional[Path], typer.Option("--lrmap", help="LR map (spectra prescribe -o): each layer trains at lr x its multiplier.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs to train.")] = 10,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base (peak) LR; default: the optimizer's own default.")] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="Base weight decay (biases and norms get none).")] = 0.0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory: run.json, metrics.jsonl, checkpoints/, state.pt (default runs/TASK-OPTIMIZER-sSEED).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last finished epoch (same settings required).")] = False,
    refit_every: Annotated[int, typer.Option("--refit-every", help="Re-analyse the model and re-prescribe every K optimizer steps (LLR style; 0 = never).")] = 0,
    refit_method: Annotated[str, typer.Option("--refit-method", help="Prescription rule for refits (mean-normalised).")] = "llr",
    refit_until: Annotated[float, typer.Option("--refit-until", help="Refit only during this first fraction of training.")] = 0.2,
    ramp_steps: Annotated[Optional[int], typer.Option("--ramp-steps", help="Steps of the linear ramp to each refit's targets (default min(K, 50)).")] = None,
    task_arg: Annotated[Optional[List[str]], typer.Option("--task-arg", metavar="KEY=VALUE", help="Task factory option KEY=VALUE (repeatable), e.g. n_train=512.")] = None,
    opt_arg: Annotated[Optional[List[str]], typer.Option("--opt-arg", metavar="KEY=VALUE", help="Optimizer option KEY=VALUE (repeatable), e.g. momentum=0.8.")] = None,
    keep: Annotated[int, typer.Option("--keep", help="Keep only the newest N epoch checkpoints (0 = all).")] = 0,
    list_: Annotated[bool, typer.Option("--list", help="List built-in tasks and optimizers and exit.")] = False,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed for the model's initialisation, the data order and dropout (a run is reproducible from its seed).")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a task and write checkpoints (safetensors) and per-epoch metrics; --resume continues.

    Example: spectra retrain --task digits --optimizer dals --epochs 5 --out runs/digits-dals
    """
    from .._files import check_output_dir
    from ..errors import ConfigError
    from ..train.loop import retrain

    if list_:
        render_lists()
        return
    if task is None:
        raise ConfigError("choose a task with --task NAME (`spectra retrain --list` shows the built-ins)")
    run_dir = out if out is not None else Path("runs") / f"{task.replace(':', '_').replace('/', '_')}-{optimizer}-s{seed}"
    check_output_dir(run_dir)
    with progress_callback(f"{task} / {optimizer}", quiet=quiet) as on_progress:
        result = retrain(
            task, optimizer, epochs=epochs, lr=lr, weight_decay=weight_decay, lrmap=lrmap, device=device,
            out=run_dir, resume=resume, refit_every=refit_every, refit_method=refit_method,
            refit_until=refit_until, ramp_steps=ramp_steps, seed=seed,
            task_args=parse_pairs(task_arg or [], "--task-arg"), optimizer_args=parse_pairs(opt_arg or [], "--opt-arg"),
            keep_checkpoints=keep, progress=on_progress,
        )
    if not quiet:
        render_history(result)
    if result.status != "complete":
        typer.echo(f"warning: training {result.status} at epoch {result.history[-1]['epoch']}", err=True)
    typer.echo(f"wrote {run_dir}", err=True)


