"""``spectra diff``: per-layer update geometry between two checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import (DeviceOpt, DtypeOpt, QuietOpt, TrustPickleOpt, check_outputs, command, emit, fmt, is_stdout, parse_pairs,
                   progress_callback, stdout_console)


@command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="The earlier checkpoint (file or model directory).")],
    b: Annotated[str, typer.Argument(help="The later checkpoint.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write spectra.diff/1 JSON; '-' writes it to stdout.")] = None,
    topk: Annotated[int, typer.Option("--topk", help="Size of the top singular subspaces compared (dW vs W_A).")] = 10,
    no_alpha: Annotated[bool, typer.Option("--no-alpha", help="Skip the power-law fits (alpha_a, alpha_b): faster.")] = False,
    activations: Annotated[bool, typer.Option("--activations", help="Also decompose each transformer block's hidden-state update (needs --task).")] = False,
    task: Annotated[Optional[str], typer.Option("--task", help="With --activations: the task whose model and probe inputs are used.")] = None,
    task_arg: Annotated[Optional[List[str]], typer.Option("--task-arg", help="key=value passed to the task factory (repeatable).")] = None,
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
    to_stdout = is_stdout(out)
    check_outputs({"--out": (out, (".json",))}, inputs=[a, b])
    built = load_task(task, **parse_pairs(task_arg, "--task-arg")) if activations else None
    with progress_callback("diff", quiet=quiet or to_stdout) as on_progress:
        result = diff(a, b, topk=topk, alpha=not no_alpha, device=device, dtype=dtype, trust_pickle=trust_pickle,
                      activations_task=built, max_tokens=max_tokens, method=method, progress=on_progress)
    emit(result, out, quiet=quiet, render=render_diff)


def render_diff(result) -> None:
    """Summary lines, the per-layer table, mismatches and (if any) the activation table."""
    from rich.table import Table

    console = stdout_console()
    s = result.summary
    console.print(f"[bold]{result.a}[/] -> [bold]{result.b}[/]  {s['num_layers']} matrices compared, "
                  f"{s['num_failed']} failed, {s['num_mismatched']} mismatched")
    console.print(f"global ||dW||/||W|| {fmt(s['rel_update_global'])}   median {fmt(s['rel_update_median'])}   "
                  f"max {fmt(s['rel_update_max'])} ({s['rel_update_max_layer'] or '-'})   "
                  f"mean delta alpha {fmt(s['delta_alpha_mean'])}")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("depth", "layer", "rel_update", "spec_ratio", "sv_growth", "dW srank", "dW erank", "overlap",
                "baseline", "alpha A", "alpha B", "note"):
        table.add_column(col, justify="left" if col in ("layer", "note") else "right", no_wrap=col != "note")
    for r in result.layers:
        note = "" if r.status == "success" else f"{r.status}: {r.reason}"
        table.add_row(str(r.depth), r.name, fmt(r.rel_update), fmt(r.spectral_ratio), fmt(r.sv_growth),
                      fmt(r.dw_stable_rank), fmt(r.dw_effective_rank), fmt(r.subspace_overlap),
                      fmt(r.overlap_baseline), fmt(r.alpha_a), fmt(r.alpha_b), note,
                      style="" if r.status == "success" else "dim")
    console.print(table)
    for m in result.mismatched:
        console.print(f"[yellow]mismatched[/] {m['param']}: {m['reason']}")
    if result.activations:
        act = Table(box=None, header_style="bold", pad_edge=False, title="hidden-state update geometry (A / B)")
        for col in ("depth", "block", "alignment", "angle", "resid energy", "proj update", "proj resid", "baseline"):
            act.add_column(col, justify="left" if col == "block" else "right")
        for row in result.activations["layers"]:
            pair = lambda k: f"{fmt(row[k + '_a'])} / {fmt(row[k + '_b'])}"  # noqa: E731
            act.add_row(str(row["depth"]), row["name"], pair("alignment"), pair("angular_deviation"),
                        pair("residual_energy"), pair("projection_update"), pair("projection_residual"),
                        fmt(row["projection_baseline"]))
        console.print(act)
