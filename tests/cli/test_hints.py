"""Every ``spectra ...`` command the program suggests to its user is a command that works.

Hints are collected from the source, so a new one is tested without anyone listing it: every
backticked `` `spectra ...` `` in a string literal (error messages, help texts) and every
``Example: spectra ...`` line of a command's help. Placeholders (``CKPT``, ``A B``, ``NAME``, the
file names) are filled with real fixtures; a placeholder this test does not know fails it. Each hint
must parse; the quick ones also run to exit code 0, in dependency order (analysis, noise and diff
files first, then the rules that read them). Training hints (retrain, bench) are only parsed.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

from spectra.cli import app
from spectra.report.browser import find_chromium

SOURCE = Path(__file__).resolve().parents[2] / "spectra"
COMMANDS = ("analyze", "prescribe", "noise", "diff", "retrain", "bench", "report", "demo")
BACKTICKED = re.compile(r"(?<!`)`(spectra (?:%s)\b[^`]*)`(?!`)" % "|".join(COMMANDS))
EXAMPLE = re.compile(r"^\s*Example: (spectra (?:%s)\b.*)$" % "|".join(COMMANDS), re.M)
#: Placeholders in hints and what fills them.
PLACEHOLDERS = {"CKPT": "{ckpt}", "A": "{a}", "B": "{b}", "NAME": "synthetic", "TASK": "synthetic"}
#: Commands that train: parsed, not run (each takes minutes).
PARSE_ONLY = ("retrain", "bench")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (module, class and function docstrings are not printed)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def collect_hints() -> list[str]:
    """Backticked commands in printed strings, plus the ``Example:`` lines of command help."""
    found: dict[str, None] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if id(node) in docs:  # only a command's help (its docstring) is printed, and only its examples
                found.update(dict.fromkeys(" ".join(m.group(1).split()) for m in EXAMPLE.finditer(node.value)))
            else:
                found.update(dict.fromkeys(" ".join(m.group(1).split()) for m in BACKTICKED.finditer(node.value)))
    return list(found)


HINTS = collect_hints()


def test_hints_are_found():
    """The collector sees the hints we know exist (so the parametrised test below is not empty)."""
    assert any(h.startswith("spectra noise ") for h in HINTS)
    assert "spectra prescribe --list" in HINTS and any(h.startswith("spectra diff A B") for h in HINTS)


def _fill(hint: str, files: dict[str, Path]) -> list[str]:
    args = []
    for word in shlex.split(hint)[1:]:
        if word in PLACEHOLDERS:
            word = PLACEHOLDERS[word].format(**{k: str(v) for k, v in files.items()})
        elif re.fullmatch(r"[A-Z][A-Z_]+", word):
            pytest.fail(f"hint {hint!r}: placeholder {word} has no fixture in this test; add one")
        args.append(word)
    return args


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Checkpoints of the synthetic task's model (two seeds) in a fresh working directory."""
    from spectra.train.task import load_task

    root = tmp_path_factory.mktemp("hints")
    files = {}
    for tag, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        path = root / f"{tag}.pt"
        torch.save(load_task("synthetic").model.state_dict(), path)
        files[tag] = path
    files["ckpt"] = files["a"]
    return root, files


def _rest(ctx) -> list[str]:
    return [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]


def _parses(args: list[str]) -> None:
    """Parse ``args`` down to the command's own options, as the CLI would, without running it."""
    cmd = get_command(app)
    ctx = cmd.make_context("spectra", list(args))
    while hasattr(cmd, "resolve_command"):  # the app, then sub-groups (spectra bench strategies)
        name, cmd, rest = cmd.resolve_command(ctx, _rest(ctx))
        ctx = cmd.make_context(name, rest, parent=ctx)


def _order(hint: str) -> int:
    """Producers of files before their readers."""
    first = hint.split()[1]
    return {"analyze": 0, "noise": 0, "diff": 0}.get(first, 1)


@pytest.mark.slow
def test_every_hint_is_accepted(workdir, monkeypatch):
    import spectra.demo

    root, files = workdir
    monkeypatch.chdir(root)
    monkeypatch.setattr(spectra.demo, "minilm_path", lambda: files["a"])  # the demo's pipeline, on a small model
    runner = CliRunner()
    for hint in sorted(HINTS, key=_order):
        args = _fill(hint, files)
        try:
            _parses(args)
        except Exception as exc:  # noqa: BLE001 (click's usage errors)
            pytest.fail(f"hint {hint!r} does not parse: {exc}")
        if args[0] in PARSE_ONLY or ("--screenshot" in args and find_chromium() is None):
            continue
        if args[0] == "noise":
            args += ["--batches", "2"]  # the hint's defaults measure 8 batches: same command, faster
        result = runner.invoke(app, [*args, "-q"] if "-q" not in args and "--list" not in args else args)
        assert result.exit_code == 0, f"hint {hint!r} failed: {result.output}"
