"""spectra._files: atomic writes and the checks every command runs before its work."""

from __future__ import annotations

import os

import pytest

from spectra._files import atomic_open, atomic_path, atomic_write, check_output_dir, check_outputs
from spectra.errors import ConfigError


def test_atomic_write_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "c.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two" and [p.name for p in path.parent.iterdir()] == ["c.txt"]


def test_new_files_get_the_umask_mode(tmp_path):
    mask = os.umask(0o027)
    try:
        import importlib

        import spectra._files as files

        importlib.reload(files)
        files.atomic_write(tmp_path / "x", "x")
        assert (tmp_path / "x").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)
        importlib.reload(files)


def test_failed_write_keeps_the_old_file(tmp_path):
    (tmp_path / "f.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "f.txt") as fh:
            fh.write("new")
            raise ValueError("writer crashed")
    assert (tmp_path / "f.txt").read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_temporary_name_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")


@pytest.mark.parametrize("outputs, inputs, message", [
    ({"--out": "in.json"}, ["in.json"], "is also an input"),
    ({"--out": "a.json", "--other": "a.json"}, [], "is the same file as --out"),
    ({"--out": "a.txt"}, [], "writes .json here, not .txt"),
    ({"--out": "dir"}, [], "it is a directory"),
    ({"--out": "file.json/x.json"}, [], "is not a directory"),
])
def test_check_outputs_refusals(tmp_path, monkeypatch, outputs, inputs, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.json").write_text("{}")
    (tmp_path / "file.json").write_text("{}")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match=message):
        check_outputs(outputs, inputs=inputs, suffixes={"--out": (".json",)} if "a.txt" in outputs.values() else None)


def test_check_outputs_accepts_stdout_and_new_directories(tmp_path):
    check_outputs({"--out": "-", "--x": None, "--y": tmp_path / "new" / "deeper" / "f.json"})
    assert not (tmp_path / "new").exists()  # created when written, not when checked


def test_check_output_dir(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_output_dir(tmp_path / "f")
    check_output_dir(tmp_path / "run")
    check_output_dir(tmp_path)
