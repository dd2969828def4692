import math
import re

import numpy as np
import pytest

from spectra.report.svg import esd_geometry, esd_svg, esd_view, log_ticks


def _pareto(alpha: float, n: int, xmin: float = 1.0, seed: int = 0) -> np.ndarray:
    # density (alpha - 1) xmin^(alpha-1) x^-alpha on x >= xmin (inverse-CDF sampling)
    u = np.random.default_rng(seed).random(n)
    return np.sort(xmin * (1 - u) ** (-1.0 / (alpha - 1.0)))


def test_histogram_is_a_density_over_linear_lambda():
    ev = _pareto(3.0, 20000)
    edges, ly, _ = esd_geometry(ev, ev.size)
    widths = np.diff(10.0**edges)
    mass = np.nansum(10.0**ly * widths)
    assert mass == pytest.approx(1.0, rel=1e-9)


def test_fit_line_matches_pareto_density():
    """The drawn power law is the true Pareto pdf when alpha and xmin are the generating ones."""
    alpha, xmin = 3.0, 2.0
    ev = _pareto(alpha, 50000, xmin=xmin, seed=1)
    edges, ly, fit = esd_geometry(ev, ev.size, alpha=alpha, xmin=xmin)
    (x0, y0), (x1, y1) = fit
    assert x0 == pytest.approx(math.log10(xmin))
    assert y0 == pytest.approx(math.log10((alpha - 1) / xmin))  # pdf at xmin, tail fraction 1
    assert (y1 - y0) / (x1 - x0) == pytest.approx(-alpha)
    # the histogram follows the line over the well-populated first decade
    centers = 0.5 * (edges[1:] + edges[:-1])
    mask = (centers < x0 + 1.0) & np.isfinite(ly)
    line = y0 - alpha * (centers[mask] - x0)
    assert np.max(np.abs(ly[mask] - line)) < 0.1


def test_fit_scales_with_tail_fraction():
    ev = np.concatenate([np.linspace(0.1, 0.9, 300), _pareto(2.5, 100, xmin=1.0)])
    _, _, fit = esd_geometry(ev, ev.size, alpha=2.5, xmin=1.0, num_pl_spikes=100)
    assert fit[0][1] == pytest.approx(math.log10(100 / 400 * 1.5))


def test_no_fit_without_alpha_and_no_spectrum_for_empty():
    ev = _pareto(3.0, 200)
    svg = esd_svg(ev)
    assert "no power-law fit" in svg and "<line" in svg
    assert "no spectrum" in esd_svg(np.zeros(5))


def test_svg_is_well_formed_and_has_unique_clip_id():
    import xml.etree.ElementTree as ET

    svg = esd_svg(_pareto(3.0, 500), alpha=3.0, xmin=1.5, bulk=(1.0, 1.4), uid="esd7", label='a "<b>"')
    root = ET.fromstring(svg)
    assert root.get("viewBox") == "0 0 260 172"
    assert root.get("aria-label") == 'a "<b>"'
    assert 'id="esd7"' in svg and "url(#esd7)" in svg
    assert "Marchenko-Pastur bulk" in svg
    assert re.search(r"α = 3\.00", svg)


def _attention_like(seed: int = 0) -> np.ndarray:
    """An attention projection's spectrum: ~100 numerically tiny eigenvalues (1e-7..1e-4), a bulk
    around 0.1-3 and a power-law tail from 10 to ~40 (what made the tail a sliver before)."""
    rng = np.random.default_rng(seed)
    tiny = 10.0 ** rng.uniform(-7, -4, 100)
    bulk = 10.0 ** rng.normal(-0.3, 0.35, 260)
    tail = _pareto(5.0, 24, xmin=10.0, seed=seed)
    return np.sort(np.concatenate([tiny, bulk, tail]))


def _x_labels(svg: str) -> list[tuple[float, str]]:
    return [(float(x), text) for x, text in re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="middle" '
                                                        r'font-size="9.5" fill="#555">(.*?)</text>', svg)]


def test_view_gives_the_tail_room_and_marks_what_is_cut():
    ev = _attention_like()
    lx = np.log10(ev)
    lo = esd_view(lx, xmin=10.0, fitted=True)
    tail_share = (lx.max() - 1.0) / (lx.max() - lo)
    assert tail_share >= 0.3  # before: the tail was ~17% of an axis running from 1e-7
    assert lo <= 1.0 - 0.6  # the bulk just below xmin is in view
    svg = esd_svg(ev, alpha=5.0, xmin=10.0, num_pl_spikes=24, D=0.07)
    cut = int((lx < lo).sum())
    assert cut >= 100 and f">{cut}</text>" in svg and f"{cut} smaller eigenvalues not shown" in svg
    assert "tail n = 24 of 384 · D = 0.070" in svg and "xmin 10" in svg


@pytest.mark.parametrize("lo, hi", [(3.0, 5.0), (0.9, 1.2), (1e-3, 1e3), (2.0, 2.05)])
def test_every_thumbnail_has_two_labelled_x_ticks(lo, hi):
    ev = np.linspace(lo, hi, 200)
    labels = _x_labels(esd_svg(ev))
    assert len(labels) >= 2 and len({t for _, t in labels}) == len(labels)
    assert len(log_ticks(np.log10(lo), np.log10(hi))) >= 2


def test_lambda_label_is_clear_of_the_tick_labels():
    svg = esd_svg(_attention_like(), alpha=5.0, xmin=10.0)
    tick_y = {float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="middle" font-size="9.5"', svg)}
    lam = re.search(r'<text x="[\d.]+" y="([\d.]+)"[^>]*>λ \(eigenvalue\)</text>', svg)
    assert lam and all(float(lam.group(1)) - y >= 12 for y in tick_y)  # a line below the tick labels
