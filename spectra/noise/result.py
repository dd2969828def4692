"""The ``spectra.noise/1`` result types: one record per layer and the whole result, with its summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from .._version import __version__
from ..core.noise import mean_abs_difference
from ..records import NAN, Record, ResultFile, checked

__all__ = ["NOISE_SCHEMA", "LayerNoise", "NoiseResult", "summarize", "created_now", "layer_noise"]

NOISE_SCHEMA = "spectra.noise/1"
STATUSES = ("success", "failed", "skipped")


@dataclass(frozen=True)
class LayerNoise(Record):
    """Noise statistics of one layer (its weight plus attached vectors; ``params`` lists the keys).

    ``grad_sq`` = |G|^2, ``trace_sigma`` = tr(Sigma) per example, ``b_simple`` = tr(Sigma)/|G|^2,
    ``snr`` = |G|^2/tr(Sigma). ``grad_fro``/``grad_spectral``/``grad_nuclear`` are norms of the
    weight's big-batch gradient (matrix view), averaged over rounds.

    ``g2_ci``, ``trace_sigma_ci``, ``b_simple_ci``: ``[lo, hi]`` confidence intervals from the spread
    over rounds (Student for the two means, Fieller for their ratio; null with one round, and for
    B_simple when unbounded). ``reliable`` is False when the numbers are too uncertain to act on,
    with a short ``reliable_reason`` (see :func:`spectra.core.noise.reliability`).
    """

    name: str
    params: tuple[str, ...]
    depth: int = checked(ge=0)
    numel: int = checked(0, ge=0)
    kind: str = "linear"
    grad_sq: float = NAN
    trace_sigma: float = NAN
    b_simple: float = NAN
    snr: float = NAN
    grad_fro: float = NAN
    grad_spectral: float = NAN
    grad_nuclear: float = NAN
    grad_effective_rank: float = NAN
    status: str = checked("success", choices=STATUSES)
    reason: str = ""
    g2_ci: tuple[float, float] | None = None
    trace_sigma_ci: tuple[float, float] | None = None
    b_simple_ci: tuple[float, float] | None = checked(None, ge=0)
    reliable: bool = False
    reliable_reason: str = ""


@dataclass(frozen=True)
class NoiseResult(ResultFile):
    """Result of :func:`measure_noise` or :func:`optimizer_noise`; ``to_json`` writes ``spectra.noise/1``."""

    schema = NOISE_SCHEMA
    json_order = ("created", "task", "checkpoint", "source", "config", "summary", "layers")

    layers: tuple[LayerNoise, ...]
    summary: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    task: str = ""
    checkpoint: str = ""
    created: str = ""
    spectra_version: str = __version__

    def layer(self, name: str) -> LayerNoise:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    def to_frame(self):
        """Per-layer table as a pandas DataFrame (needs the ``report`` extra)."""
        from ..errors import require

        pd = require("pandas", "report")
        rows = [dict(rec.to_dict(), params=",".join(rec.params)) for rec in self.layers]
        return pd.DataFrame(rows)


def layer_noise(group, stats, numel: int, norms: Any, reason: str | None = None) -> LayerNoise:
    """One layer's record from its :class:`~spectra.noise.measure.LayerGroup`, its
    :class:`~spectra.core.noise.NoiseStats` and its gradient norms (a ``GradNorms``)."""
    return LayerNoise(group.name, group.params, group.depth, numel, group.kind, stats.grad_sq, stats.trace_sigma,
                      stats.b_simple, stats.snr, norms.fro, norms.spectral, norms.nuclear, norms.effective_rank,
                      stats.status, stats.reason if reason is None else reason, stats.g2_ci, stats.trace_sigma_ci,
                      stats.b_simple_ci, stats.reliable, stats.reliable_reason)


def created_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summarize(layers: Sequence[LayerNoise], total, **extra) -> dict[str, Any]:
    ok = [r for r in layers if r.status == "success"]
    ordered = sorted(ok, key=lambda r: r.depth)
    b = sorted(r.b_simple for r in ok)
    return {"b_simple": total.b_simple, "grad_sq": total.grad_sq, "trace_sigma": total.trace_sigma,
            "snr": total.snr, "status": total.status, "reason": total.reason,
            "g2_ci": total.g2_ci, "trace_sigma_ci": total.trace_sigma_ci, "b_simple_ci": total.b_simple_ci,
            "reliable": total.reliable, "reliable_reason": total.reliable_reason,
            "num_layers": len(layers), "num_failed": sum(r.status == "failed" for r in layers),
            "num_reliable": sum(bool(r.reliable) for r in layers),
            "b_simple_median": b[len(b) // 2] if b else NAN,
            "grad_nuclear_mad": mean_abs_difference([r.grad_nuclear for r in ordered]), **extra}
