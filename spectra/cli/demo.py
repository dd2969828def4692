"""``spectra demo``: the bundled all-MiniLM-L6-v2, analysed, prescribed and reported in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..demo import DEFAULT_OUT
from ._app import QuietOpt, command, progress_callback
from ._views import render_demo


@command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for analysis.json, lrmap.json and report.html (default: a fresh spectra-demo/ here, ignored by git; reports/demo holds the committed example).")] = Path(DEFAULT_OUT),
    method: Annotated[str, typer.Option("--method", "-m", help="LR-map rule to apply (see spectra prescribe --list).")] = "tempbalance",
    screenshot: Annotated[bool, typer.Option("--screenshot", help="Also save report.png (1400 px) and report-narrow.png (420 px); needs chromium.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Analyze, prescribe and report on all-MiniLM-L6-v2 (offline; needs the demo extra).

    Example: spectra demo --out reports/demo --screenshot
    """
    from ..demo import open_command, run_demo

    from .._files import check_output_dir

    check_output_dir(out)
    with progress_callback("analyze MiniLM", quiet=quiet) as on_progress:
        result = run_demo(out, method=method, screenshot=screenshot, progress=on_progress)
    if not quiet:
        render_demo(result, open_command(result.paths["report"]))
