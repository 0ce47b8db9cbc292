"""Plots of bandwidth records. matplotlib is imported only when a plot is drawn, and draws off-screen (Agg canvas,
no pyplot state), so the CLI starts fast and works without a display.

A roofline puts each layer at (counted FLOPs ÷ counted bytes, counted FLOPs ÷ measured time) on log-log axes, under
the device's measured roofs: the copy bandwidth (a slope) and the compute peaks (flat). On a GPU the FP32 roof is the
matmul with TF32 off and the TF32 roof the faster of the TF32 matmul and the convolution; datasheet roofs are drawn
dashed beside them. On the CPU the roofs are the CPU's own measured copy rate and the best of its convolution and
matmul rates, labelled CPU. A predicted
result (no GPU ran) is drawn at its predicted kernel times under the datasheet roofs the time model used.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

from profiler.bandwidth.records import BandwidthResult, LayerTiming
from profiler.device import DeviceKind
from profiler.kinds import Mode
from profiler.util.files import write_atomic
from profiler.util.units import decimal_unit, shape_str

#: How many of the slowest drawn layers get their name written beside their point.
LABELLED_LAYERS = 8
COLORS = {"conv": "tab:blue", "linear": "tab:orange", "normalization": "tab:green", "elementwise": "tab:red",
          "pooling": "tab:purple", "other": "tab:gray"}


def _si(value: float, unit: str) -> str:
    divisor, prefix = decimal_unit([value])
    return f"{value / divisor:,.3g} {prefix}{unit}"


def drawable(result: BandwidthResult) -> list[LayerTiming]:
    """The layers a roofline can place: counted FLOPs and bytes, and a measured time."""
    return [r for r in result.layers if r.flops and r.bytes and r.flops_per_s]


def _predicted_roofs(result: BandwidthResult) -> list[tuple[str, str, float, float, str, str, bool]]:
    """The datasheet roofs a prediction put FLOPs on (one per compute precision it used), drawn solid."""
    roofs = (result.assumptions or {}).get("roofs", {})
    used = {r["compute_roof"]: r["compute_flops_per_s"] for r in roofs.values() if r["compute_roof"]}
    bandwidth = result.assumptions["bandwidth_bytes_per_s"]
    return [(f"{name.upper()} {_si(flops, 'FLOP/s')} ({result.device_name} datasheet)",
             f"{name.upper()} {_si(flops, 'FLOP/s')}", flops, bandwidth, "-", color, True)
            for (name, flops), color in zip(sorted(used.items(), key=lambda item: item[1]), ("black", "dimgray",
                                                                                              "gray"), strict=False)]


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
                      p.copy_bytes_per_s, "-", "dimgray", True))
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
    for category, color in COLORS.items():
        chosen = [r for r in layers if r.category == category]
        if chosen:
            ax.scatter([r.intensity for r in chosen], [r.flops_per_s for r in chosen],
                       s=[20 + 400 * r.share for r in chosen], color=color, alpha=0.75, edgecolors="black",
                       linewidths=0.5, label=f"{category} layers", zorder=3)
    ax.xaxis.set_major_formatter(EngFormatter(unit="FLOP/B"))
    ax.yaxis.set_major_formatter(EngFormatter(unit="FLOP/s"))
    ax.set_xlabel("arithmetic intensity: counted FLOPs ÷ counted bytes (FLOP/B)")
    timed = "predicted kernel" if result.predicted else "measured CPU" if cpu else "measured kernel"
    ax.set_ylabel(f"achieved: counted FLOPs ÷ {timed} time (FLOP/s)")
    mode = Mode(result.mode).words
    device = f"{result.device_name} (CPU; CPU roofs)" if cpu else result.device_name
    where = "predicted for" if result.predicted else "measured on"
    ax.set_title(f"Roofline per layer · {result.model} · input {shape_str(result.input_shape)} · {mode} · {where} "
                 f"{device}", fontsize=10, wrap=True)
    skipped = len(result.layers) - len(layers)
    ax.text(0.99, 0.01, f"{len(layers)} layers drawn (area ∝ share of time); {skipped} rows not drawn (no counted "
                        "FLOPs, bytes or time)", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            color="gray")
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    return slopes


def _finish(ax: Any, result: BandwidthResult, slopes: list[tuple[Any, float, float]]) -> None:
    """Once the layout is fixed: turn the bandwidth labels along their slope, and name the slowest layers where
    their labels do not cover one another."""
    for text, x, y in slopes:
        (x0, y0), (x1, y1) = ax.transData.transform([(x, y), (x * 10, y * 10)])
        text.set_rotation(math.degrees(math.atan2(y1 - y0, x1 - x0)))
    placed: list[tuple[float, float, float, float]] = []
    offsets = [(6, 4), (6, -14), (6, 16), (6, -26), (6, 28), (-8, 16), (-8, -26)]
    for r in sorted(drawable(result), key=lambda r: -r.ms_per_step)[:LABELLED_LAYERS]:
        label = f"{r.name} {r.type} ({100 * r.share:.0f} %)"
        px, py = ax.transData.transform((r.intensity, r.flops_per_s))
        width, height = 6.0 * len(label), 12.0
        for dx, dy in offsets:
            left = px + dx if dx > 0 else px + dx - width
            box = (left, py + dy, left + width, py + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(label, xy=(r.intensity, r.flops_per_s), xytext=(dx, dy), textcoords="offset pixels",
                    ha="left" if dx > 0 else "right", fontsize=8, zorder=4,
                    arrowprops={"arrowstyle": "-", "color": "gray", "linewidth": 0.5} if abs(dy) > 10 else None)


#: Pixels per inch of the saved PNG (the figure is laid out at the same resolution it is saved at).
DPI = 120


def roofline_figure(results: Sequence[BandwidthResult], columns: int = 1, note: str | None = None) -> Any:
    """The matplotlib Figure of :func:`roofline_plot`, laid out and labelled (every text inside the figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = -(-len(results) // columns)
    figure = Figure(figsize=(10 * columns, 6.5 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
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
        figure.supxlabel(note, fontsize=8, color="gray", wrap=True)
    figure.draw_without_rendering()
    for ax, result, slopes in pending:
        _finish(ax, result, slopes)
    figure.set_layout_engine("none")  # keep the layout the labels were placed for
    return figure


def roofline_plot(results: Sequence[BandwidthResult], path: str | os.PathLike, columns: int = 1,
                  note: str | None = None) -> None:
    """Draw one roofline per result, ``columns`` to a row in the results' order, into the PNG ``path`` (replaced
    atomically); ``note`` (say, how to regenerate the file) is written under the plots."""
    buffer = io.BytesIO()
    roofline_figure(results, columns, note).savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())
