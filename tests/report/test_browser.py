"""The report in a real browser: headless Chromium over the DevTools protocol (pipe transport).

Runs where a chromium binary is installed (CI installs Debian's ``chromium``); skipped otherwise.
"""

from __future__ import annotations

import pytest

from spectra.report import write_report
from spectra.report.browser import Chromium, find_chromium

from .factories import EVIL, make_analysis, make_diff, make_lrmap, make_noise

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None, reason="no chromium binary"),
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    a = make_analysis(blocks=2, evil=True)
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report([make_analysis(blocks=2, seed=3, shift=0.5), a], path, lrmap=make_lrmap(a), noise=make_noise(a),
                 diff=make_diff(a))
    with Chromium() as browser:
        yield browser.open(path, width=1280, height=900)


def _column(page, key: str) -> list[str]:
    return page.evaluate(f"""(() => {{
        const idx = [...document.querySelectorAll('#layer-table thead th')].findIndex(th => th.dataset.key === '{key}');
        return [...document.querySelectorAll('#layer-table tbody tr')].filter(tr => !tr.classList.contains('hidden'))
            .map(tr => tr.cells[idx].dataset.sort);
    }})()""")


def _click_header(page, key: str) -> None:
    page.evaluate(f"document.querySelector('#layer-table th[data-key=\"{key}\"] button').click()")


def test_loads_without_errors_or_network(page):
    assert page.errors() == []
    urls = page.requests()
    assert urls and all(u.startswith("file://") for u in urls)
    assert page.evaluate("document.readyState") == "complete"


def test_alpha_chart_and_table_render(page):
    box = page.evaluate("""(() => { const r = document.querySelector('[data-chart="alpha"] svg').getBoundingClientRect();
                                    return [r.width, r.height]; })()""")
    assert box[0] > 600 and box[1] > 150
    points = page.evaluate("document.querySelectorAll('[data-chart=\"alpha\"] g[id^=\"alpha-\"] use').length")
    assert points >= 10
    rows = page.evaluate("document.querySelectorAll('#layer-table tbody tr').length")
    assert rows == len(make_analysis(blocks=2, evil=True).layers)
    assert page.evaluate("document.querySelectorAll('.esd-card svg').length") >= 10


def test_sorting_by_alpha(page):
    _click_header(page, "alpha")
    values = _column(page, "alpha")
    numbers = [float(v) for v in values if v != ""]
    assert numbers == sorted(numbers)
    assert values[len(numbers):] == [""] * (len(values) - len(numbers))  # missing last
    assert page.evaluate("document.querySelector('th[data-key=\"alpha\"]').getAttribute('aria-sort')") == "ascending"
    _click_header(page, "alpha")
    numbers = [float(v) for v in _column(page, "alpha") if v != ""]
    assert numbers == sorted(numbers, reverse=True)
    _click_header(page, "name")
    names = _column(page, "name")
    assert names[0] < names[-1]


def test_filters(page):
    page.evaluate("""(() => { const f = document.getElementById('flag-filter'); f.value = 'over-trained';
                             f.dispatchEvent(new Event('change')); })()""")
    shown = page.evaluate("[...document.querySelectorAll('#layer-table tbody tr:not(.hidden)')].map(r => r.dataset.warning)")
    assert shown and set(shown) == {"over-trained"}
    assert page.evaluate("document.getElementById('layer-count').textContent").startswith(f"{len(shown)} of ")
    page.evaluate("""(() => { const f = document.getElementById('flag-filter'); f.value = '';
                             f.dispatchEvent(new Event('change'));
                             const n = document.getElementById('layer-filter'); n.value = 'intermediate';
                             n.dispatchEvent(new Event('input')); })()""")
    names = page.evaluate("[...document.querySelectorAll('#layer-table tbody tr:not(.hidden)')].map(r => r.dataset.name)")
    assert names == ["encoder.layer.0.intermediate.dense", "encoder.layer.1.intermediate.dense"]


def test_crafted_name_is_text_not_markup(page):
    assert page.evaluate("window.__pwned === undefined && !document.querySelector('img')")
    cell = page.evaluate(f"[...document.querySelectorAll('#layer-table tbody tr')].some(tr => tr.dataset.name === {EVIL!r})")
    assert cell
    titles = page.evaluate("[...document.querySelectorAll('[data-chart=\"alpha\"] use title')].map(t => t.textContent)")
    assert EVIL in titles


def test_esd_enlarges_on_click(page):
    page.evaluate("document.querySelector('.esd-card').click()")
    assert page.evaluate("document.getElementById('esd-dialog').open")
    assert page.evaluate("document.querySelector('#esd-dialog-body svg') !== null")
    title = page.evaluate("document.getElementById('esd-dialog-title').textContent")
    assert title == page.evaluate("document.querySelector('.esd-card').dataset.name")
    page.evaluate("document.getElementById('esd-dialog').close()")


def test_committed_demo_report_loads_cleanly():
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "reports" / "demo" / "report.html"
    if not demo.is_file():
        pytest.skip("no committed demo report")
    with Chromium() as browser:
        page = browser.open(demo)
        assert page.errors() == []
        assert page.evaluate("document.querySelectorAll('#layer-table tbody tr').length") >= 37
        assert page.evaluate("document.querySelectorAll('.esd-card svg').length") >= 37


def test_cli_screenshot(tmp_path):
    import struct

    from typer.testing import CliRunner

    from spectra.cli import app

    make_analysis(blocks=1).to_json(tmp_path / "a.json")
    png = tmp_path / "shot.png"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "a.json"), "-o", str(tmp_path / "r.html"),
                                      "--screenshot", str(png)])
    assert result.exit_code == 0, result.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1400 and height > 1500  # the whole page, not just the first screen


# ----------------------------------------------------------------------------- layout at phone and desktop widths

#: A chart drawn shorter than this on screen has unreadable labels (matplotlib's 9 pt text shrinks with it).
MIN_CHART_PX = 150


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    a = make_analysis(blocks=4, evil=True)
    path = tmp_path_factory.mktemp("layout") / "report.html"
    diff = make_diff(a)
    diff["config"] = {"steps": 100}
    write_report([make_analysis(blocks=4, seed=3, shift=0.5), a], path, lrmap=make_lrmap(a), noise=make_noise(a),
                 diff=diff)
    return path


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


LAYOUT = """(() => {
  const vw = window.innerWidth, over = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.table-wrap, .chart-scroll, dialog')) continue;   // these scroll inside their own box
    const r = el.getBoundingClientRect();
    if (r.width && r.right > vw + 0.5) over.push(el.tagName + '.' + el.className + ' ' + Math.round(r.right));
  }
  const charts = [...document.querySelectorAll('figure.chart')].map(f => [f.dataset.chart,
      Math.max(0, ...[...f.querySelectorAll('svg')].filter(s => s.getClientRects().length)
                                                  .map(s => s.getBoundingClientRect().height))]);
  const wrap = document.querySelector('#layers .table-wrap').getBoundingClientRect();
  const notes = [...document.querySelectorAll('#layer-table tbody tr')].filter(tr => tr.dataset.warning || tr.dataset.status !== 'success')
      .map(tr => tr.querySelector('td.col-note').getBoundingClientRect());
  return {scroll: document.documentElement.scrollWidth, body: document.body.scrollWidth, vw: vw, over: over.slice(0, 5),
          charts: charts, wrapRight: wrap.right, noteRight: Math.max(...notes.map(n => n.right)),
          notes: notes.length};
})()"""


@pytest.mark.parametrize("width", [420, 1400])
def test_page_fits_the_width_and_charts_stay_readable(full_report, browser, width):
    page = browser.open(full_report, width=width, height=900)
    got = page.evaluate(LAYOUT)
    assert got["scroll"] <= width and got["body"] <= width, f"page overflows at {width}px: {got['over']}"
    assert got["over"] == []
    assert len(got["charts"]) >= 10 and all(h >= MIN_CHART_PX for _, h in got["charts"]), got["charts"]
    assert got["notes"] >= 3
    if width >= 1400:  # the verdict column is in view without scrolling the table
        assert got["noteRight"] <= got["wrapRight"] + 0.5
    assert page.errors() == []


def test_narrow_table_scrolls_in_its_box_with_the_name_column_sticky(full_report, browser):
    page = browser.open(full_report, width=420, height=900)
    got = page.evaluate("""(() => {
        const wrap = document.querySelector('#layers .table-wrap');
        wrap.scrollLeft = 400;
        const name = document.querySelector('#layer-table tbody tr .col-name').getBoundingClientRect();
        const alpha = document.querySelector('#layer-table tbody tr td.col-alpha').getBoundingClientRect();
        return {scrolled: wrap.scrollLeft, wrapLeft: wrap.getBoundingClientRect().left, nameLeft: name.left,
                nameWidth: name.width, wrapWidth: wrap.clientWidth, alphaLeft: alpha.left};
    })()""")
    assert got["scrolled"] > 0  # the table is wider than the phone and scrolls inside its own box
    assert abs(got["nameLeft"] - got["wrapLeft"]) <= 2  # ... while the name column stays put
    assert got["nameWidth"] <= 0.6 * got["wrapWidth"]  # and leaves room for the numbers next to it


def test_csp_runs_only_the_pages_own_script(full_report, tmp_path, browser):
    """Even if escaping failed, an injected inline script or event handler would not run."""
    html = full_report.read_text(encoding="utf-8")
    assert "'unsafe-inline'" not in html.split("script-src", 1)[1].split(";", 1)[0]
    injected = html.replace("<main>", "<main><script>window.__pwned = 1;</script>"
                                      "<img src=\"data:,x\" onerror=\"window.__pwned2 = 1\">", 1)
    path = tmp_path / "injected.html"
    path.write_text(injected, encoding="utf-8")
    page = browser.open(path, width=1400)
    assert page.evaluate("document.documentElement.dataset.script") == "ran"  # the page's own script ran
    assert page.evaluate("window.__pwned === undefined && window.__pwned2 === undefined")
    assert any("Content Security Policy" in e or "Refused" in e for e in page.errors())
