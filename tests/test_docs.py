"""Meta-tests: every CLI command has help text and is documented in the README."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from spectra.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
runner = CliRunner()


def _commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for info in typer_app.registered_commands:
        found.append(prefix + (info.name or info.callback.__name__.replace("_", "-"),))
    for group in typer_app.registered_groups:
        found.extend(_commands(group.typer_instance, prefix + (group.name,)))
    return found


COMMANDS = _commands(app)


def test_expected_commands_exist():
    names = {" ".join(c) for c in COMMANDS}
    assert {"analyze", "prescribe", "noise", "diff", "retrain", "report", "demo", "bench strategies"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_command_has_help_and_is_in_readme(command):
    res = runner.invoke(app, [*command, "--help"])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.strip().splitlines()) > 3
    assert f"spectra {' '.join(command)}" in README, f"README does not document `spectra {' '.join(command)}`"


def test_readme_test_command_is_what_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    command = ci.strip().splitlines()[-1]
    assert command in README
    assert "pytest" in command
