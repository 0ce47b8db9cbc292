"""Plots of bandwidth records. matplotlib is imported only when a plot is drawn, and draws off-screen (Agg canvas,
no pyplot state), so the CLI starts fast and works without a display.

A roofline puts each layer at (counted FLOPs ÷ counted bytes, counted FLOPs ÷ measured time) on log-log axes, under
the device's measured roofs: the copy bandwidth (a slope) and the compute peaks (flat). On a GPU the FP32 roof is the
matmul with TF32 off and the TF32 roof the faster of the TF32 matmul and the convolution; datasheet roofs are drawn
dashed beside them. On the CPU the roofs are the CPU's own measured copy rate and the best of its convolution and
matmul rates, labelled CPU. A predicted
result (no GPU ran) is drawn at its predicted kernel times under the datasheet roofs the time model used.

Every plot here and in the reports uses matplotlib's colour-blind-safe ``tableau-colorblind10`` palette
(:func:`palette`), tells categories apart by marker shape as well as colour, has a legend, and is drawn at
:data:`DPI` with its labels placed where they cover no other label (:func:`place_labels`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from profiler.bandwidth.records import BandwidthResult, LayerTiming
from profiler.device import DeviceKind
from profiler.kinds import Mode
from profiler.util.files import write_atomic
from profiler.util.units import decimal_unit, shape_str

#: Resolution of every PNG drawn (the reports' figures included).
DPI = 150
#: Colours of a saved PNG's palette (:func:`png_bytes`).
PNG_COLOURS = 256
#: How many of the slowest drawn layers get their name written beside their point.
LABELLED_LAYERS = 8
#: Layer category → (index into :func:`palette`, marker).
CATEGORY_STYLE = {"conv": (0, "o"), "linear": (1, "s"), "normalization": (4, "^"), "elementwise": (5, "D"),
                  "pooling": (8, "v"), "other": (6, "X")}
#: Offsets (points) tried in turn for a label, right of its point first.
LABEL_OFFSETS = ((5, 3), (5, -10), (-5, 3), (-5, -10), (5, 13), (5, -20), (-5, 13), (-5, -20), (5, 24), (5, -31),
                 (-5, 24), (-5, -31))


def palette() -> list[str]:
    """The colours of matplotlib's colour-blind-safe ``tableau-colorblind10`` style, in its order (blue, orange,
    light grey, dark grey, light blue, dark orange, grey, pale blue, pale orange, pale grey)."""
    from matplotlib import style

    return list(style.library["tableau-colorblind10"]["axes.prop_cycle"].by_key()["color"])


def category_style(category: str) -> tuple[str, str]:
    """(colour, marker) of a layer category (:data:`CATEGORY_STYLE`)."""
    index, marker = CATEGORY_STYLE[category]
    return palette()[index], marker


def new_figure(width_in: float, height_in: float, margins_in: tuple[float, float, float, float] | None = None,
               gap_in: tuple[float, float] = (0.0, 0.0)) -> Any:
    """A matplotlib figure on an Agg canvas at :data:`DPI`: laid out by the constrained engine, or — cheaper to draw,
    one pass — with fixed ``margins_in`` (left, right, bottom, top, inches) and ``gap_in`` (between columns, rows)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout=None if margins_in else "constrained")
    FigureCanvasAgg(figure)
    if margins_in:
        left, right, bottom, top = margins_in
        figure.subplots_adjust(left=left / width_in, right=1 - right / width_in, bottom=bottom / height_in,
                               top=1 - top / height_in)
        figure.gap_in = gap_in  # read by subplots_grid
    return figure


#: matplotlib settings every plot is drawn under (:func:`drawn_png`): text without hinting — at :data:`DPI` snapping
#: glyphs to the pixel grid shows no gain, and costs a quarter of a roofline's drawing time.
STYLE = {"text.hinting": "none"}


def drawn_png(draw: Callable[..., Any], *args: Any) -> bytes:
    """``draw(*args)`` (a function returning a figure) as PNG bytes (:func:`png_bytes`), built and drawn under
    :data:`STYLE` (labels are measured while the figure is built: the same settings must hold for both)."""
    from matplotlib import rc_context

    with rc_context(STYLE):
        return png_bytes(draw(*args))


def png_bytes(figure: Any) -> bytes:
    """The figure as PNG bytes at :data:`DPI`, in :data:`PNG_COLOURS` palette colours (a third of the bytes of a
    true-colour PNG, no visible loss on flat-coloured plots), without timestamp or software tag: the same figure gives
    the same bytes. Drawn once on its Agg canvas and encoded once (``savefig`` would encode a true-colour PNG first:
    twice the time), at zlib's default level (level 9 takes eight times as long for 10 % fewer bytes)."""
    from PIL import Image  # matplotlib's own dependency

    figure.set_dpi(DPI)
    canvas = figure.canvas
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    out = io.BytesIO()
    image.convert("RGB").quantize(colors=PNG_COLOURS, method=Image.Quantize.FASTOCTREE).save(
        out, format="png", compress_level=6, dpi=(DPI, DPI))
    return out.getvalue()


def subplots_grid(figure: Any, rows: int, columns: int) -> list[Any]:
    """``rows`` × ``columns`` axes of a :func:`new_figure` with fixed margins, ``gap_in`` apart, row by row."""
    params = figure.subplotpars
    width_in, height_in = figure.get_size_inches()
    axes_w = (params.right - params.left) * width_in
    axes_h = (params.top - params.bottom) * height_in
    gap_w, gap_h = figure.gap_in
    each_w, each_h = (axes_w - (columns - 1) * gap_w) / columns, (axes_h - (rows - 1) * gap_h) / rows
    figure.subplots_adjust(wspace=gap_w / each_w if columns > 1 else 0, hspace=gap_h / each_h if rows > 1 else 0)
    return list(figure.subplots(rows, columns, squeeze=False).ravel())


def place_labels(ax: Any, points: Sequence[tuple[float, float]], labels: Sequence[str], fontsize: float = 8,
                 arrows: bool = False, required: bool = True, avoid: Sequence[Any] = ()) -> list[Any]:
    """Write each label beside its point (data coordinates) at the first of :data:`LABEL_OFFSETS` where its box
    stays inside the axes and covers no label placed before it nor a box of ``avoid`` (display coordinates: a
    legend's extent, say); with ``arrows``, a label away from the first offset gets a line to its point. A label that
    fits nowhere is left out unless ``required``; then it takes the offset where it covers the fewest. The layout
    must be final (boxes are in display pixels); each label is laid out once to measure it. Returns the labels
    written."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pixels_per_point = ax.figure.dpi / 72
    placed: list[Any] = list(avoid)
    texts = []
    for (x, y), label in zip(points, labels, strict=True):
        probe = ax.annotate(label, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=fontsize,
                            ha="left", va="bottom")
        size = probe.get_window_extent(renderer)  # the text's box as drawn, line spacing included
        probe.remove()
        width, height = size.width + 2, size.height + 2  # a pixel of air on every side
        px, py = size.x0 - 1, size.y0 - 1
        candidates = []
        for dx, dy in LABEL_OFFSETS:
            left = px + dx * pixels_per_point - (0 if dx > 0 else width)
            box = Bbox.from_bounds(left, py + dy * pixels_per_point, width, height)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            candidates.append((sum(box.overlaps(other) for other in placed) + (0 if inside else len(placed) + 1),
                               (dx, dy), box))
            if not candidates[-1][0]:
                break
        covered, (dx, dy), box = min(candidates, key=lambda candidate: candidate[0])
        if covered and not required:
            continue
        texts.append(ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                 ha="left" if dx > 0 else "right", va="bottom", zorder=4,
                                 arrowprops={"arrowstyle": "-", "color": "gray", "linewidth": 0.5}
                                 if arrows and (dx, dy) != LABEL_OFFSETS[0] else None))
        placed.append(box)
    return texts


def _si(value: float, unit: str) -> str:
    divisor, prefix = decimal_unit([value])
    return f"{value / divisor:,.3g} {prefix}{unit}"


def drawable(result: BandwidthResult) -> list[LayerTiming]:
    """The layers a roofline can place: counted FLOPs and bytes, and a measured time."""
    return [r for r in result.layers if r.flops and r.bytes and r.flops_per_s]


def _predicted_roofs(result: BandwidthResult) -> list[tuple[str, str, float, float, str, str, bool]]:
    """The datasheet roofs a prediction put FLOPs on (one per compute precision it used), one line style each."""
    roofs = (result.assumptions or {}).get("roofs", {})
    used = {r["compute_roof"]: r["compute_flops_per_s"] for r in roofs.values() if r["compute_roof"]}
    bandwidth = result.assumptions["bandwidth_bytes_per_s"]
    return [(f"{name.upper()} {_si(flops, 'FLOP/s')} ({result.device_name} datasheet)",
             f"{name.upper()} {_si(flops, 'FLOP/s')}", flops, bandwidth, style, "black", True)
            for (name, flops), style in zip(sorted(used.items(), key=lambda item: item[1]), ("-", "--", ":"),
                                            strict=False)]


def _roofs(result: BandwidthResult) -> list[tuple[str, str, float, float, str, str, bool]]:
    """(legend label, short label, compute FLOP/s, bytes/s, line style, color, measured?) of every roof to draw."""
    if result.predicted:
        return _predicted_roofs(result)
    p, sheet, cpu = result.peaks, result.datasheet, result.device_kind != DeviceKind.CUDA
    where = "CPU, measured" if cpu else "measured"
    fp32 = _si(p.fp32_flops_per_s, "FLOP/s")
    kernel = "best of conv and matmul" if cpu else "matmul"
    roofs = [(f"FP32 {kernel} {fp32} ({where})", f"FP32 {fp32}", p.fp32_flops_per_s, p.copy_bytes_per_s, "-",
              "black", True)]
    if p.tensor_core_flops_per_s is not None:
        tf32 = _si(p.tensor_core_flops_per_s, "FLOP/s")
        roofs.append((f"TF32, best of matmul and conv {tf32} (measured)", f"TF32 {tf32}", p.tensor_core_flops_per_s,
                      p.copy_bytes_per_s, "-.", "dimgray", True))
    if sheet is not None:
        for kind, flops, style in (("FP32", sheet.fp32_flops_per_s, "--"), ("TF32 dense", sheet.tf32_flops_per_s, ":")):
            text = f"{sheet.name} datasheet {kind} {_si(flops, 'FLOP/s')}"
            roofs.append((text, text, flops, sheet.bytes_per_s, style, "darkgray", False))
    return roofs


def _draw(ax: Any, result: BandwidthResult) -> list[tuple[Any, float, float]]:
    """Draw one roofline; returns the slope labels (text, x, y on the slope) to rotate once the layout is known."""
    from matplotlib.ticker import EngFormatter

    layers = drawable(result)
    roofs = _roofs(result)
    ridges = [flops / bw for _, _, flops, bw, _, _, _ in roofs]
    x_low = min([*(r.intensity for r in layers), *ridges]) / 8
    x_high = max([*(r.intensity for r in layers), *ridges]) * 8
    y_high = max(flops for _, _, flops, _, _, _, _ in roofs) * 3
    y_low = min([*(r.flops_per_s for r in layers), x_low * min(bw for _, _, _, bw, _, _, _ in roofs)]) / 3
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_low, x_high)
    ax.set_ylim(y_low, y_high)
    for label, short, flops, bw, style, color, measured in roofs:
        ax.plot([x_low, flops / bw, x_high], [bw * x_low, flops, flops], linestyle=style, color=color,
                linewidth=1.5, label=label)
        if measured:  # datasheet roofs are named in the legend only: their lines run close to the measured ones
            ax.text(x_high / 1.15, flops / 1.1, short, ha="right", va="top", fontsize=7, color=color)
    cpu = result.device_kind != DeviceKind.CUDA
    slopes = []
    peaks, sheet = result.peaks, result.datasheet
    x = x_low * 2
    if peaks is not None:
        text = ax.text(x, peaks.copy_bytes_per_s * x / 1.2, f"{'CPU copy' if cpu else 'device-to-device copy'} "
                       f"{_si(peaks.copy_bytes_per_s, 'B/s')} (measured, read + write)", fontsize=8,
                       rotation_mode="anchor", va="top")
        slopes.append((text, x, peaks.copy_bytes_per_s * x))
    if sheet is not None:
        text = ax.text(x, sheet.bytes_per_s * x * 1.2, f"{sheet.name} datasheet DRAM {_si(sheet.bytes_per_s, 'B/s')}",
                       fontsize=7, color="gray", rotation_mode="anchor", va="bottom")
        slopes.append((text, x, sheet.bytes_per_s * x))
    for category in CATEGORY_STYLE:
        chosen = [r for r in layers if r.category == category]
        if chosen:
            color, marker = category_style(category)
            ax.scatter([r.intensity for r in chosen], [r.flops_per_s for r in chosen],
                       s=[20 + 400 * r.share for r in chosen], color=color, marker=marker, alpha=0.8,
                       edgecolors="black", linewidths=0.5, label=f"{category} layers", zorder=3)
    ax.xaxis.set_major_formatter(EngFormatter(unit="FLOP/B"))
    ax.yaxis.set_major_formatter(EngFormatter(unit="FLOP/s"))
    ax.set_xlabel("arithmetic intensity: counted FLOPs ÷ counted bytes (FLOP/B)", fontsize=8)
    timed = "predicted kernel" if result.predicted else "measured CPU" if cpu else "measured kernel"
    ax.set_ylabel(f"achieved: counted FLOPs ÷ {timed} time", fontsize=8)
    ax.tick_params(labelsize=8)
    mode = Mode(result.mode).words
    device = f"{result.device_name} (CPU; CPU roofs)" if cpu else result.device_name
    where = "predicted for" if result.predicted else "measured on"
    ax.set_title(f"Roofline per layer · {result.model} · input {shape_str(result.input_shape)} · {mode}\n"
                 f"{where} {device}", fontsize=9)
    skipped = len(result.layers) - len(layers)
    ax.text(0.99, 0.01, f"{len(layers)} layers drawn (area ∝ share of time); {skipped} rows not drawn (no counted "
                        "FLOPs, bytes or time)", transform=ax.transAxes, ha="right", va="bottom",
            fontsize=7, color="gray")
    ax.minorticks_off()  # decades are enough to read a log-log roofline, and minor ticks cost most of the drawing
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    return slopes


def _finish(ax: Any, result: BandwidthResult, slopes: list[tuple[Any, float, float]]) -> None:
    """Once the layout is fixed: turn the bandwidth labels along their slope, and name the slowest layers where
    their labels do not cover one another."""
    for text, x, y in slopes:
        (x0, y0), (x1, y1) = ax.transData.transform([(x, y), (x * 10, y * 10)])
        text.set_rotation(math.degrees(math.atan2(y1 - y0, x1 - x0)))
    slowest = sorted(drawable(result), key=lambda r: -r.ms_per_step)[:LABELLED_LAYERS]
    renderer = ax.figure.canvas.get_renderer()
    place_labels(ax, [(r.intensity, r.flops_per_s) for r in slowest],
                 [f"{r.name} {r.type} ({100 * r.share:.0f} %)" for r in slowest], fontsize=7, arrows=True,
                 required=False, avoid=[ax.get_legend().get_window_extent(renderer),
                                        *(text.get_window_extent(renderer) for text in ax.texts
                                          if not text.get_rotation())])  # roof names, the footnote


def roofline_figure(results: Sequence[BandwidthResult], columns: int = 1, note: str | None = None,
                    panel_in: tuple[float, float] = (10, 6.5)) -> Any:
    """One roofline per result, ``columns`` to a row in the results' order, each panel ``panel_in`` inches;
    ``note`` (say, how to regenerate the file) is written under the plots. Returns the matplotlib figure."""
    rows = -(-len(results) // columns)
    figure = new_figure(panel_in[0] * columns, panel_in[1] * rows, margins_in=(1.15, 0.15, 0.75 if note else 0.6,
                                                                                  0.5), gap_in=(1.2, 1.1))
    axes = subplots_grid(figure, rows, columns)
    for ax in axes[len(results):]:
        ax.set_axis_off()
    pending = []
    for ax, result in zip(axes, results, strict=False):
        if drawable(result):
            pending.append((ax, result, _draw(ax, result)))
        else:
            ax.text(0.5, 0.5, f"{result.model}: no layer with counted FLOPs and a measured time", ha="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
    if note:
        figure.text(0.5, 0.1 / (panel_in[1] * rows), note, ha="center", va="bottom", fontsize=8, color="gray",
                    wrap=True)
    for ax, result, slopes in pending:
        _finish(ax, result, slopes)
    return figure


def roofline_png(results: Sequence[BandwidthResult], columns: int = 1, note: str | None = None,
                 panel_in: tuple[float, float] = (10, 6.5)) -> bytes:
    """:func:`roofline_figure` as PNG bytes."""
    return drawn_png(roofline_figure, results, columns, note, panel_in)


def roofline_plot(results: Sequence[BandwidthResult], path: str | os.PathLike, columns: int = 1,
                  note: str | None = None) -> None:
    """Draw one roofline per result (:func:`roofline_figure`) into the PNG ``path`` (replaced atomically)."""
    write_atomic(path, roofline_png(results, columns, note))
