"""The plots of :mod:`profiler.format.plots` (the ``--plot`` roofline, and the helpers the reports' figures use):
resolution, palette, legends, and labels that cover no other label."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from matplotlib import style
from matplotlib.colors import to_rgb

from profiler.bandwidth.predict import predict_step
from profiler.format.plots import (
    CATEGORY_STYLE,
    DPI,
    LABEL_OFFSETS,
    category_style,
    new_figure,
    palette,
    place_labels,
    roofline_figure,
    roofline_plot,
)


@pytest.fixture(scope="module")
def predicted():
    """ResNet-18 at 96×96, batch 32, predicted for the H200: inference and a training step."""
    return [predict_step("resnet", 96, batch=32, train=train, gpu="h200") for train in (False, True)]


def test_the_palette_is_matplotlibs_colour_blind_safe_one_and_categories_differ_by_marker_too():
    expected = style.library["tableau-colorblind10"]["axes.prop_cycle"].by_key()["color"]
    assert palette() == expected and palette()[:2] == ["#006BA4", "#FF800E"]
    styles = [category_style(category) for category in CATEGORY_STYLE]
    assert len({colour for colour, _ in styles}) == len({marker for _, marker in styles}) == len(CATEGORY_STYLE)


def test_a_roofline_png_is_150_dpi_with_a_legend_on_every_panel(predicted, tmp_path: Path):
    path = tmp_path / "roofline.png"
    roofline_plot(predicted, path, columns=2)
    png = path.read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    at = png.index(b"pHYs")
    assert struct.unpack(">I", png[at + 4:at + 8])[0] * 0.0254 == pytest.approx(DPI, abs=0.1) and DPI == 150
    assert (width, height) == (2 * 10 * DPI, int(6.5 * DPI))
    fig = roofline_figure(predicted, columns=2)
    assert all(ax.get_legend() is not None for ax in fig.axes)
    assert all("predicted for NVIDIA H200" in ax.get_title() for ax in fig.axes)


def test_roofline_points_use_the_palette_and_layer_labels_do_not_overlap(predicted, text_box):
    fig = roofline_figure(predicted, columns=2, panel_in=(6.4, 4.8))
    renderer = fig.canvas.get_renderer()
    safe = {to_rgb(c) for c in palette()}
    for ax in fig.axes:
        assert {to_rgb(c[:3]) for collection in ax.collections for c in collection.get_facecolors()} <= safe
        labels = [text for text in ax.texts if "%)" in text.get_text()]  # the slowest layers' names
        assert labels
        boxes = [text_box(text, renderer) for text in labels] + [ax.get_legend().get_window_extent(renderer)]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_labels_that_cannot_all_fit_are_left_out_or_placed_where_they_cover_the_fewest(text_box):
    fig = new_figure(4, 3)
    ax = fig.add_subplot()
    ax.set(xlim=(0, 1), ylim=(0, 1))
    fig.draw_without_rendering()
    crowd = [(0.5, 0.5)] * (len(LABEL_OFFSETS) + 3)
    names = [f"a long label number {i}" for i in range(len(crowd))]
    optional = place_labels(ax, crowd, names, required=False)
    renderer = fig.canvas.get_renderer()
    boxes = [text_box(text, renderer) for text in optional]
    assert 0 < len(optional) < len(crowd)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert len(place_labels(ax, crowd, names)) == len(crowd)  # required: every one written, overlaps or not


def test_plots_are_built_and_drawn_under_the_plot_style_and_leave_matplotlib_as_it_was():
    import matplotlib

    from profiler.format.plots import STYLE, drawn_png, new_figure

    seen = []

    def draw() -> object:
        seen.append(matplotlib.rcParams["text.hinting"])
        figure = new_figure(2, 1)
        figure.add_subplot().set_title("hinting")
        return figure

    before = matplotlib.rcParams["text.hinting"]
    png = drawn_png(draw)
    assert png.startswith(b"\x89PNG") and seen == [STYLE["text.hinting"]] == ["none"]
    assert matplotlib.rcParams["text.hinting"] == before
