"""``--help`` reads like the README: flags without a type, arguments in upper case, per-command texts."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from spectra.cli import app
from tests.test_docs import COMMANDS

runner = CliRunner()


def _command(path: tuple[str, ...]):
    cmd = get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_no_bool_type_and_plain_usage(command):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.stdout
    usage = next(line for line in res.stdout.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage
    for param in _command(command).params:
        if param.param_type_name == "argument":
            assert param.name.upper() in usage


def test_root_help_has_no_bool():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "<bool>" not in res.stdout and "--debug" in res.stdout


@pytest.mark.parametrize("command, mentions, avoids", [
    ("analyze", "bootstrap", "model's initialisation"),
    ("noise", "data order", "bootstrap"),
    ("retrain", "initialisation", "bootstrap"),
])
def test_seed_help_fits_the_command(command, mentions, avoids):
    seed = next(p for p in _command((command,)).params if p.name == "seed")
    assert mentions in seed.help and avoids not in seed.help


def test_save_esd_needs_npz_and_reports_the_file_written(tiny_safetensors, tmp_path):
    res = runner.invoke(app, ["analyze", str(tiny_safetensors), "--save-esd", str(tmp_path / "e.txt")])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and ".npz" in res.stderr
    assert not list(tmp_path.glob("e.txt*"))  # refused before any work
    res = runner.invoke(app, ["analyze", str(tiny_safetensors), "-q", "--save-esd", str(tmp_path / "e.npz")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.npz").is_file()
    res = runner.invoke(app, ["analyze", str(tiny_safetensors), "--save-esd", str(tmp_path / "f.npz")])
    assert f"wrote {tmp_path / 'f.npz'}" in res.stderr
