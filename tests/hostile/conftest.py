"""Shared helpers of the hostile-input suite: run the CLI and check the one-line error contract."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from spectra.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_error(result, needle: str | None = None) -> str:
    """Exit 2, stderr exactly one ``error: ...`` line (naming ``needle``), no traceback anywhere."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    if needle is not None:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def small_ckpt(tmp_path):
    """A two-layer safetensors checkpoint (analysed in well under a second)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file({"h.0.fc.weight": torch.randn(64, 32, generator=g), "h.1.fc.weight": torch.randn(32, 32, generator=g),
               "h.1.fc.bias": torch.zeros(32)}, str(path))
    return path


@pytest.fixture
def analysis_json(tmp_path, small_ckpt):
    """The valid analysis of ``small_ckpt`` as a dict, and a function writing variants of it."""
    from spectra import analyze

    data = analyze(small_ckpt).to_dict()

    def write(name: str, content) -> "Path":
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return data, write
