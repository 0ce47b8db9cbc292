"""fvcore comparisons (:class:`~profiler.counting.compare.FvcoreComparison`) → table, markdown, JSON, CSV.

Counts are printed exact (with thousands separators): the differences are often a few hundred flops in a billion.
Nothing is computed here beyond picking words: the records carry the counts, differences and reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

from profiler.counting.compare import CONVENTION, PROTOCOL, REASONS, ComparedRow, FvcoreComparison
from profiler.format.output import render_table, to_csv, to_json
from profiler.kinds import FvcoreReason
from profiler.util.units import shape_str

#: The reasons as the table's "why" column names them (the full rule is listed under the table).
SHORT = {
    FvcoreReason.BATCH_NORM: "batch norm",
    FvcoreReason.NORM: "layer/group/instance norm",
    FvcoreReason.ADAPTIVE_POOL: "adaptive avg pooling",
    FvcoreReason.UPSAMPLING: "upsampling",
    FvcoreReason.GRID_SAMPLER: "grid sampling",
    FvcoreReason.UNHANDLED_OP: "no fvcore handle",
    FvcoreReason.EINSUM_ROUNDING: "einsum rounding",
    FvcoreReason.UNEXPLAINED: "unexplained",
}

def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"


def _why(row: ComparedRow) -> str:
    parts = []
    for difference in row.differences:
        label = SHORT[difference.reason]
        if difference.reason is FvcoreReason.UNHANDLED_OP:
            label += f" ({', '.join(op.removeprefix('aten::') for op in row.unsupported_ops)})"
        parts.append(label + (f" {_signed(difference.flops)}" if len(row.differences) > 1 else ""))
    return "; ".join(parts)


def _block(result: FvcoreComparison, fmt: str) -> str:
    origin = f" ({result.model_source})" if result.model_source else ""
    head = (f"{result.model}{origin} · input {shape_str(result.input_shape)} · inference · our MACs beside fvcore "
            f"{result.fvcore_version}'s flops")
    headers = ["layer", "type", "ours: MACs", "fvcore: flops", "fvcore − ours", "why"]
    rows = [[r.name, r.type, f"{r.macs:,}", f"{r.fvcore_flops:,}", _signed(r.difference), _why(r)]
            for r in result.rows]
    rows.append(["total", "", f"{result.macs:,}", f"{result.fvcore_flops:,}",
                 _signed(result.fvcore_flops - result.macs), ""])
    table = render_table(headers, rows, fmt, colalign=("left", "left", "right", "right", "right", "left"))
    reasons = result.by_reason
    split = " + ".join(f"{SHORT[reason]} {_signed(flops)}" for reason, flops in reasons.items()) or "nothing"
    lines = [f"fvcore − ours = {_signed(result.fvcore_flops - result.macs)} = {split}",
             *(f"why ({SHORT[reason]}, {_signed(flops)}): {REASONS[reason]}" for reason, flops in reasons.items()),
             "fvcore did not count (no handle; 0 there): "
             + (", ".join(f"{op} ×{n}" for op, n in result.unsupported_ops.items()) or "nothing"),
             f"convention: {CONVENTION}", f"protocol: {PROTOCOL}", *(f"note: {note}" for note in result.notes)]
    if fmt == "markdown":
        return "\n".join([f"### {head}", "", table, "", *(f"- {line}" for line in lines)])
    return "\n".join([head, "", table, "", *lines])


CSV_HEADERS = ["model", "input_shape", "layer", "type", "macs", "fvcore_flops", "difference", "reasons"]


def format_comparison(results: Sequence[FvcoreComparison], fmt: str) -> str:
    """Render fvcore comparisons as ``fmt`` (table, markdown, json: always a list, csv)."""
    if fmt == "json":
        return to_json([r.to_dict() for r in results])
    if fmt == "csv":
        return to_csv(CSV_HEADERS, [[r.model, shape_str(r.input_shape), row.name, row.type, row.macs,
                                     row.fvcore_flops, row.difference,
                                     ";".join(f"{d.reason}:{d.flops:+d}" for d in row.differences)]
                                    for r in results for row in r.rows])
    return "\n\n".join(_block(r, fmt) for r in results) + "\n"
