"""Exceptions raised by spectra.

Every error a user can cause (a bad path, a corrupt checkpoint, an option out of range, a file of the
wrong schema) is a :class:`SpectraError` subclass whose message says what was wrong and, where it
can, what to do instead. The CLI prints ``error: <message>`` and exits with code 2 for these; any
other exception is a bug in spectra.
"""

from __future__ import annotations

__all__ = [
    "SpectraError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "FitError",
    "ConfigError",
    "FormatError",
    "TaskError",
    "MissingExtraError",
    "Interrupted",
]


class SpectraError(Exception):
    """Base class for every error spectra raises on purpose."""


class CheckpointError(SpectraError):
    """A checkpoint path is missing, empty, truncated, corrupt or of an unknown format."""


class UnsafeCheckpointError(CheckpointError):
    """A torch checkpoint needs full pickle execution and ``trust_pickle`` was not given."""


class FitError(SpectraError):
    """A spectral fit could not be computed (used where a caller asked for one fit explicitly)."""


class ConfigError(SpectraError, ValueError):
    """An option has an invalid value; the message names the option and the value."""


class FormatError(SpectraError):
    """A spectra JSON file (analysis, lrmap, noise, diff) is unreadable or of the wrong schema."""


class TaskError(SpectraError):
    """A training task could not be found, imported or built."""


class MissingExtraError(SpectraError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this needs the optional package {package!r}: "
            f"pip install 'spectra-hts[{extra}]'"
        )
        self.package = package
        self.extra = extra


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a long computation; ``partial`` holds what was finished (or None).

    A subclass of :class:`KeyboardInterrupt`, so code that does not know about it stops as before;
    the CLI writes ``partial`` to the requested output before exiting with code 130.
    """

    def __init__(self, partial=None) -> None:
        super().__init__("interrupted")
        self.partial = partial


def require(module: str, extra: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module.split(".")[0], extra) from exc
