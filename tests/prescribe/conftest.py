"""A small fixed table of alphas shared by the prescription tests (values chosen for hand arithmetic)."""

from __future__ import annotations

import math

import pytest

from spectra.prescribe import LayerRow
from spectra.results import Analysis, LayerResult

#: name, kind, depth, alpha (every layer has 100 eigenvalues)
TABLE = [
    ("embed", "embedding", 0, 5.0),
    ("layers.0.attn", "linear", 1, 2.0),
    ("layers.0.mlp", "linear", 1, 3.0),
    ("layers.1.attn", "linear", 2, 4.0),
    ("layers.1.mlp", "linear", 2, 6.0),
    ("lm_head", "linear", 3, 3.5),
]
ATTACHED = {
    "layers.0.ln.weight": "layers.0.attn",
    "layers.0.attn.bias": "layers.0.attn",
    "layers.1.mlp.bias": "layers.1.mlp",
    "norm.weight": "layers.1.mlp",
}


def make_analysis(table=TABLE, attached=ATTACHED, **overrides) -> Analysis:
    """An Analysis built by hand: ``overrides`` maps a layer name to LayerResult field changes."""
    recs = []
    for name, kind, depth, alpha in table:
        fields = dict(name=name, param=f"{name}.weight", kind=kind, shape=(100, 100), depth=depth, num_evals=100,
                      alpha=alpha, stable_rank=10.0 * alpha)
        fields.update(overrides.get(name, {}))
        recs.append(LayerResult(**fields))
    return Analysis(layers=tuple(recs), summary={}, config={}, checkpoint="table", created="", attached=dict(attached))


def make_rows(values, kind="linear", num_evals=100, start_depth=1) -> list[LayerRow]:
    """Rows ``h.i.fc`` with the given metric values (NaN values are marked failed)."""
    rows = []
    for i, v in enumerate(values):
        status = "success" if math.isfinite(v) else "failed"
        rows.append(LayerRow(f"h.{i}.fc", f"h.{i}.fc.weight", start_depth + i, kind, v, status, num_evals=num_evals))
    return rows


@pytest.fixture
def analysis() -> Analysis:
    return make_analysis()


@pytest.fixture(name="make_analysis")
def _make_analysis_fixture():
    return make_analysis


@pytest.fixture(name="make_rows")
def _make_rows_fixture():
    return make_rows
