"""From whatever a training script saved to a flat ``{key: tensor}`` state dict.

Rules, in order (see the research notes, "How checkpoints come in practice"):

1. ``nn.Module`` -> its ``state_dict()``.
2. A mapping with no tensors at its top level is a wrapper: the first of ``state_dict``,
   ``model_state_dict``, ``model``, ``module``, ``network`` that holds tensors is taken (Lightning
   ``.ckpt`` files, ``{"model": ..., "optimizer": ..., "epoch": ...}`` training scripts, DeepSpeed).
3. Nested mappings are flattened with dotted keys; non-tensor leaves (epoch, hyper-parameters) and
   the optimizer entries are not weights and are dropped (logged at debug level).
4. Tied tensors (same storage, offset, shape and stride: ``lm_head.weight is embed.weight``) are
   kept once under their first key; the other keys are reported as aliases.

Prefix stripping (:func:`strip_prefixes`) is separate because it needs every key of every shard.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import CheckpointError
from .base import TensorInfo, dtype_name, unreadable_reason

__all__ = [
    "WRAPPER_KEYS",
    "OPTIMIZER_KEYS",
    "STRIP_PREFIXES",
    "extract_state_dict",
    "find_optimizer_state",
    "strip_prefixes",
    "dedupe_tied",
    "MemoryShard",
]

log = logging.getLogger(__name__)

#: Top-level keys that wrap the weights, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "network")
#: Top-level keys that hold an optimizer state dict (``optimizer_states`` is Lightning's list).
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optim", "optimizer_states", "optimizer_state")
#: Prefixes removed when every key carries them: DDP's ``module.``, torch.compile's ``_orig_mod.``
#: and a Lightning-style ``model.`` (only this exact name, only when it is on every key).
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")
#: Deepest nesting of mappings read from a checkpoint (module paths are far shallower).
MAX_NESTING = 32
_NOT_WEIGHTS = set(OPTIMIZER_KEYS) | {"lr_schedulers", "scheduler", "lr_scheduler", "callbacks", "loops"}


def _has_tensor(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping) and depth < 8:
        return any(_has_tensor(v, depth + 1) for v in obj.values())
    return False


def extract_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The flat weights dict inside ``obj`` (a module, a state dict, a training checkpoint).

    ``where`` names the source in error messages. Raises CheckpointError when ``obj`` is not a
    mapping or holds no tensors.
    """
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{where}: holds a single tensor, not a state dict of named tensors")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    top = obj
    while not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                log.debug("%s: weights are the module under %r", where, key)
                return dict(inner.state_dict())
            if isinstance(inner, Mapping) and _has_tensor(inner):
                log.debug("%s: weights are under %r", where, key)
                obj = inner
                break
        else:
            break
    flat: dict[str, torch.Tensor] = {}
    _flatten(obj, "", flat, where, top_level=True)
    if not flat:
        keys = ", ".join(map(str, list(top)[:10])) or "none"
        raise CheckpointError(f"{where}: holds no tensors (top-level keys: {keys})")
    return flat


def _flatten(obj: Mapping, prefix: str, out: dict, where: str, *, top_level: bool, depth: int = 0) -> None:
    if depth > MAX_NESTING:  # also ends a mapping that contains itself
        raise CheckpointError(f"{where}: holds mappings nested deeper than {MAX_NESTING} levels "
                              "(or a mapping that contains itself); not a state dict")
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if top_level and key in _NOT_WEIGHTS:
            log.debug("%s: %r is not weights, skipped", where, key)
        elif isinstance(value, torch.Tensor):
            if value.is_nested:
                raise CheckpointError(f"{where}: tensor {name[:200]!r} is a nested tensor; not a state dict of weights")
            out.setdefault(name, value)
        elif isinstance(value, Mapping):
            _flatten(value, f"{name}.", out, where, top_level=False, depth=depth + 1)
        else:
            log.debug("%s: %r is a %s, not a tensor; skipped", where, name, type(value).__name__)


def find_optimizer_state(obj: Any) -> dict | None:
    """The optimizer state dict stored next to the weights, or None.

    Looks at ``optimizer``, ``optimizer_state_dict``, ``optim``, ``optimizer_states[0]``
    (Lightning) and ``optimizer_state``; a bare optimizer state dict (``{"state", "param_groups"}``,
    as in an HF Trainer ``optimizer.pt``) is returned as is.
    """
    if not isinstance(obj, Mapping):
        return None
    if "state" in obj and "param_groups" in obj:
        return dict(obj)
    for key in OPTIMIZER_KEYS:
        value = obj.get(key)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, Mapping) and value:
            return dict(value)
        if isinstance(value, torch.optim.Optimizer):
            return value.state_dict()
    return None


def strip_prefixes(keys: list[str]) -> tuple[dict[str, str], str]:
    """Map stored keys to public keys by removing prefixes every key shares.

    Repeats while one of :data:`STRIP_PREFIXES` is on every key (``module._orig_mod.x`` -> ``x``).
    Returns ``({stored: public}, removed_prefix)``.

    >>> strip_prefixes(["module.fc.weight", "module.fc.bias"])
    ({'module.fc.weight': 'fc.weight', 'module.fc.bias': 'fc.bias'}, 'module.')
    >>> strip_prefixes(["model.fc.weight", "head.weight"])[1]
    ''
    """
    removed = ""
    current = list(keys)
    while current:
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) and len(k) > len(prefix) for k in current):
                current = [k[len(prefix):] for k in current]
                removed += prefix
                break
        else:
            break
    return dict(zip(keys, current)), removed


def _storage_id(t: torch.Tensor) -> tuple | None:
    if t.numel() == 0 or t.device.type == "meta":
        return None
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    if ptr == 0:
        return None
    return (t.device.type, ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def dedupe_tied(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tied duplicates: ``({key: tensor} without them, {alias_key: kept_key})``."""
    seen: dict[tuple, str] = {}
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for key, tensor in tensors.items():
        ident = _storage_id(tensor)
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        kept[key] = tensor
    return kept, aliases


class MemoryShard:
    """An in-memory state dict (already flattened and de-duplicated)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], name: str) -> None:
        self.name = name
        self._tensors = dict(tensors)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def info(self, key: str) -> TensorInfo:
        t = self._tensors[key]
        return TensorInfo(key, tuple(t.shape), dtype_name(t.dtype))

    def get(self, key: str) -> torch.Tensor:
        tensor = self._tensors[key]
        reason = unreadable_reason(tensor)
        if reason is not None:
            raise CheckpointError(f"{self.name}: tensor {key[:200]!r} is {reason}")
        return tensor.detach().to("cpu")

    def release(self) -> None:
        """The caller owns the tensors; nothing to drop."""

    def close(self) -> None:
        self._tensors = {}
