"""``spectra bench``: benchmark groups; ``spectra bench strategies`` runs the LR-strategy grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import DeviceOpt, QuietOpt, app, check_outputs, command, parse_pairs, progress_callback
from ._help import HelpGroup
from ._views import render_bench_summary, render_strategies

bench_app = typer.Typer(help="Benchmarks that write reports/bench/*.md tables and plots.", no_args_is_help=True,
                        cls=HelpGroup)
app.add_typer(bench_app, name="bench")


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@command("strategies", typer_app=bench_app)
def strategies_cmd(
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated tasks (built-in names or package.module:function).")] = "synthetic,digits,digits-transfer",
    strategies: Annotated[Optional[str], typer.Option("--strategies", help="Comma-separated strategies (default: all; see --list).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per (task, strategy): 0..N-1.")] = 3,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per run.")] = 10,
    target: Annotated[float, typer.Option("--target", help="Metric threshold for the epochs-to-target column.")] = 0.9,
    task_arg: Annotated[Optional[List[str]], typer.Option("--task-arg", metavar="TASK:KEY=VALUE", help="TASK:KEY=VALUE option for one task's factory (repeatable), e.g. minilm-text:num_layers=2.")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Torch threads per run (0 = leave torch's default).")] = 1,
    out: Annotated[Path, typer.Option("--out", "-o", help="Markdown report; a .png plot and a .json with every run are written next to it.")] = Path("reports/bench/strategies.md"),
    list_: Annotated[bool, typer.Option("--list", help="List the strategies and exit.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Train every (task, strategy, seed) and report final accuracy, epochs to target and wall time.

    Example: spectra bench strategies --tasks synthetic,digits --seeds 3 --epochs 10
    """
    from ..errors import ConfigError
    from ..train.bench import list_strategies, run_strategies, write_report

    if list_:
        render_strategies(list_strategies())
        return
    per_task: dict[str, dict] = {}
    for item in task_arg or []:
        name, sep, pair = item.partition(":")
        if not sep:
            raise ConfigError(f"--task-arg takes TASK:KEY=VALUE, got {item!r}")
        per_task.setdefault(name, {}).update(parse_pairs([pair], "--task-arg"))
    task_names = _split(tasks)
    if not task_names:
        raise ConfigError("--tasks is empty; give at least one task")
    check_outputs({"--out": (out, (".md",)), "the plot": (out.with_suffix(".png"), ()),
                   "the run data": (out.with_suffix(".json"), ())})
    with progress_callback("bench strategies", quiet=quiet) as on_progress:
        result = run_strategies(task_names, _split(strategies) or None, seeds=seeds, epochs=epochs, target=target,
                                device=device, task_args=per_task, threads=threads or None, progress=on_progress)
    command = (f"spectra bench strategies --tasks {','.join(task_names)} --seeds {seeds} --epochs {epochs}"
               + (f" --strategies {strategies}" if strategies else "")
               + "".join(f" --task-arg {a}" for a in task_arg or []))
    paths = write_report(result, out, command=command)
    if not quiet:
        render_bench_summary(result)
    for path in paths:
        typer.echo(f"wrote {path}", err=True)

