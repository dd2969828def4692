"""Layerwise learning-rate maps from spectral metrics (``spectra prescribe``)."""

from .lrmap import LRMAP_SCHEMA, LayerEntry, LRMap

__all__ = ["LRMap", "LayerEntry", "LRMAP_SCHEMA"]
