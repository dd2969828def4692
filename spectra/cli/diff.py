"""``spectra diff``: per-layer update geometry between two checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import (DeviceOpt, DtypeOpt, QuietOpt, TrustPickleOpt, check_outputs, command, emit, is_stdout, parse_pairs,
                   progress_callback)
from ._views import render_diff


@command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="The earlier checkpoint (file or model directory).")],
    b: Annotated[str, typer.Argument(help="The later checkpoint.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write spectra.diff/1 JSON; '-' writes it to stdout.")] = None,
    topk: Annotated[int, typer.Option("--topk", help="Size of the top singular subspaces compared (dW vs W_A).")] = 10,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps between A and B, recorded in the file: the report then compares the update per step with the ~1e-3 rule of thumb.")] = None,
    no_alpha: Annotated[bool, typer.Option("--no-alpha", help="Skip the power-law fits (alpha_a, alpha_b): faster.")] = False,
    activations: Annotated[bool, typer.Option("--activations", help="Also decompose each transformer block's hidden-state update (needs --task).")] = False,
    task: Annotated[Optional[str], typer.Option("--task", help="With --activations: the task whose model and probe inputs are used.")] = None,
    task_arg: Annotated[Optional[List[str]], typer.Option("--task-arg", metavar="KEY=VALUE", help="key=value passed to the task factory (repeatable).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="With --activations: probe token rows per block.")] = 2048,
    method: Annotated[str, typer.Option("--tokenwise", help="With --activations: local (kNN diagonal maps) or global (one ridge map).")] = "local",
    dtype: DtypeOpt = "float64",
    device: DeviceOpt = "auto",
    trust_pickle: TrustPickleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Relative update, spectral ratio, rank and subspace overlap of dW = W_B - W_A, and the change in alpha."""
    from ..diff import diff
    from ..errors import ConfigError
    from ..train.task import load_task

    if activations and not task:
        raise ConfigError("--activations needs --task (the model and probe inputs to run A and B on)")
    if method not in ("local", "global"):
        raise ConfigError(f"--tokenwise {method!r}: use local or global")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    to_stdout = is_stdout(out)
    check_outputs({"--out": (out, (".json",))}, inputs=[a, b])
    built = load_task(task, **parse_pairs(task_arg, "--task-arg")) if activations else None
    with progress_callback("diff", quiet=quiet or to_stdout) as on_progress:
        result = diff(a, b, topk=topk, alpha=not no_alpha, device=device, dtype=dtype, trust_pickle=trust_pickle,
                      activations_task=built, max_tokens=max_tokens, method=method, progress=on_progress)
    if steps is not None:
        result = dataclasses.replace(result, config={**result.config, "steps": steps})
    emit(result, out, quiet=quiet, render=render_diff)

