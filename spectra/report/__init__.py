"""The self-contained HTML report: ``render_report(analyses, ...) -> str`` and ``write_report``.

Sections: header, alerts, summary cards, alpha and norms against depth, per-layer ESD small
multiples (click to enlarge), trajectory across checkpoints, LR map, gradient noise, update
geometry, a sortable/filterable layer table and a methods appendix. Needs the ``report`` extra.

>>> from spectra.report import write_report                     # doctest: +SKIP
>>> write_report(["analysis.json"], "report.html", lrmap="lrmap.json")  # doctest: +SKIP
"""

from .render import load_analysis, load_json, render_report, safe_json, write_report

__all__ = ["render_report", "write_report", "load_analysis", "load_json", "safe_json"]
