"""What a noise result can and cannot tell: short advice lines for the terminal and the report."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["noise_advice"]


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _ci(ci: Any) -> str:
    if not ci or len(ci) != 2 or not all(math.isfinite(_num(v)) for v in ci):
        return "no interval"
    return f"[{_num(ci[0]):.3g}, {_num(ci[1]):.3g}]"


def noise_advice(result) -> list[str]:
    """Advice lines for a :class:`~spectra.noise.NoiseResult` (plain text, one sentence each)."""
    s, c = result.summary, result.config
    layers = [r for r in result.layers if r.status != "skipped"]
    unreliable = [r for r in layers if not r.reliable]
    if result.source == "optimizer-proxy":
        return _proxy_advice(s, c, layers)
    out = []
    level = f"{100 * _num(c.get('level', 0.95)):g}%"
    if s.get("reliable"):
        out.append(f"Global B_simple {_num(s.get('b_simple')):.3g} examples ({level} interval "
                   f"{_ci(s.get('b_simple_ci'))}): the critical-batch-size proxy of McCandlish et al. 2018, "
                   "assuming a Hessian proportional to the identity.")
    else:
        out.append(f"Global B_simple is not reliable: {s.get('reliable_reason') or s.get('reason')}.")
    if unreliable:
        rounds = s.get("rounds")
        out.append(f"{len(unreliable)} of {len(layers)} layers have intervals too wide to act on (`reliable: false`); "
                   f"the noise LR rule leaves them at the default. Intervals narrow about as 1/sqrt(rounds): "
                   f"raise --batches (now {rounds}).")
    return out


def _proxy_advice(s, c, layers) -> list[str]:
    steps = c.get("step") or [None, None]
    betas = c.get("betas") or [(0.9, 0.999)]
    window = 1.0 / (1.0 - max(_num(b[1]) for b in betas)) if betas else math.nan
    failed_first = [r for r in layers if r.reason.startswith("optimizer step 1")]
    out = []
    if failed_first:
        out.append(f"{len(failed_first)} of {len(layers)} layers are at optimizer step 1: one gradient, so noise and "
                   "signal cannot be separated; save the optimizer state after more steps or measure with --task.")
    out.append(f"Optimizer-state proxy (a heuristic from Adam's moments, step {steps[-1]}): it can rank layers by "
               f"noise against signal if the gradient statistics held steady over the second-moment window "
               f"(about {window:.0f} steps); it has no error bars, so no layer is marked reliable.")
    out.append("Parameter drift over that window, L2 weight decay inside Adam, gradient clipping and loss scaling "
               "all inflate tr(Sigma); measure with `spectra noise --task TASK --checkpoint CKPT` for numbers "
               "with intervals.")
    if not c.get("batch_size"):
        out.append("Numbers are per training batch: pass --batch-size B for tr(Sigma) per example and B_simple in "
                   "examples.")
    return out
