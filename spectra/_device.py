"""One rule for ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (shared by every command)."""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or empty) -> cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    name = "auto" if device in (None, "") else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available; use --device cpu or auto")
    if name == "cpu" or name.startswith("cuda"):
        try:
            return torch.device(name)
        except RuntimeError:
            pass
    raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
