"""The plots embedded in the reports, drawn with matplotlib's Agg canvas (no pyplot, no global state, no display) at
:data:`~profiler.format.plots.DPI` in the colour-blind-safe palette of :func:`~profiler.format.plots.palette`, each
with a legend. Each drawing function returns its figure; :func:`render_figures` turns them into PNG bytes on every
core, so that nothing is written before every report is ready."""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.figure import Figure

from profiler.bandwidth.records import BandwidthResult
from profiler.format.plots import drawn_png, new_figure, palette, place_labels, roofline_figure
from profiler.memory.trace import CATEGORIES
from profiler.models.zoo import CHAPTER7
from profiler.site.collect import BATCH, SIZES, ReportData, SizeData
from profiler.site.markdown import PREDICTED_FOR, MiB
from profiler.util.parallel import frozen_heap, run_all

SMALL, LARGE = SIZES
#: Each layer-category colour of the memory breakdown, as an index into the palette.
BREAKDOWN_COLORS = {"weights": 0, "gradients": 7, "optimizer": 3, "input": 2, "activations": 1, "workspace": 8}


def roofline_file(name: str) -> str:
    """The file name of a model's predicted roofline under ``reports/figures/``."""
    return f"roofline_{name}.png"


def params_vs_macs(data: ReportData) -> Figure:
    """Every zoo model at the input the book trains it at (LeNet 28×28, the others 224×224): parameters (x) against
    MACs per image (y), both log scales, one marker per group, each point named."""
    colors = palette()
    groups = {"chapter 7 (the book's models)": (colors[0], "o", 44),
              "exercise variants (deeper VGG, ResNet, DenseNet)": (colors[1], "s", 26),
              "LeNet (chapter 6), at its book input 28×28": (colors[5], "^", 44)}

    def group(name: str) -> str:
        return list(groups)[0 if name in CHAPTER7 else 2 if name == "lenet" else 1]

    fig = new_figure(7.2, 4.8)
    ax = fig.add_subplot()
    points = {name: (model.sizes[model.book_size].layers.params, model.sizes[model.book_size].layers.totals.macs)
              for name, model in data.models.items()}
    for label, (color, marker, area) in groups.items():
        chosen = [points[name] for name in data.models if group(name) == label]
        ax.scatter(*zip(*chosen, strict=True), s=area, color=color, marker=marker, edgecolors="black",
                   linewidths=0.5, zorder=2, label=label)
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="MACs per image")
    low = min(y for _, y in points.values())
    ax.set_ylim(low / 4, max(y for _, y in points.values()) * 3)
    ax.set_xlim(min(x for x, _ in points.values()) / 3, max(x for x, _ in points.values()) * 6)
    ax.set_title(f"Counted at each model's book input ({LARGE}×{LARGE}; LeNet 28×28), 1 channel, 10 classes",
                 fontsize=9)
    ax.grid(True, which="major", linewidth=0.3)
    legend = ax.legend(fontsize=7, loc="lower right")
    fig.draw_without_rendering()
    place_labels(ax, list(points.values()), list(points), fontsize=7, arrows=True,
                 avoid=[legend.get_window_extent(fig.canvas.get_renderer())])
    return fig


def size_ratios(data: ReportData) -> Figure:
    """Grouped bars per chapter-7 model: what 224/96 multiplies — params, MACs, training peak, step time; predicted
    and measured side by side (measured bars hatched)."""
    colors = palette()

    def predicted(value: Callable[[SizeData], float]) -> Callable[[str], tuple[float, float]]:
        return lambda name: tuple(value(data.models[name].sizes[size]) for size in (LARGE, SMALL))

    def measured(field: str) -> Callable[[str], tuple[float, float] | None]:
        def values(name: str) -> tuple[float, float] | None:
            high, low = (data.measured.run(name, size, True, BATCH) for size in (LARGE, SMALL))
            return (getattr(high, field), getattr(low, field)) if high and low else None
        return values

    series = [("params (counted)", predicted(lambda sd: sd.layers.params), colors[3], None),
              ("MACs (counted)", predicted(lambda sd: sd.layers.totals.macs), colors[2], None),
              ("training peak (predicted)", predicted(lambda sd: sd.memory_train.peak_allocated_bytes), colors[0],
               None),
              ("training ms/step (predicted)", predicted(lambda sd: sd.time_train.step_ms), colors[4], None)]
    if data.measured.sets:
        series[3:3] = [("training peak (measured)", measured("peak_allocated_bytes"), colors[1], "//")]
        series += [("training ms/step (measured)", measured("ms_per_step"), colors[5], "\\\\")]
    fig = new_figure(8.0, 4.2)
    ax = fig.add_subplot()
    width = 0.84 / len(series)
    for i, (label, values, color, hatch) in enumerate(series):
        for j, name in enumerate(CHAPTER7):
            pair = values(name)
            if pair is not None:
                ax.bar(j + (i - (len(series) - 1) / 2) * width, pair[0] / pair[1], width, color=color, hatch=hatch,
                       edgecolor="black" if hatch else color, linewidth=0.4, label=label if j == 0 else None,
                       zorder=2)
    area = (LARGE / SMALL) ** 2
    ax.axhline(area, color="black", linestyle="--", linewidth=0.8, label=f"area ×{area:.2f}")
    ax.set_xticks(range(len(CHAPTER7)), CHAPTER7)
    ax.set(ylabel=f"{LARGE}×{LARGE} ÷ {SMALL}×{SMALL}", ylim=(0, ax.get_ylim()[1] * 1.25))
    ax.set_title(f"From {SMALL}×{SMALL} to {LARGE}×{LARGE}, batch {BATCH}; {PREDICTED_FOR}; measured = committed "
                 "H200 reference (hatched)", fontsize=9)
    ax.grid(True, axis="y", linewidth=0.3)
    ax.legend(fontsize=7, ncols=2)
    return fig


def memory_breakdown(data: ReportData) -> Figure:
    """Stacked bars: the peak of a training step split by category, per chapter-7 model, at 96 and at 224; measured
    peaks (where committed) as black markers."""
    colors = palette()
    fig = new_figure(8.0, 4.2)
    axes = fig.subplots(1, 2)
    for ax, size in zip(axes, SIZES, strict=True):
        bottoms = [0.0] * len(CHAPTER7)
        for category in CATEGORIES:
            heights = [(data.models[name].sizes[size].memory_train.breakdown.get(category) or 0) / MiB
                       for name in CHAPTER7]
            ax.bar(range(len(CHAPTER7)), heights, 0.7, bottom=bottoms, color=colors[BREAKDOWN_COLORS[category]],
                   edgecolor="white", linewidth=0.5, label=category, zorder=2)
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        runs = [data.measured.run(name, size, True, BATCH) for name in CHAPTER7]
        points = [(j, run.peak_allocated_bytes / MiB) for j, run in enumerate(runs) if run]
        if points:
            ax.scatter(*zip(*points, strict=True), marker="D", color="black", s=14, zorder=3,
                       label="measured peak (H200)")
        ax.set_xticks(range(len(CHAPTER7)), CHAPTER7, rotation=30, fontsize=8)
        ax.set(title=f"{size}×{size}", ylabel="MiB at the peak" if size == SMALL else None)
        ax.grid(True, axis="y", linewidth=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Training step, batch {BATCH}, {PREDICTED_FOR}", fontsize=9)
    return fig


def roofline(inference: BandwidthResult, train: BandwidthResult) -> Figure:
    """A model's predicted rooflines, inference beside the training step (:func:`~profiler.format.plots.
    roofline_figure`)."""
    return roofline_figure([inference, train], columns=2, panel_in=(6.4, 4.8))


#: File name under ``reports/figures/`` → (caption, drawing function). comparison.md embeds them in this order.
FIGURES = {
    "params_vs_macs.png": ("Parameters against MACs per image at each model's book input, log-log (counted)",
                           params_vs_macs),
    "size_96_vs_224.png": (f"What growing the input from {SMALL}×{SMALL} to {LARGE}×{LARGE} multiplies "
                           f"(ratio {LARGE}/{SMALL})", size_ratios),
    "memory_breakdown.png": (f"Peak training memory split by what holds it, batch {BATCH} ({PREDICTED_FOR})",
                             memory_breakdown),
}




#: The report data the whole-report figures draw from while :func:`render_figures` runs: forked workers inherit
#: it, instead of each unpickling the whole ReportData (2.4 MB, 0.2 s) from its task's arguments.
_DRAWING: list[ReportData] = []


def _report_png(draw: Callable[[ReportData], Figure]) -> bytes:
    return drawn_png(draw, _DRAWING[-1])


def render_figures(data: ReportData) -> dict[str, bytes]:
    """File name → PNG bytes, for ``reports/figures/``: :data:`FIGURES`, then one predicted roofline per model (at
    its book input), drawn on every core (:func:`~profiler.util.parallel.run_all`)."""
    import matplotlib.backends.backend_agg  # noqa: F401  (imported once here, inherited by the forked workers)
    import matplotlib.figure  # noqa: F401
    tasks = {file: (_report_png, (draw,), {}) for file, (_, draw) in FIGURES.items()}
    for name, model in data.models.items():
        sd = model.sizes[model.book_size]
        tasks[roofline_file(name)] = (drawn_png, (roofline, sd.time_inference, sd.time_train), {})
    _DRAWING.append(data)
    try:
        with frozen_heap():
            return dict(zip(tasks, run_all(list(tasks.values())), strict=True))
    finally:
        _DRAWING.pop()
