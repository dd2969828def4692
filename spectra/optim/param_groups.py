"""Torch param groups from a layerwise learning-rate map, keyed by parameter name.

:func:`param_groups` is the bridge between a diagnosis (an :class:`~spectra.prescribe.LRMap`) and
any torch optimizer: it returns a plain ``list[dict]`` that ``torch.optim.AdamW``, Hugging Face
``Trainer`` (``optimizers=(opt, None)``) or a Lightning ``configure_optimizers`` accept as is.

Convention (binding across spectra): ``group["lr"]`` already includes the layer's multiplier,
``lr = base_lr * lr_multiplier``. The multiplier is also kept under ``lr_multiplier`` so a loop that
overwrites the LR every step (nanoGPT style) can keep the map with
``g["lr"] = lr_t * g.get("lr_multiplier", 1.0)``. Optimizers, DALS included, never multiply by
``lr_multiplier`` again. The key ``lr_scale`` is never used: timm's scheduler would apply it a
second time.

Grouping follows minGPT's invariant: every trainable parameter lands in exactly one group (tied
weights once, under their first name), checked before returning. Parameters are grouped by layer
(``spectra.layers`` rules: a weight is its own module's layer, a bias or norm weight follows its
layer), multiplier and weight decay, so each group also carries ``layer`` and ``depth`` (embeddings
0, blocks 1..L, head last), which depth-aware optimizers read. As in nanoGPT and timm's
``param_groups_weight_decay``, 0-D and 1-D parameters (biases, norm weights) get no weight decay when
``no_decay_1d`` is true.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from torch import nn

from ..errors import ConfigError
from ..layers import assign_depths, attach_vectors, classify, module_name

if TYPE_CHECKING:  # pragma: no cover
    from torch.optim import Optimizer

    from ..prescribe.lrmap import LRMap

__all__ = ["param_groups", "apply_lrmap", "check_lrmap", "align_keys", "Coverage", "layer_index"]

_logger = logging.getLogger(__name__)
_SHOW = 8  # names listed in a message before "... and N more"


@dataclass(frozen=True)
class Coverage:
    """How a map's keys line up with a model's trainable parameters.

    Attributes:
        unmatched: map keys that name no parameter of the model (a different model, a renamed
            module), sorted.
        uncovered: trainable parameters the map does not mention (they get the map's default
            multiplier), in model order.
    """

    unmatched: tuple[str, ...]
    uncovered: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.unmatched and not self.uncovered

    def message(self) -> str:
        parts = []
        if self.unmatched:
            parts.append(f"{len(self.unmatched)} map entries match no parameter ({_names(self.unmatched)})")
        if self.uncovered:
            parts.append(f"{len(self.uncovered)} parameters are not in the map and get the default "
                         f"multiplier ({_names(self.uncovered)})")
        return "; ".join(parts)


def _names(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_SHOW])
    return shown + (f", ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def _trainable(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], dict[str, str]]:
    """Trainable parameters once each (first name) and every alias name -> that first name."""
    first: dict[int, str] = {}
    params: list[tuple[str, nn.Parameter]] = []
    alias: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if not p.requires_grad:
            continue
        canonical = first.setdefault(id(p), name)  # identity only to detect ties; results are by name
        if canonical == name:
            params.append((name, p))
        alias[name] = canonical
    return params, alias


def _frozen_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def layer_index(names_shapes: Iterable[tuple[str, tuple[int, ...]]]) -> dict[str, tuple[str, int]]:
    """``param name -> (layer name, depth)`` with the rules of :mod:`spectra.layers`.

    >>> idx = layer_index([("emb.weight", (10, 4)), ("blocks.0.fc.weight", (4, 4)),
    ...                    ("blocks.0.fc.bias", (4,)), ("head.weight", (3, 4))])
    >>> idx["blocks.0.fc.bias"], idx["head.weight"]
    (('blocks.0.fc', 1), ('head', 2))
    """
    items = list(names_shapes)
    specs = [classify(name, shape, "float32") for name, shape in items]
    layer_specs = [s for s in specs if s.is_layer]
    layer_names = [s.name for s in layer_specs]
    depths = assign_depths(layer_names, [s.kind for s in layer_specs])
    vectors = [s.key for s in specs if not s.is_layer]
    owners = attach_vectors([s.key for s in specs], layer_names, vectors)
    index: dict[str, tuple[str, int]] = {}
    for spec in specs:
        if spec.is_layer:
            index[spec.key] = (spec.name, depths[spec.name])
        else:
            owner = owners.get(spec.key)
            if owner is None:  # a model with no matrices at all
                index[spec.key] = (module_name(spec.key), 0)
            else:
                index[spec.key] = (owner, depths[owner])
    return index


def align_keys(lrmap: "LRMap", names: Iterable[str]) -> "LRMap":
    """``lrmap`` with its keys renamed to match ``names`` when they differ by one leading prefix.

    A map made from a checkpoint saved under a wrapper (``module.`` from DDP, ``model.`` from
    Lightning) or from the bare backbone of a task model (``bert.``) names the same tensors with
    a prefix more or less. When adding or removing one prefix matches more keys than the keys as
    they are, every key that matches after the change is renamed (and this is logged).

    >>> from spectra.prescribe import LRMap
    >>> align_keys(LRMap(method="m", params={"module.fc.weight": 2.0}), ["fc.weight"]).params
    {'fc.weight': 2.0}
    """
    import dataclasses

    names = set(names)
    keys = lrmap.keys()
    exact = len(keys & names)
    if not keys or exact == len(keys):
        return lrmap
    candidates: set[tuple[str, str]] = set()
    sample = sorted(keys - names)[:32]
    for name in names:
        for key in sample:
            if name.endswith("." + key):
                candidates.add(("add", name[: len(name) - len(key)]))
            elif key.endswith("." + name):
                candidates.add(("strip", key[: len(key) - len(name)]))

    def rename(key: str, how: str, prefix: str) -> str:
        if how == "add":
            return prefix + key
        return key[len(prefix):] if key.startswith(prefix) else key

    best, best_count = None, exact
    for how, prefix in sorted(candidates):
        count = sum(1 for k in keys if rename(k, how, prefix) in names)
        if count > best_count:
            best, best_count = (how, prefix), count
    if best is None:
        return lrmap
    _logger.info("LR map keys %s the prefix %r to match the model (%d of %d keys match)",
                 "gain" if best[0] == "add" else "lose", best[1], best_count, len(keys))

    def moved(table):
        if table is None:
            return None
        out = {}
        for k, v in table.items():
            new = rename(k, *best)
            out[new if new in names else k] = v
        return out

    return dataclasses.replace(lrmap, params=moved(lrmap.params), wd_params=moved(lrmap.wd_params))


def check_lrmap(model: nn.Module, lrmap: "LRMap") -> Coverage:
    """Compare the keys of ``lrmap`` with the trainable parameters of ``model``.

    A key that names a tied alias (``lm_head.weight`` tied to ``embed.weight``) or a frozen
    parameter counts as matched; keys are first aligned with :func:`align_keys`.
    """
    params, alias = _trainable(model)
    known = set(alias) | _frozen_names(model)
    lrmap = align_keys(lrmap, known)
    keys = lrmap.keys()
    unmatched = tuple(sorted(k for k in keys if k not in known))
    covered = {alias[k] for k in keys if k in alias}
    uncovered = tuple(name for name, _ in params if name not in covered)
    return Coverage(unmatched=unmatched, uncovered=uncovered)


def _lookup(lrmap: "LRMap", canonical: str, aliases: list[str]) -> tuple[float, float]:
    """LR and WD multipliers of a parameter, found under its first name or any tied alias."""
    found = [(lrmap.multiplier(n), lrmap.wd_multiplier(n)) for n in [canonical] + [a for a in aliases if a != canonical]
             if lrmap.covers(n)]
    if not found:
        return float(lrmap.default), 1.0
    if len(set(found)) > 1:
        _logger.warning("tied parameter %s (also %s) has different multipliers in the map; using %s's",
                        canonical, ", ".join(a for a in aliases if a != canonical), canonical)
    return found[0]


def param_groups(
    model: nn.Module,
    lrmap: "LRMap | None" = None,
    base_lr: float = 1e-3,
    weight_decay: float = 0.0,
    no_decay_1d: bool = True,
    strict: bool = False,
) -> list[dict[str, Any]]:
    """Torch param groups with per-layer ``lr = base_lr * multiplier``.

    Args:
        model: the module to optimise; only parameters with ``requires_grad`` are included.
        lrmap: multipliers keyed by parameter name (``None``: every multiplier is 1, but the groups
            still carry ``layer`` and ``depth``).
        base_lr: the learning rate a multiplier of 1 stands for.
        weight_decay: base weight decay; a map with ``wd_params`` (AlphaDecay) scales it per layer.
        no_decay_1d: give 0-D/1-D parameters (biases, norm weights) zero weight decay.
        strict: raise :class:`~spectra.errors.ConfigError` when a map entry matches no parameter or
            a trainable parameter is not in the map (otherwise both are logged as warnings).

    Returns:
        A list of dicts with keys ``params``, ``param_names``, ``lr`` (= ``base_lr *
        lr_multiplier``), ``lr_multiplier``, ``weight_decay``, ``depth`` and ``layer``, one per
        (layer, multiplier, weight decay), in model order. Every trainable parameter appears in
        exactly one group.

    Example:
        >>> import torch
        >>> from spectra.prescribe import LRMap
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        >>> lrmap = LRMap(method="demo", params={"0.weight": 0.5, "0.bias": 0.5, "1.weight": 2.0, "1.bias": 2.0})
        >>> groups = param_groups(model, lrmap, base_lr=0.1)
        >>> [(g["layer"], g["lr"]) for g in groups]
        [('0', 0.05), ('1', 0.2)]
        >>> opt = torch.optim.AdamW(groups, lr=0.1)
    """
    if not base_lr >= 0:
        raise ConfigError(f"base_lr must be >= 0, got {base_lr!r}")
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    params, alias = _trainable(model)
    if not params:
        raise ConfigError("the model has no trainable parameters (all have requires_grad=False)")
    if lrmap is not None:
        lrmap = align_keys(lrmap, set(alias) | _frozen_names(model))
        _report(check_lrmap(model, lrmap), strict)
    aliases: dict[str, list[str]] = {}
    for name, canonical in alias.items():
        aliases.setdefault(canonical, []).append(name)
    index = layer_index((name, tuple(p.shape)) for name, p in params)

    groups: dict[tuple, dict[str, Any]] = {}
    for name, p in params:
        lr_mult, wd_mult = (1.0, 1.0) if lrmap is None else _lookup(lrmap, name, aliases[name])
        decay = 0.0 if (no_decay_1d and p.ndim <= 1) else weight_decay * wd_mult
        layer, depth = index[name]
        key = (layer, lr_mult, decay)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "params": [],
                "param_names": [],
                "lr": base_lr * lr_mult,
                "lr_multiplier": lr_mult,
                "weight_decay": decay,
                "depth": depth,
                "layer": layer,
            }
        group["params"].append(p)
        group["param_names"].append(name)
    result = list(groups.values())
    _check_partition(result, [name for name, _ in params])
    return result


def _report(coverage: Coverage, strict: bool) -> None:
    if coverage.ok:
        return
    if strict:
        raise ConfigError(f"the LR map does not fit the model: {coverage.message()} "
                          "(was the map made for this model? use strict=False to accept)")
    _logger.warning("LR map vs model: %s", coverage.message())


def _check_partition(groups: list[dict[str, Any]], names: list[str]) -> None:
    """minGPT's invariant: every trainable parameter in exactly one group."""
    seen = [n for g in groups for n in g["param_names"]]
    if len(seen) != len(set(seen)) or set(seen) != set(names):
        missing = sorted(set(names) - set(seen))
        raise AssertionError(f"param groups are not a partition of the parameters (missing {missing})")


def apply_lrmap(optimizer: "Optimizer", lrmap: "LRMap", *, model: nn.Module | None = None) -> Coverage:
    """Apply ``lrmap`` to an optimizer that already exists, in place.

    The base LR of each group is recovered as ``group["lr"] / group.get("lr_multiplier", 1)`` and a
    parameter's new LR is ``base * multiplier``. Groups whose parameters need different multipliers
    are split (optimizer state is keyed by parameter, so it is kept); call this before creating an
    LR scheduler, which records one base LR per group. ``initial_lr`` (set by schedulers) is
    rescaled too. With ``wd_params`` the weight decay of groups that decay is rescaled likewise.

    Parameter names come from each group's ``param_names`` (groups built by :func:`param_groups`)
    or, for any optimizer, from ``model.named_parameters()``.

    Returns:
        The :class:`Coverage` of the map over the optimizer's parameters.

    Example:
        >>> import torch
        >>> from spectra.prescribe import LRMap
        >>> model = torch.nn.Linear(3, 3)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> _ = apply_lrmap(opt, LRMap(method="demo", params={"weight": 3.0, "bias": 3.0}), model=model)
        >>> round(opt.param_groups[0]["lr"], 6), opt.param_groups[0]["lr_multiplier"]
        (0.3, 3.0)
    """
    names_by_param: dict[int, str] = {}
    if model is not None:
        for name, p in model.named_parameters():
            names_by_param.setdefault(id(p), name)
    grouped = [_group_names(group, names_by_param) for group in optimizer.param_groups]
    known_names = {n for names in grouped for n in names}
    if model is not None:
        known_names |= {n for n, _ in model.named_parameters(remove_duplicate=False)}
    lrmap = align_keys(lrmap, known_names)
    new_groups: list[dict[str, Any]] = []
    all_names: list[str] = []
    for group, names in zip(optimizer.param_groups, grouped):
        all_names.extend(names)
        old_lr_mult = float(group.get("lr_multiplier", 1.0))
        old_wd_mult = float(group.get("wd_multiplier", 1.0))
        parts: dict[tuple[float, float], dict[str, list]] = {}
        for p, name in zip(group["params"], names):
            lr_mult, wd_mult = lrmap.multiplier(name), lrmap.wd_multiplier(name)
            part = parts.setdefault((lr_mult, wd_mult), {"params": [], "param_names": []})
            part["params"].append(p)
            part["param_names"].append(name)
        for (lr_mult, wd_mult), part in parts.items():
            new = {k: v for k, v in group.items() if k not in ("params", "param_names")}
            new.update(part)
            base = group["lr"] / old_lr_mult if old_lr_mult else group["lr"]
            new["lr"] = base * lr_mult
            if "initial_lr" in group:
                initial = group["initial_lr"] / old_lr_mult if old_lr_mult else group["initial_lr"]
                new["initial_lr"] = initial * lr_mult
            new["lr_multiplier"] = lr_mult
            if lrmap.wd_params and group.get("weight_decay", 0.0):
                base_wd = group["weight_decay"] / old_wd_mult if old_wd_mult else group["weight_decay"]
                new["weight_decay"] = base_wd * wd_mult
                new["wd_multiplier"] = wd_mult
            new_groups.append(new)
    optimizer.param_groups[:] = new_groups
    known = set(all_names)
    if model is not None:  # tied aliases and frozen parameters of the model count as matched
        known |= {n for n, _ in model.named_parameters(remove_duplicate=False)}
    coverage = Coverage(unmatched=tuple(sorted(k for k in lrmap.keys() if k not in known)),
                        uncovered=tuple(n for n in all_names if not lrmap.covers(n)))
    if not coverage.ok:
        _logger.warning("LR map vs optimizer: %s", coverage.message())
    return coverage


def _group_names(group: dict[str, Any], names_by_param: dict[int, str]) -> list[str]:
    if "param_names" in group and len(group["param_names"]) == len(group["params"]):
        return [str(n) for n in group["param_names"]]
    if not names_by_param:
        raise ConfigError("the optimizer's param groups carry no 'param_names'; build them with "
                          "spectra.optim.param_groups(model, ...) or call apply_lrmap(optimizer, lrmap, model=model)")
    try:
        return [names_by_param[id(p)] for p in group["params"]]
    except KeyError:
        raise ConfigError("the optimizer holds parameters that are not in the given model") from None
