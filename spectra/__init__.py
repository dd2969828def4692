"""spectra: spectral diagnostics for neural networks.

Reads a checkpoint one tensor at a time, computes every weight matrix's eigenvalue spectrum and
heavy-tail exponent alpha (HT-SR), measures gradient noise and update geometry, turns those into
layerwise learning-rate maps and retrains with the DALS optimizer.
"""

from ._version import __version__
from .errors import CheckpointError, ConfigError, FitError, FormatError, SpectraError, TaskError
from .analysis import AnalyzeConfig, analyze
from .io import open_checkpoint
from .results import Analysis, LayerResult

__all__ = [
    "__version__",
    "analyze",
    "AnalyzeConfig",
    "open_checkpoint",
    "Analysis",
    "LayerResult",
    "SpectraError",
    "CheckpointError",
    "ConfigError",
    "FitError",
    "FormatError",
    "TaskError",
]
