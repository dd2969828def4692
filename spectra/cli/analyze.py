"""``spectra analyze``: per-layer spectral metrics of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import (DeviceOpt, DtypeOpt, QuietOpt, SeedOpt, TrustPickleOpt, check_outputs, command, emit, fmt, is_stdout,
                   progress_callback, stdout_console)

_FORMATS = (".json", ".csv", ".parquet")


@command("analyze")
def analyze_cmd(
    checkpoint: Annotated[str, typer.Argument(help="A .safetensors/.pt/.bin/.ckpt file or a model directory.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write results: .json (spectra.analysis/1), .csv or .parquet; '-' writes JSON to stdout.")] = None,
    save_esd: Annotated[Optional[Path], typer.Option("--save-esd", help="Write every layer's eigenvalues to this .npz.")] = None,
    include: Annotated[Optional[List[str]], typer.Option("--include", help="Regex on tensor keys to analyze (repeatable).")] = None,
    exclude: Annotated[Optional[List[str]], typer.Option("--exclude", help="Regex on tensor keys to skip (repeatable).")] = None,
    min_evals: Annotated[int, typer.Option("--min-evals", help="Skip matrices with fewer eigenvalues.")] = 8,
    max_evals: Annotated[Optional[int], typer.Option("--max-evals", help="Skip matrices with more eigenvalues (default: no limit).")] = None,
    fit: Annotated[str, typer.Option("--fit", help="Power-law fit: ww (min-KS xmin, WeightWatcher's) or median (TempBalance/LLR).")] = "ww",
    fix_fingers: Annotated[Optional[str], typer.Option("--fix-fingers", help="clip_xmax: refit without outlying top eigenvalues.")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap refits for a 95% confidence interval of alpha (0 = off).")] = 0,
    mp_fit: Annotated[bool, typer.Option("--mp-fit", help="Fit a Marchenko-Pastur bulk (sigma_mp, spikes, soft rank).")] = False,
    randomize: Annotated[bool, typer.Option("--randomize", help="Compare with an element-shuffled matrix (correlation traps).")] = False,
    compare: Annotated[bool, typer.Option("--compare-distributions", help="Power law vs lognormal/exponential at xmin (needs the powerlaw package).")] = False,
    solver: Annotated[str, typer.Option("--solver", help="gram (eigvalsh of W^T W, fastest) or svd.")] = "gram",
    dtype: DtypeOpt = "float64",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    trust_pickle: TrustPickleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compute each weight matrix's spectrum, heavy-tail alpha and norm metrics."""
    from ..analysis import AnalyzeConfig, analyze
    from ..errors import Interrupted

    to_stdout = is_stdout(out)
    check_outputs({"--out": (out, _FORMATS), "--save-esd": (save_esd, (".npz",))}, inputs=[checkpoint])
    cfg = AnalyzeConfig(
        include=tuple(include or ()), exclude=tuple(exclude or ()), min_evals=min_evals, max_evals=max_evals,
        fit=fit, fix_fingers=fix_fingers, bootstrap=bootstrap, mp_fit=mp_fit, randomize=randomize,
        compare_distributions=compare, solver=solver, dtype=dtype, device=device, seed=seed,
    )
    try:
        with progress_callback("analyze", quiet=quiet or to_stdout) as on_progress:
            result = analyze(checkpoint, cfg, trust_pickle=trust_pickle, progress=on_progress)
    except Interrupted as stop:  # Ctrl-C: keep the finished layers, marked partial, then exit 130
        if stop.partial is None or (out is None and save_esd is None):
            raise
        _write(stop.partial, out, save_esd, quiet=True)
        done = stop.partial.summary["num_success"] + stop.partial.summary["num_failed"]
        typer.echo(f"interrupted: wrote the {done} finished layers to {out or save_esd} (summary.partial = true)",
                   err=True)
        raise typer.Exit(130) from None
    _write(result, out, save_esd, quiet=quiet)


def _write(result, out: Optional[Path], save_esd: Optional[Path], *, quiet: bool) -> None:
    if save_esd is not None:
        result.save_esd(save_esd)
        if not quiet:
            typer.echo(f"wrote {save_esd}", err=True)
    emit(result, out, quiet=quiet, render=render_analysis, save=lambda r, p: r.save(p))


def render_analysis(result) -> None:
    """Summary line and the per-layer table on stdout."""
    from rich.table import Table

    console = stdout_console()
    s = result.summary
    console.print(
        f"[bold]{result.checkpoint}[/]  {s['num_params']:,} parameters, {s['num_layers']} layers "
        f"({s['num_success']} fitted, {s['num_failed']} failed, {s['num_skipped']} skipped), "
        f"{s['num_vectors']} vectors attached, {s['seconds']:.2f} s"
    )
    console.print(
        f"alpha mean {fmt(s['alpha'], '.2f')}  median {fmt(s['alpha_median'], '.2f')}   "
        f"alpha_weighted mean {fmt(s['alpha_weighted'], '.2f')}   "
        f"under-trained (alpha > 6): {s['num_under_trained']}   over-trained (alpha < 2): {s['num_over_trained']}"
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (("depth", "right"), ("layer", "left"), ("kind", "left"), ("shape", "left"),
                         ("alpha", "right"), ("±", "right"), ("D", "right"), ("tail", "right"),
                         ("alpha_w", "right"), ("stable_rank", "right"), ("log_spec", "right"), ("note", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "note")
    for r in result.layers:
        if r.alpha_ci:
            spread = f"[{fmt(r.alpha_ci[0], '.2f')}, {fmt(r.alpha_ci[1], '.2f')}]"
        else:
            spread = fmt(r.sigma, '.2f')
        note = r.warning if r.ok else f"{r.status}: {r.reason}"
        style = {"over-trained": "red", "under-trained": "yellow"}.get(r.warning, "" if r.ok else "dim")
        table.add_row(
            str(r.depth), r.name, r.kind, "x".join(map(str, r.shape)), fmt(r.alpha, '.2f'), spread, fmt(r.D, '.3f'),
            fmt(r.num_pl_spikes, '.2f'), fmt(r.alpha_weighted, '.2f'), fmt(r.stable_rank, '.1f'), fmt(r.log_spectral_norm, '.2f'),
            note, style=style,
        )
    console.print(table)
