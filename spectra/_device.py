"""One rule for ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (shared by every command)."""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["check_device", "resolve_device"]


def check_device(device: str | torch.device | None) -> str:
    """The device name if it is ``auto`` (or empty), ``cpu``, ``cuda`` or ``cuda:N``; else a ConfigError.

    Checks the spelling only, so a config can be validated on a machine without a GPU.

    >>> check_device("cuda:1")
    'cuda:1'
    """
    name = "auto" if device in (None, "") else str(device)
    if name in ("auto", "cpu"):
        return name
    if name.startswith("cuda"):
        try:
            torch.device(name)
            return name
        except RuntimeError:
            pass
    raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or empty) -> cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    name = check_device(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available; use --device cpu or auto")
    return torch.device(name)
