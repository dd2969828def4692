"""``spectra analyze``: per-layer spectral metrics of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import DeviceOpt, DtypeOpt, QuietOpt, TrustPickleOpt, check_outputs, command, emit, is_stdout, progress_callback
from ._views import render_analysis

_FORMATS = (".json", ".csv", ".parquet")


@command("analyze")
def analyze_cmd(
    checkpoint: Annotated[str, typer.Argument(help="A .safetensors/.pt/.bin/.ckpt file or a model directory.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write results: .json (spectra.analysis/1), .csv or .parquet; '-' writes JSON to stdout.")] = None,
    save_esd: Annotated[Optional[Path], typer.Option("--save-esd", help="Write every layer's eigenvalues to this .npz file (the name must end in .npz).")] = None,
    include: Annotated[Optional[List[str]], typer.Option("--include", metavar="REGEX", help="Regex on tensor keys to analyze (repeatable).")] = None,
    exclude: Annotated[Optional[List[str]], typer.Option("--exclude", metavar="REGEX", help="Regex on tensor keys to skip (repeatable).")] = None,
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
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed for the bootstrap draws and the --randomize shuffles (results are reproducible).")] = 0,
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
        written = result.save_esd(save_esd)
        if not quiet:
            typer.echo(f"wrote {written}", err=True)
    emit(result, out, quiet=quiet, render=render_analysis, save=lambda r, p: r.save(p))

