"""``spectra noise``: per-layer gradient noise scale, measured on a task or read off optimizer state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import (DeviceOpt, QuietOpt, TrustPickleOpt, check_outputs, command, emit, is_stdout, parse_pairs,
                   progress_callback)
from ._views import render_noise


@command("noise")
def noise_cmd(
    task: Annotated[Optional[str], typer.Option("--task", help="Built-in task name or package.module:function returning a spectra.train.Task.")] = None,
    task_arg: Annotated[Optional[List[str]], typer.Option("--task-arg", metavar="KEY=VALUE", help="key=value passed to the task factory (repeatable).")] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Weights to load into the task's model (default: as the task builds it).")] = None,
    batches: Annotated[int, typer.Option("--batches", help="Train batches to measure; each is one round of the two-batch estimator.")] = 8,
    micro_batch: Annotated[Optional[int], typer.Option("--micro-batch", help="Small batch size b (default: batch size // 4); each batch gives batch//b micro-batch gradients.")] = None,
    per_example: Annotated[bool, typer.Option("--per-example", help="Per-example gradients via torch.func (b = 1, lowest variance).")] = False,
    from_optimizer: Annotated[bool, typer.Option("--from-optimizer", help="No data: a heuristic proxy from Adam moments stored in --checkpoint.")] = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="With --from-optimizer: the training batch size, to report tr(Sigma) per example.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write spectra.noise/1 JSON; '-' writes it to stdout.")] = None,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed for the task's data order and, without --checkpoint, its model initialisation: the same seed gives the same measurement.")] = 0,
    trust_pickle: TrustPickleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Gradient noise per layer: |G|^2, tr(Sigma), B_simple = tr(Sigma)/|G|^2, SNR and gradient norms."""
    from ..errors import ConfigError
    from ..noise import measure_noise, optimizer_noise
    from ..train.task import load_task

    to_stdout = is_stdout(out)
    check_outputs({"--out": (out, (".json",))}, inputs=[checkpoint])
    task_args = parse_pairs(task_arg, "--task-arg")
    if from_optimizer:
        if checkpoint is None:
            raise ConfigError("--from-optimizer reads optimizer state from --checkpoint; give one")
        built = load_task(task, **task_args) if task else None  # only its parameter order is used
        result = optimizer_noise(checkpoint, task=built, batch_size=batch_size, trust_pickle=trust_pickle)
    else:
        if task is None:
            raise ConfigError("give --task (to measure gradients) or --from-optimizer --checkpoint CKPT")
        with progress_callback("noise", quiet=quiet or to_stdout) as on_progress:
            # built inside measure_noise, under the seed: model init and data order follow --seed
            result = measure_noise(task, checkpoint, task_args=task_args, batches=batches, micro_batch=micro_batch,
                                   per_example=per_example, device=device, seed=seed, trust_pickle=trust_pickle,
                                   progress=on_progress)
    emit(result, out, quiet=quiet, render=render_noise)

