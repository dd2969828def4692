import json

from typer.testing import CliRunner

from spectra.cli import app
from tests.report.factories import make_analysis, make_diff, make_lrmap, make_noise

runner = CliRunner()


def test_help_lists_the_options():
    result = runner.invoke(app, ["report", "--help"])
    assert result.exit_code == 0
    for opt in ("--out", "--lrmap", "--noise", "--diff", "--screenshot", "--trust-pickle"):
        assert opt in result.output


def test_report_from_a_checkpoint(tmp_path, tiny_safetensors):
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(tiny_safetensors), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "encoder.layers.0.attention.q" in html
    assert html.count('class="esd-card') >= 8  # eigenvalues come straight from the analysis


def test_report_from_json_with_side_inputs(tmp_path):
    a = make_analysis()
    paths = {}
    for name, data in (("lrmap", make_lrmap(a)), ("noise", make_noise(a)), ("diff", make_diff(a))):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    a.to_json(tmp_path / "a.json")
    b = make_analysis(seed=2, shift=0.3)
    b.to_json(tmp_path / "b.json")
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(out),
                                 "--lrmap", str(paths["lrmap"]), "--noise", str(paths["noise"]),
                                 "--diff", str(paths["diff"]), "--title", "my <model>"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    html = out.read_text()
    for section in ("trajectory", "lrmap", "noise", "diff"):
        assert f'id="{section}"' in html
    assert "my &lt;model&gt;" in html


def test_bad_inputs_are_one_line_errors(tmp_path):
    a = make_analysis()
    a.to_json(tmp_path / "a.json")
    (tmp_path / "noise.json").write_text(json.dumps(make_noise(a)))
    cases = [
        ([str(tmp_path / "missing.safetensors")], "error:"),
        ([str(tmp_path / "a.json"), "-o", str(tmp_path / "r.txt")], ".html"),
        ([str(tmp_path / "a.json"), "--lrmap", str(tmp_path / "noise.json"), "-o", str(tmp_path / "r.html")],
         "expected spectra.lrmap/1"),
        ([str(tmp_path / "noise.json"), "-o", str(tmp_path / "r.html")], "--noise"),
        ([str(tmp_path / "a.json"), "-o", str(tmp_path / "a.json")], "writes .html or .htm here, not .json"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["report", *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error:") and message in result.stderr, result.stderr
        assert "Traceback" not in result.output
