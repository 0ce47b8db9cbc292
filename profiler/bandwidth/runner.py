"""``python -m profiler bandwidth``: run each configuration for real, time it per layer, and set the times beside the
static counts and the device's peaks.

Protocol, per configuration: build the model with real storage on the device, count it on meta tensors
(:func:`~profiler.counting.count_model`, same batch, size and mode), run ``warmup`` steps, time ``steps`` steps
without any instrumentation (median: the step time), then ``steps`` more with the layer ranges of
:mod:`profiler.bandwidth.timing` and ``torch.profiler`` on (and NVML sampled on a GPU); their median is the profiled
step time, so the difference is the profiler's overhead. Inference is ``eval()`` + ``torch.inference_mode()``, one
forward; a training step is ``zero_grad(set_to_none=True)``, forward, cross-entropy (row ``loss``), backward and an
SGD update (lr 0.01, no momentum; row ``(optimizer)``, which the static counter does not count).

A layer's time is CUDA kernel time on a GPU (what its kernels ran, not when) and wall time inside its ranges on the
CPU. Achieved FLOP/s and bytes/s are counted FLOPs and bytes ÷ that time; counted bytes assume every tensor an op
touches crosses DRAM, so a layer whose tensors stay in L2 can show more than the measured copy bandwidth.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from profiler.bandwidth.peaks import beyond_roof_notes, device_peaks
from profiler.bandwidth.records import CATEGORIES, BandwidthResult, DevicePeaks, LayerTiming
from profiler.bandwidth.timing import (
    STEP_RANGE,
    Attribution,
    LayerRanges,
    cpu_times,
    kernel_times,
    trace_events,
)
from profiler.catalogue import datasheet_for, gpu_for_device
from profiler.counting import ModelStats, count_model
from profiler.device import cpu_threads, quiet_torch_profiler, resolve_device
from profiler.device import provenance as device_provenance
from profiler.device.nvml import NvmlSampler, NvmlSummary
from profiler.errors import EXIT_OUT_OF_MEMORY, ProfilerError
from profiler.kinds import LOSS_ROW, OPTIMIZER_ROW, OTHER_ROW, ROOT_ROW, Source
from profiler.models import ModelSpec, build, resolve
from profiler.models.loading import ForwardFailed, explain, output_classes, to_device
from profiler.scopes import named_modules
from profiler.step import Optimizer, Step, StepConfig, make_batch, optimizer_words
from profiler.util.units import human_bytes, rate_per_s

#: The most profiled steps ``min_profiled_s`` may stretch a run to, as a multiple of ``steps``.
MAX_STEP_FACTOR = 10

CPU_BASIS = ("CPU wall time inside each layer's profiler ranges, nested layers' time excluded (torch.profiler, CPU "
             "activity)")
GPU_BASIS = ("CUDA kernel time (torch.profiler, CUPTI): each kernel charged to the layer whose range encloses the op "
             "that launched it")


def run_bandwidth(names: Sequence[str], sizes: Sequence[int] | None, batch: int = 128, channels: int | None = None,
                  classes: int | None = None, train: bool = False, steps: int = 20, warmup: int = 5,
                  device: str | None = None, peaks_path: Path | None = None,
                  min_profiled_s: float = 0.0, optimizer: str = "sgd", dtype: str = "float32",
                  remeasure_peaks: bool = False) -> list[BandwidthResult]:
    """Profile every (model, size) pair (sizes default to each model's own) on ``device`` (see the module
    docstring). Device peaks come from the cache at ``peaks_path`` (default: :func:`~profiler.bandwidth.peaks.
    cache_file`) or are measured first (always, with ``remeasure_peaks``). ``min_profiled_s`` stretches the
    profiled phase to at least that long (up to ten times ``steps``) so that NVML's samples cover enough time.
    ``optimizer`` and ``dtype`` shape the step (:mod:`profiler.step`)."""
    where = resolve_device(device, "time")
    specs = [resolve(name) for name in names]
    if where == "cpu":
        sys.stderr.write(f"profiler: timing on the CPU ({cpu_threads()}): CPU figures only, no "
                         f"GPU figure; {warmup} + 2 × {steps} steps at batch {batch} (lower --batch or --steps if "
                         "this is slow)\n")
    dev = torch.device("cuda", torch.cuda.current_device()) if where == "cuda" else torch.device("cpu")
    provenance = device_provenance(dev, detailed=True)
    peaks, peaks_source = device_peaks(dev, provenance["device"], provenance, peaks_path, remeasure_peaks)
    return [profile_config(spec, size, batch, channels, classes, train, steps, warmup, dev, peaks, peaks_source,
                           provenance, min_profiled_s, optimizer=optimizer, dtype=dtype)
            for spec in specs for size in sizes or [spec.default_size]]


def settings() -> dict[str, Any]:
    """The numerics settings that decide which compute roof applies (TF32 or not) and cuDNN's algorithm choice."""
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "cpu_threads": torch.get_num_threads()}


def category(module: nn.Module | None) -> str:
    """The time-share category of a row, by its module's type: conv, linear, normalization, pooling, elementwise
    (activations, dropout, flatten, and a block's own ops such as a residual add or a concatenation) or other
    (the loss, the optimizer, unknown leaf modules, time outside every layer)."""
    mods = nn.modules
    kinds: tuple[tuple[str, tuple[type, ...]], ...] = (
        ("conv", (mods.conv._ConvNd,)),
        ("linear", (nn.Linear, nn.Bilinear)),
        ("normalization", (mods.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)),
        ("pooling", (mods.pooling._MaxPoolNd, mods.pooling._AvgPoolNd, mods.pooling._AdaptiveAvgPoolNd,
                     mods.pooling._AdaptiveMaxPoolNd, mods.pooling._LPPoolNd)),
        ("other", (mods.loss._Loss,)),
        ("elementwise", (mods.dropout._DropoutNd, nn.Flatten, nn.Unflatten, nn.Identity)),
    )
    if module is None:
        return "other"
    for name, types in kinds:
        if isinstance(module, types):
            return name
    if module.__class__.__module__ == mods.activation.__name__ or next(module.children(), None) is not None:
        return "elementwise"
    return "other"


def profile_config(spec: ModelSpec, size: int, batch: int, channels: int | None, classes: int | None, train: bool,
                   steps: int, warmup: int, device: torch.device, peaks: DevicePeaks, peaks_source: str,
                   provenance: dict[str, Any], min_profiled_s: float = 0.0, optimizer: str = "sgd",
                   dtype: str = "float32") -> BandwidthResult:
    """One configuration: count, run, attribute, and derive the per-layer rates (module docstring)."""
    config = StepConfig.make(train, optimizer, dtype)
    shape = spec.input_shape(batch, size, channels)
    meta = build(spec, size, channels, classes)
    try:
        stats = count_model(meta, shape, name=spec.name, train=train, dtype=config.torch_dtype,
                            model_source=spec.source)
        num_classes = output_classes(meta, spec.input_shape(1, size, channels))
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None
    what = f"{spec.name} at {list(shape)} ({'training' if train else 'inference'})"
    free, total = memory_state(device)
    try:
        measured = _measure(meta, shape, num_classes, config, steps, warmup, device, min_profiled_s)
    except torch.cuda.OutOfMemoryError as err:
        raise out_of_memory_error(what, str(err), "GPU", held_bytes(device), free, total) from None
    except RuntimeError as err:
        if CPU_OOM not in str(err):
            raise
        raise out_of_memory_error(what, str(err), "host", None, free, total) from None
    if device.type == "cuda" and not measured.attribution.device_events:
        raise ProfilerError("torch.profiler recorded no GPU kernels: CUPTI is missing or taken by another profiler "
                            "(Nsight Systems/Compute); run without the other profiler, or use --device cpu")
    return _result(stats, measured, steps, warmup, device, peaks, peaks_source, provenance, config)


#: What PyTorch's CPU allocator says when host memory runs out (a RuntimeError, not an OutOfMemoryError).
CPU_OOM = "DefaultCPUAllocator: can't allocate memory"


def memory_state(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of the device's memory before a run: the GPU's after releasing cached blocks (peak
    statistics reset, so :func:`held_bytes` covers the run only), or the host's."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.mem_get_info(device)
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


def held_bytes(device: torch.device) -> int | None:
    """The most the run had allocated on the GPU when it failed (None on the CPU: no allocator statistics)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def out_of_memory_error(what: str, message: str, memory: str, held: int | None, free_bytes: int,
                        total_bytes: int) -> ProfilerError:
    """The one-line error for running out of ``memory`` ("GPU" or "host"): what the failing allocation needed (on
    top of what the run held), against what was free before the run and what there is in all (exit code 3)."""
    gpu = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", message)
    host = re.search(r"you tried to allocate (\d+) bytes", message)
    needed = f"{gpu.group(1)}" if gpu else human_bytes(int(host.group(1))) if host else "more memory than there was"
    on_top = f" on top of the {human_bytes(held)} it held" if held is not None else ""
    return ProfilerError(f"{what} ran out of {memory} memory: one allocation needed {needed}{on_top}, with "
                         f"{human_bytes(free_bytes)} free of {human_bytes(total_bytes)} before the run; try a "
                         "smaller --batch or --size", exit_code=EXIT_OUT_OF_MEMORY)


def _real_step(meta: nn.Module, shape: tuple[int, ...], num_classes: int, config: StepConfig,
               device: torch.device) -> Step:
    """The step of the protocol with real, freshly initialized weights and a random batch on ``device``."""
    model = to_device(meta, device).to(config.torch_dtype)
    x, y = make_batch(shape, num_classes, config.torch_dtype, device)
    return Step(model, x, y, config)


def _row_modules(step: Step) -> dict[str, nn.Module]:
    """The rows' modules by name, as the static counter names them (the loss as "loss" when training)."""
    modules = named_modules(step.model)
    if step.config.train:
        modules[LOSS_ROW] = step.loss_fn
    return modules


def _time_steps(step: Callable[[], None], device: torch.device, steps: int, min_s: float = 0.0) -> list[float]:
    """Milliseconds of each step: CUDA events around each on a GPU (GPU time, launch to completion), perf_counter
    on the CPU. Runs ``steps`` steps, more while less than ``min_s`` seconds have passed (at most ten times as many).
    """
    cuda = device.type == "cuda"
    marks: list[tuple[Any, Any]] = []
    started = time.perf_counter()
    while len(marks) < steps or (time.perf_counter() - started < min_s and len(marks) < MAX_STEP_FACTOR * steps):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            step()
            end.record()
            marks.append((begin, end))
        else:
            begin = time.perf_counter()
            step()
            marks.append((begin, time.perf_counter()))
    if cuda:
        torch.cuda.synchronize(device)
        return [begin.elapsed_time(end) for begin, end in marks]
    return [(end - begin) * 1e3 for begin, end in marks]


def step_spread_percent(*step_times_ms: list[float]) -> float | None:
    """How much step times vary, in % of the median of the first list: the larger interquartile range (inclusive
    quartiles) of the lists given (None when one has fewer than 2 steps). A profiler overhead smaller than this
    cannot be told apart from the variation between steps."""
    if any(len(times) < 2 for times in step_times_ms):
        return None
    ranges = []
    for times in step_times_ms:
        first, _, third = statistics.quantiles(times, n=4, method="inclusive")
        ranges.append(third - first)
    return 100 * max(ranges) / statistics.median(step_times_ms[0])


@dataclass
class _Measured:
    step_ms: list[float]
    profiled_ms: list[float]
    attribution: Attribution
    nvml: NvmlSummary | None
    modules: dict[str, nn.Module]


def _measure(meta: nn.Module, shape: tuple[int, ...], num_classes: int, config: StepConfig, steps: int, warmup: int,
             device: torch.device, min_profiled_s: float) -> _Measured:
    from torch.profiler import ProfilerActivity, profile, record_function

    quiet_torch_profiler()
    step = _real_step(meta, shape, num_classes, config, device)
    for _ in range(warmup):
        step.run()
    step_ms = _time_steps(step.run, device, steps)
    ranges = LayerRanges(_row_modules(step), track_backward=config.train)

    def profiled_step() -> None:
        with record_function(STEP_RANGE):
            step.run(ranges)
        ranges.end_step()

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    sampler = NvmlSampler(index=device.index or 0, uuid=str(torch.cuda.get_device_properties(device).uuid)) \
        if cuda else None
    with ranges.attached(), profile(activities=activities) as prof:
        with sampler or nullcontext():  # inside: the profiler's start and its post-processing are not sampled
            profiled_ms = _time_steps(profiled_step, device, steps, min_profiled_s)
    events = trace_events(prof)
    attribution = kernel_times(events) if cuda else cpu_times(events)
    return _Measured(step_ms, profiled_ms, attribution, sampler.summary() if sampler else None,
                     ranges.modules)


def _result(stats: ModelStats, measured: _Measured, steps: int, warmup: int, device: torch.device,
            peaks: DevicePeaks, peaks_source: str, provenance: dict[str, Any], config: StepConfig) -> BandwidthResult:
    cuda = device.type == "cuda"
    profiled_steps = len(measured.profiled_ms)
    numerics = settings()
    rows = _rows(stats, measured.modules, measured.attribution, profiled_steps, peaks,
                 numerics if cuda else None, "Adam" if config.optimizer == Optimizer.ADAM else "SGD")
    attributed = sum(r.ms_per_step for r in rows)
    shares = {c: sum(r.ms_per_step for r in rows if r.category == c) / attributed if attributed else 0.0
              for c in CATEGORIES}
    for row in rows:
        row.share = row.ms_per_step / attributed if attributed else 0.0
    step_ms = statistics.median(measured.step_ms)
    profiled_step_ms = statistics.median(measured.profiled_ms)
    mean_profiled = statistics.fmean(measured.profiled_ms)
    idle = max(mean_profiled - measured.attribution.busy_ns / profiled_steps / 1e6, 0.0) if cuda else None
    totals = stats.totals
    notes = []
    if config.train:
        notes.append(f"training step = forward + cross-entropy loss + backward + {optimizer_words(config.optimizer)}; "
                     "the static counts cover forward, loss and backward, not the update")
    if profiled_steps != steps:
        notes.append(f"profiled {profiled_steps} steps (not {steps}) so that the sampled window lasts long enough")
    notes += beyond_roof_notes(rows, cuda)
    card = gpu_for_device(provenance["device"]) if cuda else None
    return BandwidthResult(
        model=stats.model, source=Source.MEASURED, model_source=stats.model_source,
        input_shape=tuple(stats.input_shape),
        mode=stats.mode, dtype=stats.dtype, device_kind=device.type, device_name=provenance["device"],
        time_basis=GPU_BASIS if cuda else CPU_BASIS, warmup=warmup, timed_steps=len(measured.step_ms),
        steps=profiled_steps, step_ms=step_ms,
        profiled_step_ms=profiled_step_ms, profiled_mean_step_ms=mean_profiled,
        overhead_percent=100 * (profiled_step_ms / step_ms - 1) if step_ms else 0.0,
        step_spread_percent=step_spread_percent(measured.step_ms, measured.profiled_ms),
        attributed_ms=attributed, idle_ms=idle, flops=totals.flops, bytes=totals.bytes,
        step_flops_per_s=rate_per_s(totals.flops, step_ms), step_bytes_per_s=rate_per_s(totals.bytes, step_ms),
        layers=rows,
        shares=shares, peaks=peaks, peaks_source=peaks_source,
        datasheet=datasheet_for(provenance["device"]) if cuda else None, nvml=measured.nvml,
        settings=numerics if cuda else {"cpu_threads": numerics["cpu_threads"]},
        provenance=provenance, notes=notes, gpu=card.key if card else None,
        optimizer=config.optimizer if config.train else None,
        busy_ms=measured.attribution.busy_ns / profiled_steps / 1e6 if cuda else None)


def _rows(stats: ModelStats, modules: dict[str, nn.Module], attribution: Attribution, steps: int,
          peaks: DevicePeaks, numerics: dict[str, Any] | None, optimizer_type: str) -> list[LayerTiming]:
    """The counter's rows in its order with their measured times, then ``(optimizer)`` and ``(other)``: time in
    ranges that have no row of their own (containers without ops of their own, unattributed time)."""
    ms: dict[str, dict[str, float]] = {}
    for (layer, phase), ns in attribution.ns.items():
        ms.setdefault(layer, {}).setdefault(phase, 0.0)
        ms[layer][phase] += ns / steps / 1e6
    rows = []
    for layer in stats.layers:
        key = "" if layer.name == ROOT_ROW else layer.name
        phases = ms.pop(key, {})
        row = LayerTiming(name=layer.name, type=layer.type, category=category(modules.get(key)),
                          ms_per_step=sum(phases.values()), forward_ms=phases.get("forward", 0.0),
                          backward_ms=phases.get("backward", 0.0), flops=layer.flops, bytes=layer.bytes,
                          intensity=layer.intensity if layer.bytes else None)
        _rates(row, peaks, numerics)
        rows.append(row)
    optimizer = ms.pop(OPTIMIZER_ROW, None)
    if optimizer is not None:
        rows.append(LayerTiming(name=OPTIMIZER_ROW, type=optimizer_type, category="other",
                                ms_per_step=sum(optimizer.values())))
    rest = sum(sum(phases.values()) for phases in ms.values()) + attribution.unattributed_ns / steps / 1e6
    rows.append(LayerTiming(name=OTHER_ROW, type="-", category="other", ms_per_step=rest))
    return rows


def _rates(row: LayerTiming, peaks: DevicePeaks, numerics: dict[str, Any] | None) -> None:
    """Fill the achieved rates, the compute roof that applies and the bound of a counted row.

    The roof is TF32 (the faster of the measured TF32 matmul and convolution) for convolutions when cuDNN may use
    TF32, and for linear layers when the float32 matmul precision allows it; FP32 (the matmul with TF32 off)
    otherwise, and always on the CPU."""
    if not row.ms_per_step or row.flops is None:
        return
    row.flops_per_s = rate_per_s(row.flops, row.ms_per_step)
    row.bytes_per_s = rate_per_s(row.bytes, row.ms_per_step) if row.bytes is not None else None
    tf32 = numerics is not None and peaks.tensor_core_flops_per_s is not None and (
        (row.category == "conv" and numerics["cudnn_allow_tf32"])
        or (row.category == "linear" and numerics["float32_matmul_precision"] != "highest"))
    roof, ridge = ((peaks.tensor_core_flops_per_s, peaks.tensor_core_ridge) if tf32
                   else (peaks.fp32_flops_per_s, peaks.fp32_ridge))
    if row.flops:  # a layer without FLOPs (activation, pooling, normalization) has no compute roof to reach
        row.compute_roof = "tf32" if tf32 else "fp32"
        row.compute_peak_fraction = row.flops_per_s / roof
    if row.bytes_per_s is not None:
        row.bandwidth_peak_fraction = row.bytes_per_s / peaks.copy_bytes_per_s
    if row.intensity is not None:
        row.bound = "compute" if row.intensity >= ridge else "memory"
