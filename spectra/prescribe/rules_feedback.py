"""Feedback rules: learning rates from measured gradient noise or from how much layers moved.

* ``noise`` reads a ``spectra.noise/1`` file (``spectra noise``). It is **our reconstruction** of a
  noise-adaptive layerwise LR in the spirit of LANTON (Hao et al., "Noise-Adaptive Layerwise
  Learning Rates", arXiv 2510.14009), whose exact estimator and mapping are not public. A layer's
  LR goes inversely with its gradient noise:
  ``m_l = (ref / v_l)^p`` for a noise metric (``b_simple = tr(Sigma)/|G|^2``, the default, or
  ``trace_sigma``) and ``m_l = (v_l / ref)^p`` for a signal metric (``snr``, ``grad_sq``), where
  ``ref`` is the geometric mean of ``v`` over the measured layers, so the multipliers have geometric
  mean 1 before clipping. With the default ``p = 1/2`` and ``b_simple`` the LR scales with the
  per-layer gradient signal-to-noise *ratio of norms*, ``|G| / sqrt(tr Sigma)`` (LANTON divides by a
  noise standard deviation). Default clip [0.1, 10]. A layer the noise file marks ``reliable:
  false`` (its confidence interval is too wide to act on, see :func:`spectra.core.noise.reliability`)
  keeps the default multiplier with that reason, and does not enter ``ref``; ``reliable_only=False``
  uses every measured layer anyway (needed for an optimizer-state proxy file, which has no intervals).
* ``update-ratio`` reads a ``spectra.diff/1`` file (``spectra diff A B``) and aims every layer's
  update-to-weight ratio ``rel_update = ||W_B - W_A||_F / ||W_A||_F`` at one target:
  ``m_l = target / rel_update_l``, by default ``target`` = the geometric mean over layers, so the
  map is centred (geometric mean 1). The rationale is the LARS/LAMB trust ratio (You et al. 2017,
  2019) applied over a whole training interval instead of one step. Default clip [0.1, 10].
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import ConfigError
from .registry import Decision, LayerRow, leave, register_rule

__all__ = ["noise", "update_ratio", "NOISE_METRICS"]

#: Noise-file metrics and their direction: -1 means more of it calls for a smaller LR.
NOISE_METRICS = {"b_simple": -1, "trace_sigma": -1, "snr": +1, "grad_sq": +1}


def _positive(rows: Sequence[LayerRow], what: str) -> tuple[list[int], list[Decision]]:
    out = []
    ok = []
    for i, row in enumerate(rows):
        if row.usable and row.value > 0:
            ok.append(i)
            out.append(Decision(math.nan))
        elif row.usable:
            out.append(leave(f"{what} is {row.value:g}, not > 0"))
        else:
            out.append(leave(f"no usable {what} ({row.status}{': ' + row.reason if row.reason else ''})"))
    return ok, out


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@register_rule(
    "noise",
    description="inverse gradient noise from a spectra noise file: (geomean(b) / b_l)^0.5 (reconstruction, cf. LANTON)",
    inputs="noise",
    metric="b_simple",
    clip=(0.1, 10.0),
    source="spectra reconstruction; cf. Hao et al. 2025, LANTON, arXiv 2510.14009",
)
def noise(rows: Sequence[LayerRow], *, power: float = 0.5, metric: str = "b_simple",
          reliable_only: bool = True) -> list[Decision]:
    """``m_l = (ref / v_l)^p`` (noise metrics) or ``(v_l / ref)^p`` (signal metrics), ``ref`` = geomean
    over the layers that get a multiplier; with ``reliable_only`` unreliable layers keep the default.

    >>> rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate([1.0, 4.0, 16.0])]
    >>> [round(d.multiplier, 6) for d in noise(rows)]
    [2.0, 1.0, 0.5]
    """
    if metric not in NOISE_METRICS:
        raise ConfigError(f"the noise rule reads {', '.join(NOISE_METRICS)}; got --metric {metric!r}")
    if not (math.isfinite(power) and power >= 0):
        raise ConfigError(f"power must be a number >= 0, got {power!r}")
    if not isinstance(reliable_only, bool):
        raise ConfigError(f"reliable_only must be true or false, got {reliable_only!r}")
    ok, out = _positive(rows, metric)
    if reliable_only:
        for i in [i for i in ok if rows[i].unreliable]:
            out[i] = leave(f"unreliable noise estimate: {rows[i].unreliable}")
        ok = [i for i in ok if not rows[i].unreliable]
    if not ok:
        return out
    ref = _geomean([rows[i].value for i in ok])
    sign = NOISE_METRICS[metric]
    for i in ok:
        out[i] = Decision((rows[i].value / ref) ** (sign * power))
    return out


@register_rule(
    "update-ratio",
    description="aim each layer's update ratio ||dW||/||W|| (spectra diff file) at the geometric mean",
    inputs="diff",
    metric="rel_update",
    clip=(0.1, 10.0),
    source="spectra; trust-ratio idea of LARS (You et al. 2017, arXiv 1708.03888) over a training interval",
)
def update_ratio(rows: Sequence[LayerRow], *, target: float | None = None) -> list[Decision]:
    """``m_l = target / rel_update_l``; ``target`` defaults to the geometric mean of ``rel_update``.

    >>> rows = [LayerRow(f"l.{i}", f"l.{i}.weight", i, value=v) for i, v in enumerate([0.01, 0.04])]
    >>> [round(d.multiplier, 6) for d in update_ratio(rows)]
    [2.0, 0.5]
    >>> [round(d.multiplier, 6) for d in update_ratio(rows, target=0.02)]
    [2.0, 0.5]
    """
    if target is not None and not (math.isfinite(target) and target > 0):
        raise ConfigError(f"target must be a number > 0, got {target!r}")
    ok, out = _positive(rows, "rel_update")
    if not ok:
        return out
    ref = target if target is not None else _geomean([rows[i].value for i in ok])
    for i in ok:
        out[i] = Decision(ref / rows[i].value)
    return out
