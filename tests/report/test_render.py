import dataclasses
import json
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.errors import ConfigError, FormatError
from spectra.report import load_analysis, load_json, render_report, safe_json, write_report
from spectra.report.render import script_hash
from spectra.results import Analysis, LayerResult

from .factories import EVIL, make_analysis, make_diff, make_lrmap, make_noise


class _Collect(HTMLParser):
    """Tags, script bodies and visible text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self.text, self._in_script = [], [], [], False
        self.attrs = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def _parse(html: str) -> _Collect:
    p = _Collect()
    p.feed(html)
    return p


def test_safe_json_escapes_markup_and_round_trips():
    data = {"name": EVIL, "q": 'a "b" & </script><!--', "ls": "\u2028"}
    text = safe_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == dict(data, ls="\\u2028")  # round trips, with the separator made visible


def test_report_has_every_section(analysis):
    html = render_report(analysis, lrmap=make_lrmap(analysis), noise=make_noise(analysis), diff=make_diff(analysis))
    for section in ("overview", "alerts", "alpha", "esd", "lrmap", "noise", "diff", "layers", "methods"):
        assert f'id="{section}"' in html
    assert html.count('class="esd-card') == len(analysis.evals)
    assert html.count("<tr data-name=") == len(analysis.layers)
    assert "Activation geometry" in html and "alignment_b" in html  # table of every field
    for key in ("alignment", "residual_energy", "projection_update"):
        assert f'data-chart="act-{key}"' in html
    assert 'id="trajectory"' not in html  # one checkpoint: no trajectory


def test_report_without_side_inputs_skips_their_sections(analysis):
    html = render_report(analysis)
    assert 'id="lrmap"' not in html and 'id="noise"' not in html and 'id="diff"' not in html


def test_report_is_offline_and_small(analysis):
    html = render_report(analysis)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "default-src 'none'" in html
    assert len(html.encode()) < 1_000_000


def test_trajectory_needs_two_checkpoints():
    a, b = make_analysis(seed=0), make_analysis(seed=1, shift=1.0, checkpoint="later.safetensors")
    html = render_report([a, b])
    assert 'id="trajectory"' in html and "later.safetensors" in html
    assert "α first→last" in html


def test_crafted_names_cannot_inject_markup(evil_analysis):
    html = render_report(evil_analysis, lrmap=make_lrmap(evil_analysis))
    page = _parse(html)
    # exactly our two script elements: the JSON blob and the page script
    assert page.tags.count("script") == 2
    assert "img" not in page.tags
    assert not any(name.startswith("on") for name, _ in page.attrs)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    visible = "".join(page.text)
    assert EVIL in visible  # shown as text
    blob = page.scripts[0]
    assert json.loads(blob)["labels"]  # the hover labels carry the name, escaped
    assert EVIL in json.dumps(json.loads(blob), ensure_ascii=False)
    assert "</" not in blob


def test_svg_charts_carry_no_checkpoint_strings(evil_analysis):
    html = render_report(evil_analysis)
    for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S):
        assert "alert(" not in svg


def test_analysis_json_round_trip_without_eigenvalues(tmp_path, analysis):
    path = tmp_path / "analysis.json"
    analysis.to_json(path)
    loaded = load_analysis(path)
    assert loaded.evals == {}
    html = render_report(loaded)
    assert "without eigenvalues" in html
    analysis.save_esd(tmp_path / "analysis.esd.npz")
    html = render_report(load_analysis(path))
    assert html.count('class="esd-card') == len(analysis.evals)


def test_side_input_schema_is_checked(tmp_path, analysis):
    noise_path = tmp_path / "noise.json"
    noise_path.write_text(json.dumps(make_noise(analysis)))
    with pytest.raises(FormatError, match="expected spectra.lrmap/1"):
        load_json(noise_path, "spectra.lrmap/1")
    with pytest.raises(FormatError, match="--noise"):
        load_analysis(noise_path)
    assert load_json(noise_path, "spectra.noise/1")["source"] == "gradients"
    with pytest.raises(ConfigError):
        load_json(3, "spectra.lrmap/1")


def test_lrmap_object_with_to_dict(analysis):
    class Fake:
        def to_dict(self):
            return make_lrmap(analysis)

    html = render_report(analysis, lrmap=Fake())
    assert 'id="lrmap"' in html and "tempbalance" in html


def test_write_report_creates_parents(tmp_path, analysis):
    out = write_report([analysis], tmp_path / "sub" / "r.html")
    assert out.read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(ConfigError):
        render_report([])


def test_failed_only_analysis_renders():
    a = make_analysis()
    broken = dataclasses.replace(a, layers=tuple(dataclasses.replace(r, status="failed", alpha=float("nan"),
                                                                     reason="boom") for r in a.layers), evals={})
    html = render_report(broken)
    assert "fit failed for" in html


def test_colours_are_consistent_across_sections(analysis):
    from spectra.report import sections

    style = sections.Style(analysis)
    alpha = {g["name"]: g["color"] for g in sections.metric_section(analysis, style)["legend"]}
    lrmap = make_lrmap(analysis)
    for rec in lrmap["layers"]:
        rec.pop("kind", None)
    lr = sections.lrmap_section(lrmap, style)
    assert {g["name"]: g["color"] for g in lr["legend"]} == alpha  # embeddings found by name, same colours
    svg = lr["charts"][0]["svg"]
    assert ">emb<" in svg  # depth 0 recognised as the embedding depth via the analysis' kinds


def test_esd_grid_is_capped(analysis):
    from spectra.report import sections

    sec = sections.esd_section(analysis, limit=3)
    assert len(sec["items"]) == 3 and sec["truncated"]
    assert [i["name"] for i in sec["items"]][0] == "embeddings.word_embeddings"  # depth order


def test_crafted_analysis_json_with_wrong_types(tmp_path):
    """Numbers replaced by markup in a hand-edited analysis file: refused by the reader, naming the
    field; markup where text is allowed (config, summary) is rendered as text, never as HTML."""
    a = make_analysis(blocks=1)
    data = a.to_dict()
    bad = '<img src=x onerror="alert(3)">'
    path = tmp_path / "analysis.json"
    for field, value in (("depth", bad), ("alpha", bad), ("num_pl_spikes", bad), ("N", bad), ("shape", [bad, 3])):
        rec = dict(data["layers"][1], **{field: value})
        path.write_text(json.dumps(dict(data, layers=[data["layers"][0], rec])))
        with pytest.raises(FormatError, match=rf"layers\[1\] \('{rec['name']}'\)\.{field}"):
            load_analysis(path)
    data["config"] = {bad: bad}
    data["summary"] = {"num_params": bad}
    path.write_text(json.dumps(data))
    html = render_report(load_analysis(path))
    page = _parse(html)
    assert "img" not in page.tags and page.tags.count("script") == 2
    assert bad in "".join(page.text)


@pytest.mark.parametrize("side, change, field", [
    ("lrmap", {"options": ["not", "a", "dict"]}, r"options must be an object"),
    ("lrmap", {"layers": ["junk", 3]}, r"layers\[0\] must be an object"),
    ("lrmap", {"layers": [{"name": "<b>", "param": "p", "depth": "<b>", "metric": "a", "value": 1, "multiplier": 1}]},
     r"layers\[0\] \('<b>'\)\.depth must be an integer"),
    ("noise", {"layers": [None]}, r"layers\[0\] must be an object, got null"),
    ("noise", {"summary": "<script>"}, r"summary must be an object"),
])
def test_crafted_side_inputs_are_refused_naming_the_field(analysis, side, change, field):
    data = (make_lrmap if side == "lrmap" else make_noise)(analysis) | change
    with pytest.raises(FormatError, match=field):
        render_report(analysis, **{side: data})


def test_markup_in_side_input_strings_is_text(analysis):
    lrmap = make_lrmap(analysis)
    lrmap["layers"][0] = dict(lrmap["layers"][0], reason="<i>x</i>", metric="<b>m</b>")
    lrmap["method"] = "<b>rule</b>"
    noise = make_noise(analysis)
    noise["summary"] = {"b_simple": "<script>alert(1)</script>"}
    html = render_report(analysis, lrmap=lrmap, noise=noise)
    page = _parse(html)
    assert "b" not in page.tags and "i" not in page.tags and page.tags.count("script") == 2


#: Characters that must never reach the page raw: C0 (except tab/newline/CR), C1, bidi controls, separators.
RAW_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _hostile_analysis(name: str, reason: str = "") -> Analysis:
    layers = (LayerResult(name, name + ".weight", "linear", (8, 8), 1, alpha=1.5, warning="over-trained"),
              LayerResult("fc", "fc.weight", "linear", (8, 8), 2, alpha=3.0),
              LayerResult(name + "2", name + "2.weight", "linear", (2, 2), 2, status="skipped", reason=reason))
    return Analysis(layers=layers, summary={}, config={"note": name}, checkpoint=name + ".safetensors", created="")


def test_bidi_overrides_and_controls_show_visibly_in_the_page():
    name = "enc\u202eoder.\x1b]0;x\x07layer\u2066.q\u200f"
    a = _hostile_analysis(name, reason="bad\u202e\x9b")
    lrmap = {"schema": "spectra.lrmap/1", "method": "m", "params": {}, "default": 1.0,
             "layers": [{"name": name, "param": f"{name}.weight", "depth": 1, "metric": "alpha", "value": 3.0,
                         "multiplier": 2.0}]}
    html = render_report(a, lrmap=lrmap, title="t\u202eitle")
    assert not RAW_UNSAFE.search(html)
    assert "enc\\u202eoder.\\x1b]0;x\\x07layer\\u2066.q\\u200f" in html and "bad\\u202e\\x9b" in html
    assert "t\\u202eitle" in html


@settings(max_examples=12, deadline=None)
@given(name=st.text(min_size=1, max_size=30))
def test_any_layer_name_renders_safely(name):
    html = render_report(_hostile_analysis(name, reason=name))
    assert not RAW_UNSAFE.search(html)
    assert html.count("<script") == 2  # the data blob and the page's own script, nothing injected


def test_csp_names_the_pages_script_by_hash():
    html = render_report(_hostile_analysis("fc0"))
    import html as html_lib

    csp = html_lib.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]
    js = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    assert script_hash(js) in csp
