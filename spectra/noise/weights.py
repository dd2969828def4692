"""Put a checkpoint's weights into a task's model, on the requested device (used by noise and diff)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from .._device import resolve_device
from ..errors import CheckpointError

__all__ = ["resolve_device", "load_weights"]

log = logging.getLogger(__name__)


def load_weights(model: torch.nn.Module, source: Any, *, trust_pickle: bool = False) -> str:
    """Load a checkpoint's tensors into ``model`` (non-strict, shapes checked); returns its display name."""
    from ..io import open_checkpoint

    with open_checkpoint(source, trust_pickle=trust_pickle) as ckpt:
        state = {key: tensor for key, tensor in ckpt}
        where = str(ckpt.path)
    own = model.state_dict()
    state = _align_prefix(state, own)
    bad = [f"{k} {tuple(t.shape)} vs model {tuple(own[k].shape)}"
           for k, t in state.items() if k in own and tuple(t.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{where}: shapes do not fit the task's model: {'; '.join(bad[:3])}")
    matched = [k for k in state if k in own]
    if not matched:
        raise CheckpointError(f"{where}: none of its {len(state)} tensors are in the task's model "
                              f"(model keys look like {next(iter(own), '?')!r}, checkpoint keys like "
                              f"{next(iter(state), '?')!r})")
    missing = [k for k in own if k not in state]
    if missing:
        log.warning("%s: %d model tensors not in the checkpoint keep their initial values (e.g. %s)",
                    where, len(missing), missing[0])
    model.load_state_dict({k: state[k] for k in matched}, strict=False)
    return where


def _align_prefix(state: dict[str, torch.Tensor], own: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Prepend the model's wrapper prefix when the checkpoint holds only a submodule.

    A bare encoder file (``embeddings.word_embeddings.weight``) fits a task model that wraps it
    (``encoder.embeddings.word_embeddings.weight``) when one prefix makes most keys match.
    """
    if not state or sum(k in own for k in state) * 2 >= len(state):
        return state
    first = next(iter(state))
    prefixes = {k[: -len(first)] for k in own if k.endswith("." + first)}
    best = max(prefixes, key=lambda p: sum(p + k in own for k in state), default=None)
    if best is None or sum(best + k in own for k in state) * 2 < len(state):
        return state
    log.info("checkpoint keys matched under the model prefix %r", best)
    return {best + k: v for k, v in state.items()}
