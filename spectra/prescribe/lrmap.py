"""The layerwise learning-rate map and its versioned file format, ``spectra.lrmap/1``.

An :class:`LRMap` is the output of :func:`spectra.prescribe.prescribe`: one multiplier per parameter
key (the weight of each layer and, per ``--norms``, the biases and norm weights attached to it) plus
one record per layer that says which metric value led to which multiplier, and why when a layer was
left at the default. A trainer turns it into torch param groups with
:func:`spectra.optim.param_groups`, where ``lr = base_lr * multiplier``.

JSON layout::

    {"schema": "spectra.lrmap/1", "spectra_version": "0.1.0", "method": "tempbalance",
     "target": "lr", "options": {...}, "source": "analysis.json", "default": 1.0,
     "params": {"layers.0.fc.weight": 0.5, "layers.0.fc.bias": 0.5, ...},
     "layers": [{"name": "layers.0.fc", "param": "layers.0.fc.weight", "params": [...],
                 "depth": 1, "metric": "alpha", "value": 3.2, "multiplier": 0.5, "reason": "",
                 "prescribed": true}],
     "wd_params": {...}}            # only for weight-decay rules (AlphaDecay)

``target`` is ``"lr"`` or ``"weight_decay"``. For a weight-decay rule the per-layer ``multiplier``
is the weight-decay multiplier, ``wd_params`` carries it per parameter and ``params`` is all 1.
Missing numbers are ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .._version import __version__
from ..errors import FormatError
from ..records import Record, ResultFile, checked

__all__ = ["LRMAP_SCHEMA", "LayerEntry", "LRMap"]

LRMAP_SCHEMA = "spectra.lrmap/1"
TARGETS = ("lr", "weight_decay")


@dataclass(frozen=True)
class LayerEntry(Record):
    """What a rule decided for one layer.

    Attributes:
        name: layer (module) name, e.g. ``model.layers.3.mlp.down_proj``.
        param: the layer's weight key.
        params: every parameter key that takes this layer's multiplier (the weight first).
        depth: block index (embeddings 0, blocks 1..L, head last).
        metric: the metric the rule read (``alpha``, ``depth``, ``rel_update``, ...).
        value: that metric's value for this layer (NaN when missing).
        multiplier: the multiplier given to the layer (the default when the rule left it out).
        reason: empty when the rule mapped the layer's metric; otherwise why it got the default
            or a fixed value (LLR's embeddings at the maximum), or that it was clipped.
        prescribed: false when the layer was left at the map's default.
    """

    name: str
    param: str
    depth: int = checked(ge=0)
    metric: str
    value: float
    multiplier: float = checked(finite=True, ge=0)
    reason: str = ""
    params: tuple[str, ...] = ()
    prescribed: bool = True


@dataclass(frozen=True)
class LRMap(ResultFile):
    """Per-parameter learning-rate (or weight-decay) multipliers with their provenance.

    >>> m = LRMap(method="demo", params={"fc.weight": 2.0})
    >>> m.multiplier("fc.weight"), m.multiplier("other.weight")
    (2.0, 1.0)
    """

    schema = LRMAP_SCHEMA
    json_order = ("method", "target", "options", "source", "default", "params", "layers")

    method: str
    params: Mapping[str, float] = checked(finite=True, ge=0)
    layers: tuple[LayerEntry, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    default: float = checked(1.0, finite=True, ge=0)
    target: str = checked("lr", choices=TARGETS)
    wd_params: Mapping[str, float] | None = checked(None, finite=True, ge=0, omit_none=True)
    spectra_version: str = __version__

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise FormatError(f"lrmap target must be one of {', '.join(TARGETS)}, got {self.target!r}")

    # ----------------------------------------------------------------- access
    def multiplier(self, param: str) -> float:
        """LR multiplier of ``param`` (the map's default when the map does not cover it)."""
        return float(self.params.get(param, self.default))

    def wd_multiplier(self, param: str) -> float:
        """Weight-decay multiplier of ``param`` (1 when the map has no ``wd_params``)."""
        if not self.wd_params:
            return 1.0
        return float(self.wd_params.get(param, 1.0))

    def covers(self, param: str) -> bool:
        return param in self.params or bool(self.wd_params and param in self.wd_params)

    def keys(self) -> set[str]:
        """Every parameter key the map names."""
        return set(self.params) | set(self.wd_params or {})

    def layer(self, name: str) -> LayerEntry:
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def by_depth(self) -> list[tuple[int, float, float, float, int]]:
        """``(depth, mean, min, max, count)`` of the layer multipliers at each depth, shallow first.

        >>> LRMap(method="d", params={}, layers=(LayerEntry("a", "a.weight", 0, "depth", 0.0, 0.5),
        ...       LayerEntry("b", "b.weight", 1, "depth", 1.0, 1.0), LayerEntry("c", "c.weight", 1, "depth", 1.0, 2.0))).by_depth()
        [(0, 0.5, 0.5, 0.5, 1), (1, 1.5, 1.0, 2.0, 2)]
        """
        groups: dict[int, list[float]] = {}
        for entry in self.layers:
            groups.setdefault(int(entry.depth), []).append(float(entry.multiplier))
        return [(d, sum(v) / len(v), min(v), max(v), len(v)) for d, v in sorted(groups.items())]
