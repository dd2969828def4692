import pytest

from spectra.report.plots import Series, _log_label, depth_chart, trajectory_chart


def test_depth_chart_svg_is_responsive_and_tagged():
    svg = depth_chart([Series(x=[0, 1, 2], y=[1.0, 3.0, 50.0], color="#0072B2", gid="pts-0")],
                      ylabel="alpha", xticks=[(0, "emb"), (1, "1"), (2, "head")], band=(2, 6), ylim=(0, 10))
    head = svg[: svg.index(">")]
    assert head.startswith("<svg") and "viewBox" in head and " width=" not in head
    assert 'id="pts-0"' in svg
    assert "$" not in svg  # no mathtext


@pytest.mark.parametrize("value, label", [(0.01, "0.01"), (100.0, "100"), (1e-5, "1e-5"), (1e5, "1e5"), (0, "")])
def test_log_labels(value, label):
    assert _log_label(value) == label


def test_clipped_points_become_triangles_and_intervals_are_drawn():
    def chart(y, **kw):
        return depth_chart([Series(x=[0, 1], y=y, color="#000000", **kw)], ylabel="alpha", ylim=(0, 10))

    plain = chart([3.0, 4.0])
    assert chart([3.0, 40.0]).count("<use") == plain.count("<use") + 1  # a triangle on the pinned point
    with_ci = chart([3.0, 4.0], lo=[2.5, float("nan")], hi=[3.5, float("nan")])
    assert with_ci.count("opacity: 0.55") == 1 and plain.count("opacity: 0.55") == 0  # one interval bar


def test_trajectory_chart_tags_each_line():
    svg = trajectory_chart([[3.0, 3.5, 4.0], [5.0, 4.0, 3.0]], ["#0072B2", "#E69F00"], mean=[4.0, 3.75, 3.5])
    assert 'id="traj-l0"' in svg and 'id="traj-l1"' in svg
    assert ">3<" in svg  # x ticks are checkpoint numbers 1..3
