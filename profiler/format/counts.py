"""Counting records (:class:`~profiler.counting.ModelStats`) → table, markdown, JSON, CSV. No arithmetic on costs
happens here beyond unit scaling."""

from __future__ import annotations

from collections.abc import Sequence

from profiler.counting import Counts, LayerStats, ModelStats, conventions
from profiler.format.output import render_table, to_csv, to_json
from profiler.kinds import Mode, RowKind
from profiler.util.units import binary_unit, decimal_unit, fmt_scaled, human_bytes, human_count, shape_str

TRAIN_NOTE = ("training step = forward + cross-entropy loss + backward (weight and input gradients); "
              "the optimizer update is not counted")


def title(stats: ModelStats) -> str:
    """One line naming the model, its source, input shape, dtype and mode."""
    source = f" ({stats.model_source})" if stats.model_source else ""
    return f"{stats.model}{source} · input {shape_str(stats.input_shape)} {stats.dtype} · {Mode(stats.mode).words}"


#: How the type column marks the rows that are not a leaf module.
ROW_KIND_SUFFIX = {RowKind.OWN: " (own ops)", RowKind.SUBTREE: " (all)"}


def _type(layer: LayerStats) -> str:
    return layer.type + ROW_KIND_SUFFIX.get(layer.kind, "")


def _flops_table(stats: ModelStats, fmt: str) -> str:
    layers, totals = stats.layers, stats.totals
    mac_div, mac_p = decimal_unit([totals.macs])
    other_div, other_p = decimal_unit([totals.other_ops])
    byte_div, byte_u = binary_unit([totals.bytes])
    headers = ["layer", "type", "output shape", "params", f"MACs ({mac_p or '1'})", f"FLOPs ({mac_p or '1'})",
               f"other ops ({other_p or '1'})", f"bytes ({byte_u})", "FLOP/B"]

    def cells(c: Counts) -> list[str]:
        return [_cell(c.macs, mac_div), _cell(c.flops, mac_div), _cell(c.other_ops, other_div),
                _cell(c.bytes, byte_div), f"{c.intensity:.1f}" if c.flops else "-"]

    rows = [[layer.name, _type(layer), shape_str(layer.output_shape), _cell(layer.params, 1), *cells(layer)]
            for layer in layers]
    rows.append(["total", "", "", f"{stats.params:,}", *cells(totals)])
    return render_table(headers, rows, fmt, colalign=("left", "left", "left") + ("right",) * 6)


def _cell(value: int, divisor: float) -> str:
    """A scaled count, or "-" for exactly zero so that the rows with work stand out."""
    return fmt_scaled(value, divisor) if value else "-"


def _params_table(stats: ModelStats, fmt: str) -> str:
    headers = ["layer", "type", "output shape", "params", "param bytes"]
    rows = [[layer.name, _type(layer), shape_str(layer.output_shape), _cell(layer.params, 1),
             human_bytes(layer.param_bytes) if layer.params else "-"] for layer in stats.layers]
    rows.append(["total", "", "", f"{stats.params:,}", human_bytes(stats.param_bytes)])
    return render_table(headers, rows, fmt, colalign=("left", "left", "left", "right", "right"))


def _footer(stats: ModelStats, what: str) -> list[str]:
    totals = stats.totals
    lines = []
    if what == "flops":
        lines.append(f"totals: {stats.params:,} params · {human_count(totals.macs)} MACs · "
                     f"{human_count(totals.flops)} FLOPs · {human_count(totals.other_ops)} other ops · "
                     f"{human_bytes(totals.bytes)} moved · {totals.intensity:.1f} FLOP/B")
        if stats.phases:
            split = " · ".join(f"{phase} {human_count(c.macs)} MACs" for phase, c in stats.phases.items())
            lines.append(f"{TRAIN_NOTE}; {split}")
        uncounted = ", ".join(f"{op} ×{n}" for op, n in stats.uncounted_ops.items()) or "none"
        lines.append(f"uncounted ops (no MAC/other-ops rule; their bytes are counted): {uncounted}")
        lines.append(f"convention: {conventions()}")
    else:
        lines.append(f"total: {stats.params:,} parameters, {human_bytes(stats.param_bytes)} as {stats.dtype}")
    return lines + [f"note: {note}" for note in stats.notes]


def _summary(results: Sequence[ModelStats], fmt: str, what: str) -> str:
    if what == "params":
        headers = ["model", "input", "params", "param bytes"]
        rows = [[s.model, shape_str(s.input_shape), f"{s.params:,}", human_bytes(s.param_bytes)] for s in results]
        return render_table(headers, rows, fmt)
    mac_div, mac_p = decimal_unit([s.totals.macs for s in results])
    other_div, other_p = decimal_unit([s.totals.other_ops for s in results])
    byte_div, byte_u = binary_unit([s.totals.bytes for s in results])
    headers = ["model", "input", "mode", "params", f"MACs ({mac_p})", f"FLOPs ({mac_p})", f"other ops ({other_p})",
               f"bytes ({byte_u})", "FLOP/B"]
    rows = [[s.model, shape_str(s.input_shape), s.mode, f"{s.params:,}", fmt_scaled(s.totals.macs, mac_div),
             fmt_scaled(s.totals.flops, mac_div), fmt_scaled(s.totals.other_ops, other_div),
             fmt_scaled(s.totals.bytes, byte_div), f"{s.totals.intensity:.1f}"] for s in results]
    return render_table(headers, rows, fmt)


def format_stats(results: Sequence[ModelStats], fmt: str, what: str = "flops") -> str:
    """Render counting results as ``fmt`` (table, markdown, json, csv); ``what`` is "flops" or "params"."""
    if fmt == "json":
        objs = [s.to_dict(what) for s in results]
        return to_json(objs)
    if fmt == "csv":
        return _csv(results, what)
    blocks = []
    for stats in results:
        heading = f"### {title(stats)}" if fmt == "markdown" else title(stats)
        table = _flops_table(stats, fmt) if what == "flops" else _params_table(stats, fmt)
        footer = _footer(stats, what)
        if fmt == "markdown":
            footer = [f"- {line}" for line in footer]
        blocks.append("\n".join([heading, "", table, "", *footer]))
    if len(results) > 1:
        heading = "### Summary" if fmt == "markdown" else "Summary"
        blocks.append(f"{heading}\n\n{_summary(results, fmt, what)}")
    return "\n\n".join(blocks) + "\n"


def _csv(results: Sequence[ModelStats], what: str) -> str:
    if what == "params":
        headers = ["model", "input_shape", "layer", "type", "output_shape", "params"]
        rows = [[s.model, shape_str(s.input_shape), layer.name, layer.type, shape_str(layer.output_shape),
                 layer.params] for s in results for layer in [*s.layers, _total_row(s)]]
        return to_csv(headers, rows)
    headers = ["model", "input_shape", "mode", "dtype", "layer", "type", "output_shape", "params", "macs", "flops",
               "other_ops", "bytes", "intensity"]
    rows = [[s.model, shape_str(s.input_shape), s.mode, s.dtype, layer.name, layer.type,
             shape_str(layer.output_shape), layer.params, layer.macs, layer.flops, layer.other_ops, layer.bytes,
             f"{layer.intensity:.4f}"] for s in results for layer in [*s.layers, _total_row(s)]]
    return to_csv(headers, rows)


def _total_row(stats: ModelStats) -> LayerStats:
    totals = stats.totals
    return LayerStats(totals.macs, totals.other_ops, totals.bytes, name="(total)", type="",
                      params=stats.params, param_bytes=stats.param_bytes)
