"""spectra: spectral diagnostics for neural networks.

Reads a checkpoint one tensor at a time, computes every weight matrix's eigenvalue spectrum and
heavy-tail exponent alpha (HT-SR), measures gradient noise and update geometry, turns those into
layerwise learning-rate maps and retrains with the DALS optimizer.

>>> import torch, spectra
>>> result = spectra.analyze({"fc.weight": torch.randn(128, 64)})
>>> result.layers[0].status
'success'

The submodules ``spectra.prescribe``, ``spectra.noise`` and ``spectra.diff`` keep their module names
(their main functions are ``spectra.prescribe.prescribe``, ``spectra.noise.measure_noise`` and
``spectra.diff.diff``); the result types are exported here.
"""

from ._version import __version__
from .analysis import AnalyzeConfig, analyze
from .errors import CheckpointError, ConfigError, FitError, FormatError, SpectraError, TaskError
from .io import open_checkpoint
from .results import Analysis, LayerResult

__all__ = [
    "__version__",
    "analyze",
    "AnalyzeConfig",
    "open_checkpoint",
    "Analysis",
    "LayerResult",
    "LRMap",
    "NoiseResult",
    "DiffResult",
    "SpectraError",
    "CheckpointError",
    "ConfigError",
    "FitError",
    "FormatError",
    "TaskError",
]

_LAZY = {"LRMap": "spectra.prescribe", "NoiseResult": "spectra.noise", "DiffResult": "spectra.diff"}


def __getattr__(name: str):
    # result types of the heavier subsystems load on first use, so `import spectra` stays light
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spectra' has no attribute {name!r}")
