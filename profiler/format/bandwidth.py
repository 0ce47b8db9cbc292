"""Bandwidth records (:class:`~profiler.bandwidth.records.BandwidthResult`) → table, markdown, JSON, CSV.

The first line of every block says where the figures were measured: a GPU by name, or the CPU — and then no GPU
figure (kernel time, NVML, datasheet, GPU peaks) appears anywhere in the block. Nothing is computed here beyond unit
scaling: the records carry the rates and fractions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from profiler.bandwidth.records import CATEGORIES, BandwidthResult, LayerTiming
from profiler.device import DeviceKind
from profiler.device.nvml import MetricSummary
from profiler.format.output import render_table, to_csv, to_json
from profiler.kinds import OPTIMIZER_ROW, OTHER_ROW, Mode
from profiler.util.units import binary_unit, decimal_unit, fmt_scaled, human_bytes, shape_str

NVML_LABELS = {"used_memory_bytes": "used memory", "gpu_util_percent": "GPU utilization",
               "memory_util_percent": "memory-controller utilization",
               "dram_bw_util_percent": "DRAM bandwidth utilization (GPM)"}


def headline(result: BandwidthResult) -> str:
    """"measured on <GPU> (CUDA)", "measured on CPU (...) — CPU figures only" or "predicted for <GPU> (<key>) — no
    GPU ran", then model, input, mode, and the steps profiled or the optimizer and bound predicted."""
    where = result.where
    source = f" ({result.model_source})" if result.model_source else ""
    mode = Mode(result.mode).words
    how = (f"{result.optimizer + ' · ' if result.optimizer else ''}{result.bound}-bound" if result.predicted else
           f"{result.steps} profiled steps after {result.warmup} warm-up")
    return f"{where} · {result.model}{source} · input {shape_str(result.input_shape)} {result.dtype} · {mode} · {how}"


def _rate(value: float | None, divisor: float) -> str:
    return "-" if not value else fmt_scaled(value, divisor)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _layer_table(result: BandwidthResult, fmt: str) -> str:
    rows = result.layers
    train = result.mode == Mode.TRAIN
    flop_div, flop_p = decimal_unit([r.flops or 0 for r in rows])
    byte_div, byte_u = binary_unit([r.bytes or 0 for r in rows])
    fps_div, fps_p = decimal_unit([r.flops_per_s or 0 for r in rows])
    bps_div, bps_p = decimal_unit([r.bytes_per_s or 0 for r in rows])
    time_label = ("predicted ms/step" if result.predicted else "kernel ms/step" if result.device_kind == DeviceKind.CUDA
                  else "CPU ms/step")
    headers = ["layer", "type", time_label, "% time", *(["fwd ms", "bwd ms"] if train else []),
               f"FLOPs ({flop_p or '1'})", f"bytes ({byte_u})", "FLOP/B", f"{fps_p}FLOP/s", f"{bps_p}B/s",
               "% peak FLOP/s", "% peak B/s", "roof", "bound"]

    def cells(r: LayerTiming) -> list[str]:
        split = [f"{r.forward_ms:.3f}" if r.forward_ms else "-", f"{r.backward_ms:.3f}" if r.backward_ms else "-"]
        return [r.name, r.type, f"{r.ms_per_step:.3f}", f"{100 * r.share:.1f}", *(split if train else []),
                "-" if not r.flops else fmt_scaled(r.flops, flop_div),
                "-" if not r.bytes else fmt_scaled(r.bytes, byte_div),
                "-" if r.intensity is None or not r.flops else f"{r.intensity:.1f}",
                _rate(r.flops_per_s, fps_div), _rate(r.bytes_per_s, bps_div),
                _percent(r.compute_peak_fraction) if r.flops else "-",
                _percent(r.bandwidth_peak_fraction) if r.bytes else "-",
                r.compute_roof if r.flops else "-", r.bound or "-"]

    table = [cells(r) for r in rows]
    total = ["total", "", f"{result.attributed_ms:.3f}", "100.0"]
    if train:
        total += [f"{sum(r.forward_ms for r in rows):.3f}", f"{sum(r.backward_ms for r in rows):.3f}"]
    total += [fmt_scaled(result.flops, flop_div), fmt_scaled(result.bytes, byte_div), "", "", "", "", "", "", ""]
    table.append(total)
    return render_table(headers, table, fmt, colalign=("left", "left") + ("right",) * (len(headers) - 4)
                        + ("left", "left"))


def _tera(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    divisor, prefix = decimal_unit([value])
    return f"{value / divisor:,.2f} {prefix}{unit}"


def _model_lines(result: BandwidthResult) -> list[str]:
    """What a prediction assumed: the roof and efficiency per op class, floor, host costs, what they were fitted on."""
    a = result.assumptions or {}
    classes = []
    for op_class, roof in a.get("roofs", {}).items():
        if roof["compute_roof"] is not None:
            classes.append(f"{op_class} {100 * roof['compute_efficiency']:.0f} % of {roof['compute_roof']} "
                           f"{_tera(roof['compute_flops_per_s'], 'FLOP/s')}")
        else:
            classes.append(f"{op_class} {100 * roof['bandwidth_efficiency']:.0f} % of the streaming bandwidth")
    stream = next((r["bandwidth_efficiency"] for r in a.get("roofs", {}).values() if r["compute_roof"]), None)
    fitted = [f for f in a.get("fitted_on", []) if f.startswith("reports/")]
    errors = a.get("fit_errors", {})
    return [f"roofs: datasheet of {result.device_name}, DRAM {_tera(a.get('bandwidth_bytes_per_s'), 'B/s')} "
            f"streamed at {_tera(a.get('streaming_bandwidth_bytes_per_s'), 'B/s')} (a copy's measured share); "
            f"efficiency per op class: {' · '.join(classes)}"
            + (f" (their bytes at {100 * stream:.0f} % of the streaming bandwidth)" if stream is not None else "")
            + f"; GEMM output tiles {'×'.join(map(str, a.get('gemm_tile', [])))} in waves over {a.get('sm_count')} SMs"
            + ("; cuDNN layout transforms to channels-last" if a.get("layout_transforms") else ""),
            f"per kernel a floor of {a.get('kernel_floor_us', 0):.2f} µs; host "
            f"{a.get('host_inference_call_us', 0):.1f} µs per unrecorded op call (inference, optimizer), "
            f"{a.get('host_forward_call_us', 0):.1f} µs per training forward op call, "
            f"{a.get('host_backward_call_us', 0):.1f} µs per backward op call "
            f"({a.get('host_calls')} calls, {a.get('kernels')} kernels); {a.get('host', '')}",
            f"coefficients fitted on {', '.join(fitted) or 'nothing'} ({a.get('fitted')}); leave-one-model-out step "
            f"error {errors.get('lomo_mean_percent', '?')} % mean, {errors.get('lomo_max_percent', '?')} % worst; "
            f"in-sample {errors.get('in_sample_mean_percent', '?')} % mean"]


def _peaks_line(result: BandwidthResult) -> list[str]:
    p, sheet = result.peaks, result.datasheet
    if result.predicted:
        return _model_lines(result)
    if result.device_kind != DeviceKind.CUDA:
        return [f"CPU peaks (measured): copy {_tera(p.copy_bytes_per_s, 'B/s')} (read + write), FP32 "
                f"{_tera(p.fp32_flops_per_s, 'FLOP/s')} (the best of convolutions and matmuls); ridge point "
                f"{p.fp32_ridge:.1f} FLOP/B — {p.method}"]

    def beside(measured: float | None, published: float | None, unit: str) -> str:
        text = _tera(measured, unit)
        return f"{text} (datasheet {_tera(published, unit)})" if published else text

    lines = ["peaks of this GPU (measured): copy "
             f"{beside(p.copy_bytes_per_s, sheet and sheet.bytes_per_s, 'B/s')} read + write · FP32 matmul "
             f"{beside(p.fp32_flops_per_s, sheet and sheet.fp32_flops_per_s, 'FLOP/s')} · TF32 matmul "
             f"{beside(p.tf32_flops_per_s, sheet and sheet.tf32_flops_per_s, 'FLOP/s')} · convolution (cuDNN) "
             f"{_tera(p.conv_flops_per_s, 'FLOP/s')}"]
    ridges = [f"FP32 {p.fp32_ridge:.1f} FLOP/B"]
    if p.tensor_core_ridge is not None:
        ridges.append(f"TF32 {p.tensor_core_ridge:.1f} FLOP/B")
    lines.append(f"ridge points (measured): {' · '.join(ridges)}; calibration: {p.method}")
    lines.append(f"datasheet: {sheet.name}, {sheet.source}" if sheet else
                 f"datasheet: no entry for {result.device_name} (known: H100, H200, A100)")
    return lines


def _metric(key: str, m: MetricSummary) -> str:
    label = NVML_LABELS.get(key, key)
    if m.mean is None:
        return f"{label}: n/a ({m.reason})"
    if m.unit == "bytes":
        return f"{label} {human_bytes(m.min)} / {human_bytes(m.mean)} / {human_bytes(m.max)}"
    return f"{label} {m.min:.0f} / {m.mean:.1f} / {m.max:.0f} %"


def _nvml_lines(result: BandwidthResult) -> list[str]:
    if result.device_kind != DeviceKind.CUDA or result.predicted:
        return []
    nvml = result.nvml
    if nvml is None or not nvml.available:
        return [f"NVML: {nvml.reason if nvml else 'not sampled'}"]
    head = (f"NVML during the profiled steps ({nvml.window_s:.2f} s, {len(nvml.timeline)} samples every "
            f"{1000 * nvml.interval_s:.0f} ms; min / mean / max): ")
    return [head + " · ".join(_metric(k, m) for k, m in nvml.metrics.items()), *nvml.notes]


def _overhead(result: BandwidthResult) -> str:
    """The profiler's overhead in words: a cost, within noise, or negative beyond noise (the load changed)."""
    overhead = f"profiler overhead {result.overhead_percent:+.1f} %"
    if result.step_spread_percent is None:
        return f"{overhead} (too few steps to tell it from noise: raise --steps)"
    spread = f"the step times' spread ({result.step_spread_percent:.1f} %, interquartile range)"
    if result.overhead_within_noise:
        return f"{overhead}, within noise: smaller than {spread}"
    if result.overhead_percent < 0:
        return (f"{overhead}: the profiled steps ran faster than the unprofiled ones by more than {spread}; the "
                "machine's load or clock changed during the run: run again on a quiet machine")
    return f"{overhead}, beyond {spread}"


def _source_line(result: BandwidthResult) -> list[str]:
    """Where a measured run's device peaks came from (measured now, or reused from the cache), under the headline."""
    return [] if result.predicted else [f"device peaks {result.peaks_source}"]


def _timing_lines(result: BandwidthResult) -> list[str]:
    """The step time and what the rows add up to."""
    cuda = result.device_kind == DeviceKind.CUDA
    if result.predicted:
        return [f"predicted step time {result.step_ms:.3f} ms ({result.bound}-bound): the GPU busy "
                f"{result.attributed_ms:.3f} ms (the rows), waiting for the host {result.idle_ms:.3f} ms; the host "
                f"takes {result.host_ms:.3f} ms to launch the step (steady state, steps back to back)"]
    timer = "CUDA events" if cuda else "perf_counter"
    lines = [f"step time {result.step_ms:.3f} ms (median of {result.timed_steps}, {timer}, no profiler) · "
             f"{result.profiled_step_ms:.3f} ms profiled (layer ranges + torch.profiler"
             f"{' + NVML sampling' if cuda else ''}): {_overhead(result)}"]
    other = next((r.ms_per_step for r in result.layers if r.name == OTHER_ROW), 0.0)
    if cuda:
        lines.append(f"kernel time {result.attributed_ms:.3f} ms per profiled step ((other): {other:.3f} ms of "
                     f"kernels outside every layer); GPU idle {result.idle_ms:.3f} ms per profiled step (mean "
                     f"{result.profiled_mean_step_ms:.3f} ms: launch gaps, hooks, profiler)")
    else:
        lines.append(f"the rows add up to {result.attributed_ms:.3f} ms per profiled step (mean "
                     f"{result.profiled_mean_step_ms:.3f} ms); (other), {other:.3f} ms, is time outside every "
                     "layer: autograd engine, hooks, Python between layers")
    return lines


def _footer(result: BandwidthResult) -> list[str]:
    cuda = result.device_kind == DeviceKind.CUDA
    lines = _timing_lines(result)
    lines.append("share of time by layer type (the layer's module class): "
                 + " · ".join(f"{c} {100 * result.shares.get(c, 0.0):.1f} %" for c in CATEGORIES))
    lines.append(f"whole step (counted ÷ step time, derived): {_tera(result.step_flops_per_s, 'FLOP/s')}, "
                 f"{_tera(result.step_bytes_per_s, 'B/s')} ({result.flops / 1e9:,.2f} GFLOPs, "
                 f"{human_bytes(result.bytes)} counted per step)")
    lines += _peaks_line(result)
    lines += _nvml_lines(result)
    if result.predicted:
        s = result.settings
        lines.append(f"assumed PyTorch defaults: float32 matmul precision '{s['float32_matmul_precision']}', "
                     f"cudnn.allow_tf32={s['cudnn_allow_tf32']}, cudnn.benchmark={s['cudnn_benchmark']}; each "
                     "layer's FLOPs are on the roof of column roof")
    elif cuda:
        s = result.settings
        lines.append(f"numerics: float32 matmul precision '{s['float32_matmul_precision']}' (linear layers on "
                     f"{'TF32 tensor cores' if s['float32_matmul_precision'] != 'highest' else 'FP32 CUDA cores'}),"
                     f" cudnn.allow_tf32={s['cudnn_allow_tf32']} (convolutions on "
                     f"{'TF32 tensor cores' if s['cudnn_allow_tf32'] else 'FP32'}), "
                     f"cudnn.benchmark={s['cudnn_benchmark']}; each layer is compared with its roof (column roof)")
    lines.append(f"time: {result.time_basis}")
    lines += [f"note: {note}" for note in result.notes]
    lines.append(f"convention: {result.convention}")
    prov = result.provenance
    if result.predicted:
        lines.append(f"provenance: predicted by {prov.get('time_model')} with {prov.get('coefficients')} (fitted "
                     f"{prov.get('fitted')}); counts on meta tensors, nothing ran on a GPU")
    elif cuda:
        lines.append(f"provenance: {prov.get('device')}, driver {prov.get('driver')}, torch {prov.get('torch')}, "
                     f"CUDA {prov.get('cuda')}, cuDNN {prov.get('cudnn')}, {prov.get('date')}")
    else:
        lines.append(f"provenance: {prov.get('device')}, torch {prov.get('torch')}, {prov.get('date')}")
    return lines


def _summary(results: Sequence[BandwidthResult], fmt: str) -> str:
    headers = ["model", "input", "mode", "device", "step ms", "profiled ms", "overhead %", "slowest layer"]
    rows = []
    for r in results:
        slowest = max((x for x in r.layers if x.name not in (OTHER_ROW, OPTIMIZER_ROW)),
                      key=lambda x: x.ms_per_step, default=None)
        device = f"{r.device_name} (predicted, {r.bound}-bound)" if r.predicted else r.device_name
        rows.append([r.model, shape_str(r.input_shape), r.mode, device, f"{r.step_ms:.3f}",
                     "-" if r.profiled_step_ms is None else f"{r.profiled_step_ms:.3f}",
                     "-" if r.overhead_percent is None else f"{r.overhead_percent:+.1f}",
                     f"{slowest.name} ({100 * slowest.share:.1f} %)" if slowest else "-"])
    return render_table(headers, rows, fmt, colalign=("left",) * 4 + ("right",) * 3 + ("left",))


def format_bandwidth(results: Sequence[BandwidthResult], fmt: str) -> str:
    """Render bandwidth results as ``fmt`` (table, markdown, json, csv)."""
    if fmt == "json":
        objs = [r.to_dict() for r in results]
        return to_json(objs)
    if fmt == "csv":
        return to_csv(CSV_HEADERS, [row for r in results for row in _csv_rows(r)])
    blocks = []
    for result in results:
        heading = f"### {headline(result)}" if fmt == "markdown" else headline(result)
        footer = _footer(result)
        if fmt == "markdown":
            footer = [f"- {line}" for line in footer]
        source = _source_line(result)
        if fmt == "markdown":
            source = [f"_{line}_" for line in source]
        blocks.append("\n".join([heading, *(["", *source] if fmt == "markdown" else source), "",
                                 _layer_table(result, fmt), "", *footer]))
    if len(results) > 1:
        heading = "### Summary" if fmt == "markdown" else "Summary"
        blocks.append(f"{heading}\n\n{_summary(results, fmt)}")
    return "\n\n".join(blocks) + "\n"


CSV_HEADERS = ["model", "input_shape", "mode", "source", "device", "layer", "type", "category", "ms_per_step",
               "forward_ms", "backward_ms", "share", "flops", "bytes", "intensity", "flops_per_s", "bytes_per_s",
               "compute_roof", "compute_peak_fraction", "bandwidth_peak_fraction", "bound"]


def _csv_rows(result: BandwidthResult) -> list[list[Any]]:
    def cell(value: Any) -> Any:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else value

    return [[result.model, shape_str(result.input_shape), result.mode, result.source, result.device_name, r.name,
             r.type, r.category, *(cell(getattr(r, f)) for f in CSV_HEADERS[8:])] for r in result.layers]
