"""Optimizers and param groups: DALS, baseline strategies, schedules and the optimizer registry.

* :func:`param_groups` / :func:`apply_lrmap`: torch param groups from an LR map, keyed by parameter
  name (``group["lr"]`` already includes the layer multiplier).
* :class:`DALS`: the layer-and-time aware optimizer (a reconstruction, see :mod:`spectra.optim.dals`).
* :func:`create_optimizer` / :func:`list_optimizers`: every training strategy by name.
"""

from .dals import DALS
from .factory import OptimizerInfo, create_optimizer, get_optimizer_info, list_optimizers, register_optimizer
from .grokfast import Grokfast
from .lamb import Lamb
from .lars import Lars
from .lookahead import Lookahead
from .param_groups import apply_lrmap, param_groups

__all__ = [
    "DALS",
    "Grokfast",
    "Lamb",
    "Lars",
    "Lookahead",
    "OptimizerInfo",
    "create_optimizer",
    "get_optimizer_info",
    "list_optimizers",
    "register_optimizer",
    "param_groups",
    "apply_lrmap",
]
