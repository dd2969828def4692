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
