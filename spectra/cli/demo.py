"""``spectra demo``: the bundled all-MiniLM-L6-v2, analysed, prescribed and reported in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import QuietOpt, command, progress_callback, stdout_console


@command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for analysis.json, lrmap.json and report.html.")] = Path("reports/demo"),
    method: Annotated[str, typer.Option("--method", "-m", help="LR-map rule to apply (see spectra prescribe --list).")] = "tempbalance",
    screenshot: Annotated[bool, typer.Option("--screenshot", help="Also save report.png (needs chromium).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Analyze, prescribe and report on all-MiniLM-L6-v2 (offline; needs the demo extra)."""
    from ..demo import run_demo

    from .._files import check_output_dir

    check_output_dir(out)
    with progress_callback("analyze MiniLM", quiet=quiet) as on_progress:
        result = run_demo(out, method=method, screenshot=screenshot, progress=on_progress)
    if quiet:
        return
    console = stdout_console()
    console.print("[bold]spectra demo[/]: all-MiniLM-L6-v2 analysed, LR map prescribed, report written")
    for label, path in result.paths.items():
        console.print(f"  {label:<10} {path}", highlight=False)
    console.print("\n[bold]Look at these first:[/]")
    for i, h in enumerate(result.highlights, 1):
        console.print(f"  {i}. [bold]{h.title}[/]: {h.detail}", highlight=False)
    console.print(f"\nOpen {result.paths['report']} in a browser.", highlight=False)
