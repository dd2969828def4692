"""Layerwise learning-rate maps from spectral metrics (``spectra prescribe``).

>>> from spectra.prescribe import list_rules
>>> "tempbalance" in [rule.name for rule in list_rules()]
True

A rule is registered with :func:`register_rule` and turned into an :class:`LRMap` by
:func:`prescribe`; :func:`spectra.optim.param_groups` turns the map into torch param groups.
"""

from .build import (NORMALIZE, REFERENCE_ANALYSIS, analysis_metrics, parse_clip, prescribe, rows_from_analysis,
                    rows_from_diff, rows_from_noise)
from .lrmap import LRMAP_SCHEMA, LayerEntry, LRMap
from .registry import Decision, LayerRow, RuleInfo, get_rule, list_rules, register_rule

__all__ = [
    "prescribe",
    "LRMap",
    "LayerEntry",
    "LRMAP_SCHEMA",
    "list_rules",
    "get_rule",
    "register_rule",
    "RuleInfo",
    "LayerRow",
    "Decision",
    "NORMALIZE",
    "REFERENCE_ANALYSIS",
    "analysis_metrics",
    "parse_clip",
    "rows_from_analysis",
    "rows_from_noise",
    "rows_from_diff",
]
