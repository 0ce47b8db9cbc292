"""Memory records (:class:`~profiler.memory.records.MemoryResult`) → table, markdown, JSON, CSV.

The first line of every table or markdown block says whether the figures were measured (and on which device) or
predicted (and for which GPU), and when the step does not fit the GPU, says so: a predicted number is never shown as a
measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from profiler.device import DeviceKind
from profiler.format.output import render_table, to_csv, to_json
from profiler.kinds import Mode, Phase, Source
from profiler.memory.records import VERDICT_FIELDS, MemoryResult, Verdict, verdict_fields
from profiler.memory.trace import CATEGORIES
from profiler.util.units import human_bytes, shape_str

TOP_LAYERS = 10


def headline(result: MemoryResult) -> str:
    """"measured on X" / "predicted for X (no GPU used)", then model, input, mode."""
    where = (f"measured on {result.device}" if result.source == Source.MEASURED
             else f"predicted for {result.device} (no GPU used)")
    mode = "inference" if result.mode == Mode.INFERENCE else f"training step ({result.optimizer})"
    extras = "".join([" · activation checkpointing" if result.checkpoint else ""])
    verdict = result.verdict
    fit = "" if verdict is None or verdict.fits else (
        f" · DOES NOT FIT the {verdict.device}: needs {human_bytes(verdict.required_bytes)} + "
        f"{human_bytes(verdict.device_overhead_bytes)} overhead, has {human_bytes(verdict.device_total_bytes)}")
    return f"{where} · {result.model} · input {shape_str(result.input_shape)} {result.dtype} · {mode}{extras}{fit}"


def _verdict_rows(verdict: Verdict) -> list[list[str]]:
    """The fit verdict as rows of the summary table, with the measured counterparts when there are."""
    rows = [[f"fits the {verdict.device}", "yes" if verdict.fits else "no",
             "required + device overhead <= device total"],
            ["required", human_bytes(verdict.required_bytes),
             f"predicted peak reserved x (1 + m), m = {100 * verdict.reserved_margin:.1f} %"],
            ["device overhead", human_bytes(verdict.device_overhead_bytes), "CUDA context and libraries, outside the "
                                                                            "allocator"],
            ["device total", human_bytes(verdict.device_total_bytes), "memory of the card"],
            ["margin", ("" if verdict.margin_bytes >= 0 else "-") + human_bytes(abs(verdict.margin_bytes)),
             "left over" if verdict.margin_bytes >= 0 else "missing"]]
    if verdict.held is not None:
        ran = verdict.measured_reserved_bytes is not None
        rows.append(["verdict held", "yes" if verdict.held else "no",
                     ("the step ran" if ran else "the step ran out of memory")
                     + (f"; measured peak reserved {'<=' if verdict.within_required else '>'} required" if ran
                        else "")])
    return rows


def _share(part: int | None, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if part is not None and whole else "-"


def _block(result: MemoryResult, fmt: str) -> str:
    lines = [f"### {headline(result)}" if fmt == "markdown" else headline(result), ""]
    if result.out_of_memory:
        lines.append(f"out of memory: {result.notes[-1]}")
        return "\n".join(lines)
    peak = result.peak_allocated_bytes
    on_cpu = result.device_kind == DeviceKind.CPU
    if on_cpu:
        what = ("resident tensors + the most that tensors created during the step held at once",
                "the same (the CPU allocator caches nothing)")
    else:
        verb = "" if result.source == Source.MEASURED else "predicted "
        what = (f"{verb}torch.cuda.max_memory_allocated over the step",
                f"{verb}torch.cuda.max_memory_reserved: segments the caching allocator holds")
    summary = [["peak allocated", human_bytes(peak), what[0]],
               ["peak reserved", human_bytes(result.peak_reserved_bytes), what[1]],
               ["baseline", human_bytes(result.baseline_bytes), "weights + input before the step"]]
    if result.source == Source.MEASURED and not on_cpu:
        summary.append(["NVML used (device)", human_bytes(result.nvml_used_bytes)
                        if result.nvml_used_bytes is not None else "-", result.nvml_note or "whole device, "
                                                                                            "all processes"])
    if result.verdict is not None:
        summary += _verdict_rows(result.verdict)
    lines += [render_table(["", "bytes", "what"], summary, fmt, colalign=("left", "right", "left")), ""]
    breakdown = [[category, human_bytes(result.breakdown[category]) if result.breakdown.get(category) is not None
                  else "(in activations)", _share(result.breakdown.get(category), peak)]
                 for category in CATEGORIES if category in result.breakdown]
    lines += ["at the peak:", "", render_table(["component", "bytes", "share"], breakdown, fmt), ""]
    if result.phases:
        lines.append("peak per phase: " + " · ".join(f"{phase} {human_bytes(v)}" for phase, v in
                                                     result.phases.items()))
    if result.layers:
        top = sorted(result.layers.items(), key=lambda kv: -kv[1])[:TOP_LAYERS]
        lines += ["", f"layers that add the most memory in forward (top {len(top)} of {len(result.layers)}):", "",
                  render_table(["layer", "bytes left allocated"], [[n, human_bytes(b)] for n, b in top], fmt)]
    notes = result.all_notes
    if notes:
        lines.append("")
    for note in notes:
        lines.append(f"{'- ' if fmt == 'markdown' else ''}note: {note}")
    return "\n".join(lines)


def format_memory(results: Sequence[MemoryResult], fmt: str) -> str:
    """Render memory results as ``fmt`` (table, markdown, json, csv)."""
    if fmt == "json":
        objs = [r.to_dict() for r in results]
        return to_json(objs)
    if fmt == "csv":
        return to_csv(CSV_HEADERS, [_csv_row(r) for r in results])
    blocks = [_block(r, fmt) for r in results]
    if len(results) > 1:
        rows = [[r.model, shape_str(r.input_shape), r.mode, r.source, r.device,
                 "out of memory" if r.out_of_memory else human_bytes(r.peak_allocated_bytes),
                 "-" if r.out_of_memory else human_bytes(r.peak_reserved_bytes),
                 "-" if r.verdict is None else "yes" if r.verdict.fits else "no"] for r in results]
        heading = "### Summary" if fmt == "markdown" else "Summary"
        blocks.append(f"{heading}\n\n" + render_table(["model", "input", "mode", "source", "device",
                                                         "peak allocated", "peak reserved", "fits (predicted)"],
                                                        rows, fmt))
    return "\n\n".join(blocks) + "\n"


CSV_HEADERS = ["model", "input_shape", "mode", "source", "device", "optimizer", "dtype", "checkpoint",
               "out_of_memory", "peak_allocated_bytes", "peak_reserved_bytes", "baseline_bytes",
               *(f"{c}_bytes" for c in CATEGORIES), "forward_peak_bytes", "backward_peak_bytes",
               "optimizer_peak_bytes", "nvml_used_bytes", *VERDICT_FIELDS]


def _csv_row(r: MemoryResult) -> list[Any]:
    def cell(value: int | None) -> Any:
        return "" if value is None else value

    return [r.model, shape_str(r.input_shape), r.mode, r.source, r.device, r.optimizer or "", r.dtype, r.checkpoint,
            r.out_of_memory, r.peak_allocated_bytes, r.peak_reserved_bytes, r.baseline_bytes,
            *(cell(r.breakdown.get(c)) for c in CATEGORIES),
            *(cell(r.phases.get(p)) for p in Phase), cell(r.nvml_used_bytes),
            *(cell(v) for v in verdict_fields(r.verdict).values())]
