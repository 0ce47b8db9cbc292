"""The plots embedded in the reports, drawn with matplotlib's Agg canvas straight to PNG bytes (no pyplot, no global
state, no display). Each returns bytes so that nothing is written before every report is ready."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from profiler.memory.trace import CATEGORIES
from profiler.models.zoo import CHAPTER7
from profiler.site.collect import BATCH, SIZES, ReportData
from profiler.site.markdown import PREDICTED_FOR, MiB

SMALL, LARGE = SIZES
DPI = 100


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


#: Label offsets (points) for the variants whose dots nearly coincide.
LABEL_OFFSETS = {"resnet34": (4, -9), "densenet169": (-62, 2)}


def params_vs_macs(data: ReportData) -> bytes:
    """Every zoo model at 224×224: parameters (x) against MACs per image (y), both log scales."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for name, model in data.models.items():
        stats = model.sizes[LARGE].layers
        main = name in CHAPTER7
        ax.scatter(stats.params, stats.totals.macs, s=40 if main else 18, color="C0" if main else "0.6", zorder=2)
        ax.annotate(name, (stats.params, stats.totals.macs), textcoords="offset points",
                    xytext=LABEL_OFFSETS.get(name, (4, 3)),
                    fontsize=8, color="black" if main else "0.4")
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="MACs per image",
           title=f"Counted at {LARGE}×{LARGE}, 1 channel (chapter-7 models in blue, variants grey)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", linewidth=0.3)
    return _png(fig)


def size_ratios(data: ReportData) -> bytes:
    """Grouped bars per chapter-7 model: what 224/96 multiplies — params, MACs, training peak, step time."""
    series = [("params (counted)", lambda name: (data.models[name].sizes[LARGE].layers.params,
                                                 data.models[name].sizes[SMALL].layers.params)),
              ("MACs (counted)", lambda name: (data.models[name].sizes[LARGE].layers.totals.macs,
                                               data.models[name].sizes[SMALL].layers.totals.macs)),
              ("training peak (predicted)", lambda name: (
                  data.models[name].sizes[LARGE].memory_train.peak_allocated_bytes,
                  data.models[name].sizes[SMALL].memory_train.peak_allocated_bytes))]

    def measured(field: str):
        def values(name: str) -> tuple[float, float] | None:
            high, low = (data.measured.run(name, size, True, BATCH) for size in (LARGE, SMALL))
            return (getattr(high, field), getattr(low, field)) if high and low else None
        return values

    if data.measured.sets:
        series += [("training peak (measured)", measured("peak_allocated_bytes")),
                   ("training ms/step (measured)", measured("ms_per_step"))]
    fig = Figure(figsize=(7.2, 3.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        for j, name in enumerate(CHAPTER7):
            pair = values(name)
            if pair is not None:
                ax.bar(j + (i - (len(series) - 1) / 2) * width, pair[0] / pair[1], width,
                       color=f"C{i}", label=label if j == 0 else None, zorder=2)
    area = (LARGE / SMALL) ** 2
    ax.axhline(area, color="black", linestyle="--", linewidth=0.8)
    ax.text(len(CHAPTER7) - 0.5, area, f" area ×{area:.2f}", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(range(len(CHAPTER7)), CHAPTER7)
    ax.set(ylabel=f"{LARGE}×{LARGE} ÷ {SMALL}×{SMALL}", title=f"From {SMALL}×{SMALL} to {LARGE}×{LARGE}, batch "
                                                               f"{BATCH}; measured = committed H200 reference")
    ax.title.set_fontsize(9)
    ax.grid(True, axis="y", linewidth=0.3)
    ax.legend(fontsize=7, ncols=2)
    return _png(fig)


def memory_breakdown(data: ReportData) -> bytes:
    """Stacked bars: the peak of a training step split by category, per chapter-7 model, at 96 and at 224; measured
    peaks (where committed) as black markers."""
    fig = Figure(figsize=(7.6, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, size in zip(axes, SIZES, strict=True):
        bottoms = [0.0] * len(CHAPTER7)
        for k, category in enumerate(CATEGORIES):
            heights = [(data.models[name].sizes[size].memory_train.breakdown.get(category) or 0) / MiB
                       for name in CHAPTER7]
            ax.bar(range(len(CHAPTER7)), heights, 0.7, bottom=bottoms, color=f"C{k}", label=category, zorder=2)
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
    return _png(fig)


#: File name under ``reports/figures/`` → (caption, drawing function). The pages embed them in this order.
FIGURES = {
    "params_vs_macs.png": (f"Parameters against MACs per image at {LARGE}×{LARGE}, log-log (counted)", params_vs_macs),
    "size_96_vs_224.png": (f"What growing the input from {SMALL}×{SMALL} to {LARGE}×{LARGE} multiplies "
                           f"(ratio {LARGE}/{SMALL})", size_ratios),
    "memory_breakdown.png": (f"Peak training memory split by what holds it, batch {BATCH} ({PREDICTED_FOR})",
                             memory_breakdown),
}


def render_figures(data: ReportData) -> dict[str, bytes]:
    """File name → PNG bytes, for ``reports/figures/``."""
    return {file: draw(data) for file, (_, draw) in FIGURES.items()}
