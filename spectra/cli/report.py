"""``spectra report``: one self-contained HTML file from checkpoints or analysis JSON files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import DeviceOpt, DtypeOpt, QuietOpt, TrustPickleOpt, check_outputs, command, progress_callback


@command("report")
def report_cmd(
    inputs: Annotated[List[str], typer.Argument(help="Checkpoints (analysed first) or analysis JSON files; several, in training order, add a trajectory view.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    lrmap: Annotated[Optional[Path], typer.Option("--lrmap", help="An LR map (spectra prescribe -o) to show against depth.")] = None,
    noise: Annotated[Optional[Path], typer.Option("--noise", help="A gradient-noise file (spectra noise -o).")] = None,
    diff: Annotated[Optional[Path], typer.Option("--diff", help="A checkpoint diff file (spectra diff -o).")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Page title (default: the checkpoint's file name).")] = None,
    fit: Annotated[str, typer.Option("--fit", help="Power-law fit for checkpoints analysed here: ww or median.")] = "ww",
    mp_fit: Annotated[bool, typer.Option("--mp-fit", help="Also fit the Marchenko-Pastur bulk (checkpoints analysed here).")] = False,
    screenshot: Annotated[Optional[Path], typer.Option("--screenshot", help="Also save a full-page PNG of the report (needs chromium).")] = None,
    dtype: DtypeOpt = "float64",
    device: DeviceOpt = "auto",
    trust_pickle: TrustPickleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Render spectra, alerts, depth charts and the layer table as one offline HTML page."""
    from ..report import write_report

    check_outputs({"--out": (out, (".html", ".htm")), "--screenshot": (screenshot, (".png",))},
                  inputs=[*inputs, lrmap, noise, diff])
    with progress_callback("analyze", quiet=quiet) as on_progress:
        path = write_report(inputs, out, lrmap=lrmap, noise=noise, diff=diff, title=title, fit=fit, mp_fit=mp_fit,
                            dtype=dtype, device=device, trust_pickle=trust_pickle, progress=on_progress)
    if screenshot is not None:
        from ..report.browser import screenshot as take

        take(path, screenshot)
    if not quiet:
        size = path.stat().st_size / 1024
        typer.echo(f"wrote {path} ({size:,.0f} kB)" + (f" and {screenshot}" if screenshot else ""), err=True)
