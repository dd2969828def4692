"""The registry of prescription rules and the row/decision types they work on.

A rule is a pure function ``fn(rows, **options) -> list[Decision]``: one :class:`Decision` per
:class:`LayerRow`, in order. A decision with a NaN multiplier means "leave this layer at the map's
default" and carries the reason. Rules never read files, never normalise or clip (that is done once,
for every rule, by :func:`spectra.prescribe.prescribe`) and never look at parameters other than the
rows they are given. Their keyword defaults are the published defaults; :func:`register_rule` reads
them from the signature, so the documentation, the CLI and the function cannot disagree.

>>> [info.name for info in list_rules("t*")]
['tb-log2', 'tb-sqrt', 'tempbalance']
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError

__all__ = ["LayerRow", "Decision", "RuleInfo", "register_rule", "get_rule", "list_rules", "INPUTS", "NORMS"]

#: Where a rule's per-layer metric comes from.
INPUTS = ("analysis", "depth", "noise", "diff")
#: What happens to the norm weights attached to a layer (a layer's own bias always follows it):
#: ``follow`` they take the layer's multiplier; ``base`` they keep the default; ``name`` a BatchNorm
#: whose name with ``bn`` replaced by ``conv`` is a prescribed layer follows it and every other norm
#: keeps the default (TempBalance's ``batchnorm_type='name'`` with ``layernorm=False``).
NORMS = ("follow", "base", "name")


@dataclass(frozen=True)
class LayerRow:
    """One layer as a rule sees it.

    Attributes:
        name: layer (module) name.
        param: the layer's weight key.
        depth: block index (embeddings 0, blocks 1..L, head last).
        kind: ``linear``, ``embedding``, ``conv2d``, ... (empty when the input does not say).
        value: the chosen metric (NaN when missing).
        status: ``success``, ``failed`` or ``skipped`` in the input.
        reason: the input's reason for a non-success status.
        num_evals: number of eigenvalues behind the metric (``None`` when not spectral).
        attached: 0-D/1-D parameter keys (biases, norms) that belong to this layer: those of its own
            module (its bias) and the norms next to it.
        unreliable: why the metric is too uncertain to act on (empty when it is not; set from a
            noise file's ``reliable: false`` and ``reliable_reason``).
    """

    name: str
    param: str
    depth: int
    kind: str = "linear"
    value: float = math.nan
    status: str = "success"
    reason: str = ""
    num_evals: int | None = None
    attached: tuple[str, ...] = ()
    unreliable: str = ""

    @property
    def usable(self) -> bool:
        """Measured successfully with a finite metric value."""
        return self.status == "success" and math.isfinite(self.value)

    @property
    def is_layer(self) -> bool:
        """A weight matrix, analysed or not: only tensors skipped for their type (integer or
        quantized weights, tensors of unknown kind) are not. A classifier head too small for a
        spectral fit (fewer eigenvalues than ``min_evals``) is still a layer at its depth."""
        return self.status != "skipped" or self.kind not in ("", "skipped", "vector", "buffer")


@dataclass(frozen=True)
class Decision:
    """A rule's verdict on one row: a multiplier, or NaN (the default) with a reason."""

    multiplier: float
    reason: str = ""

    @property
    def prescribed(self) -> bool:
        return math.isfinite(self.multiplier)


def leave(reason: str) -> Decision:
    """A decision that leaves the layer at the default multiplier."""
    return Decision(math.nan, reason)


@dataclass(frozen=True)
class RuleInfo:
    """A registered rule.

    Attributes:
        name: the ``--method`` name.
        fn: ``fn(rows, **options) -> list[Decision]``.
        description: one line for ``spectra prescribe --list``.
        inputs: where rows come from (one of :data:`INPUTS`).
        metric: the metric read by default (``depth`` for depth rules).
        target: ``lr`` or ``weight_decay``.
        norms: default for ``--norms`` (:data:`NORMS`): what the norms next to a layer do.
        clip: default ``(lo, hi)`` clip, or ``None``.
        defaults: the rule's own options and their default values.
        source: citation (paper and code) for the formula.
    """

    name: str
    fn: Callable[..., list[Decision]]
    description: str
    inputs: str = "analysis"
    metric: str = "alpha"
    target: str = "lr"
    norms: str = "follow"
    clip: tuple[float, float] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The rule's defaults updated by ``options``; unknown names raise :class:`ConfigError`."""
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(f"option {', '.join(unknown)} does not apply to rule {self.name!r} "
                              f"(its options: {valid})")
        resolved = dict(self.defaults)
        resolved.update({k: _coerce(self.name, k, v, self.defaults[k]) for k, v in options.items()})
        return resolved


def _coerce(rule: str, name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the option's default (a ``None`` default takes a number or None);
    anything else is a :class:`ConfigError` naming the option (``--set eigs_thresh=abc``)."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"option {name} of rule {rule!r} must be {what}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
            raise bad("an integer")
        return value
    if isinstance(default, float) or default is None:
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise bad("a string")
    return value


_REGISTRY: dict[str, RuleInfo] = {}


def register_rule(
    name: str,
    *,
    description: str,
    inputs: str = "analysis",
    metric: str = "alpha",
    target: str = "lr",
    norms: str = "follow",
    clip: tuple[float, float] | None = None,
    source: str = "",
    **overrides: Any,
) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` under ``name``; ``overrides`` replace signature defaults.

    The same function may be registered under several names with different defaults (``ulmfit``
    is ``layer-decay`` with ``decay = 1/2.6``).
    """
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    if norms not in NORMS:
        raise ValueError(f"norms must be one of {NORMS}, got {norms!r}")

    def wrap(fn: Callable) -> Callable:
        defaults = {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "metric"
        }
        bad = sorted(set(overrides) - set(defaults))
        if bad:
            raise ValueError(f"{name}: overrides {bad} are not options of {fn.__name__}")
        defaults.update(overrides)
        if name in _REGISTRY:
            raise ValueError(f"rule {name!r} is already registered")
        _REGISTRY[name] = RuleInfo(name=name, fn=fn, description=description, inputs=inputs, metric=metric,
                                   target=target, norms=norms, clip=clip, defaults=defaults, source=source)
        return fn

    return wrap


def get_rule(name: str) -> RuleInfo:
    """The rule registered as ``name``; an unknown name raises :class:`ConfigError` listing all."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown prescription method {name!r}; choose one of: "
                          f"{', '.join(sorted(_REGISTRY))}") from None


def list_rules(pattern: str = "*") -> list[RuleInfo]:
    """Registered rules whose name matches the shell pattern, sorted by name."""
    _load_builtin()
    return [_REGISTRY[n] for n in sorted(_REGISTRY) if fnmatch.fnmatch(n, pattern)]


def _load_builtin() -> None:
    from . import rules_depth, rules_feedback, rules_htsr  # noqa: F401  (registration side effect)


def run_rule(info: RuleInfo, rows: Sequence[LayerRow], options: Mapping[str, Any], metric: str) -> list[Decision]:
    """Call a rule and check that it returned one decision per row."""
    kwargs = dict(options)
    if "metric" in inspect.signature(info.fn).parameters:
        kwargs["metric"] = metric
    decisions = list(info.fn(list(rows), **kwargs))
    if len(decisions) != len(rows):  # a bug in the rule, not user input
        raise AssertionError(f"rule {info.name} returned {len(decisions)} decisions for {len(rows)} rows")
    return decisions
