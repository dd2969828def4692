"""Outputs never destroy inputs or earlier results: checked before the work, written atomically."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest

from spectra._files import atomic_write

from .conftest import assert_one_error, invoke

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- outputs vs inputs


def test_diff_refuses_to_overwrite_its_checkpoint(small_ckpt):
    before = small_ckpt.read_bytes()
    assert_one_error(invoke("diff", small_ckpt, small_ckpt, "-o", small_ckpt), "writes .json here, not .safetensors")
    assert small_ckpt.read_bytes() == before


@pytest.mark.parametrize("suffix", [".pt", ".txt", ".safetensors"])
@pytest.mark.parametrize("command", ["diff", "noise", "prescribe"])
def test_suffixes_a_command_does_not_write_are_refused(tmp_path, small_ckpt, command, suffix):
    out = tmp_path / f"out{suffix}"
    args = {"diff": ("diff", small_ckpt, small_ckpt), "noise": ("noise", "--task", "synthetic"),
            "prescribe": ("prescribe", small_ckpt, "-m", "llr")}[command]
    assert_one_error(invoke(*args, "-o", out), f"writes .json here, not {suffix}")
    assert not out.exists()


def test_prescribe_refuses_to_overwrite_its_analysis(tmp_path, analysis_json):
    data, write = analysis_json
    path = write("a.json", data)
    before = path.read_bytes()
    assert_one_error(invoke("prescribe", path, "-m", "llr", "-o", path), "is also an input")
    assert path.read_bytes() == before


def test_same_file_through_a_symlink_or_hard_link(tmp_path, analysis_json):
    data, write = analysis_json
    path = write("a.json", data)
    os.symlink(path, tmp_path / "sym.json")
    os.link(path, tmp_path / "hard.json")
    for other in ("sym.json", "hard.json"):
        assert_one_error(invoke("prescribe", path, "-m", "llr", "-o", tmp_path / other), "is also an input")


def test_noise_refuses_its_checkpoint_as_output(tmp_path):
    import torch

    ckpt = tmp_path / "c.json"  # a checkpoint with a .json name: refused as input, not by suffix
    torch.save({"w": torch.zeros(2, 2)}, ckpt)
    assert_one_error(invoke("noise", "--task", "synthetic", "--checkpoint", ckpt, "-o", ckpt), "is also an input")


def test_report_outputs_cannot_be_an_input_or_its_eigenvalues(tmp_path, analysis_json):
    data, write = analysis_json
    path = write("a.json", data)
    assert_one_error(invoke("report", path, "-o", path), "writes .html or .htm here, not .json")
    esd = tmp_path / "a.esd.npz"
    esd.write_bytes(b"x")
    html = tmp_path / "r.html"
    os.symlink(esd, html)
    assert_one_error(invoke("report", path, "-o", html), "is also an input")
    assert esd.read_bytes() == b"x"


def test_analyze_outputs_must_differ_and_have_their_suffix(tmp_path, small_ckpt):
    out = tmp_path / "a.json"
    assert_one_error(invoke("analyze", small_ckpt, "-o", out, "--save-esd", tmp_path / "a.esd.json"),
                     "--save-esd")
    os.symlink(out, tmp_path / "b.npz")
    assert_one_error(invoke("analyze", small_ckpt, "-o", out, "--save-esd", tmp_path / "b.npz"), "same file as --out")
    assert_one_error(invoke("analyze", small_ckpt, "-o", small_ckpt), "writes .json or .csv or .parquet")


def test_output_inside_a_checkpoint_directory(tmp_path, small_ckpt):
    model = tmp_path / "model"
    model.mkdir()
    small_ckpt.rename(model / "model.safetensors")
    assert_one_error(invoke("diff", model, model, "--no-alpha", "-o", model / "model.safetensors"), "writes .json")
    res = invoke("analyze", model, "-o", model / "analysis.json", "-q")  # a new file next to the weights is fine
    assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------- before the work


def test_unwritable_output_fails_before_the_work(tmp_path, small_ckpt, monkeypatch):
    import spectra.analysis

    def never(*a, **kw):
        raise AssertionError("the analysis ran although its output could not be written")

    monkeypatch.setattr(spectra.analysis, "analyze", never)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a file instead
            target = small_ckpt / "a.json"
        else:
            target = locked / "a.json"
        esd = tmp_path / "keep.esd.npz"
        assert_one_error(invoke("analyze", small_ckpt, "--bootstrap", "100", "-o", target, "--save-esd", esd))
        assert not esd.exists()
    finally:
        locked.chmod(0o700)


def test_missing_output_directories_are_created_by_every_command(tmp_path, small_ckpt, analysis_json):
    data, write = analysis_json
    a = write("a.json", data)
    cases = [("analyze", small_ckpt, "-q", "-o", tmp_path / "x1" / "y" / "a.json"),
             ("prescribe", a, "-m", "llr", "-q", "-o", tmp_path / "x2" / "m.json"),
             ("diff", small_ckpt, small_ckpt, "--no-alpha", "-q", "-o", tmp_path / "x3" / "d.json"),
             ("report", a, "-q", "-o", tmp_path / "x4" / "r.html")]
    for args in cases:
        res = invoke(*args)
        assert res.exit_code == 0, res.output
        assert Path(args[-1]).is_file()


# --------------------------------------------------------------------------- atomic writes


def test_full_disk_leaves_the_previous_file_intact(tmp_path, small_ckpt, monkeypatch):
    """ENOSPC in the middle of writing: the earlier analysis.json is untouched, no temp file is left."""
    import spectra._files as files

    out = tmp_path / "analysis.json"
    assert invoke("analyze", small_ckpt, "-o", out, "-q").exit_code == 0
    before = out.read_bytes()

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[:100])  # part of the data reaches the disk, then it is full
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(files, "open", lambda *a, **kw: FullDisk(open(*a, **kw)), raising=False)
    res = invoke("analyze", small_ckpt, "-o", out, "-q", "--fit", "median")
    monkeypatch.undo()
    assert_one_error(res, "No space left on device")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomic_write_keeps_mode_and_follows_symlinks(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    target.chmod(0o640)
    os.symlink(target, tmp_path / "link.txt")
    atomic_write(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640


def test_interrupt_during_a_write_leaves_no_partial_file(tmp_path):
    from spectra._files import atomic_path

    (tmp_path / "out.json").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"] and (tmp_path / "out.json").read_text() == "old"


_WRITE_METHODS = {"write_text", "write_bytes", "savefig", "to_csv", "to_parquet", "savez", "savez_compressed",
                  "save", "save_file"}
_SAFE_TARGETS = {"tmp", "fh", "buf", "handle"}
#: Streams that are not output files: a benchmark child's log in its scratch directory.
_ALLOWED = {"benchmarks/analyze_vs_weightwatcher.py: open(log_path, 'wb')"}


def _target(call):
    """The expression a writer call writes to: the receiver of ``p.write_text``, else the path argument."""
    import ast

    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name in ("write_text", "write_bytes"):
        return func.value
    if name in ("save", "save_file"):  # torch.save(obj, path), save_file(tensors, path)
        return call.args[1] if len(call.args) > 1 else None
    if name == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+")):
            return None
    return call.args[0] if call.args else None


def test_every_writer_goes_through_the_atomic_helpers():
    """A meta-test over spectra/ and benchmarks/: every call that writes a file writes to the temporary
    path or handle that spectra._files hands out (``tmp``/``fh``) or to memory (``buf``)."""
    import ast

    offenders = []
    for path in [*ROOT.joinpath("spectra").rglob("*.py"), *ROOT.joinpath("benchmarks").rglob("*.py")]:
        if path.name == "_files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in _WRITE_METHODS | {"open"}:
                continue
            target = _target(node)
            if target is None:
                continue
            if isinstance(target, ast.Call) and getattr(target.func, "id", "") == "str" and target.args:
                target = target.args[0]
            if not (isinstance(target, ast.Name) and target.id in _SAFE_TARGETS) \
                    and f"{path.relative_to(ROOT)}: {ast.unparse(node)}" not in _ALLOWED:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:90]}")
    assert offenders == []
