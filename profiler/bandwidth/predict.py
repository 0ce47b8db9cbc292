"""``python -m profiler bandwidth --predict``: time per layer and per step on a catalogue GPU, with no GPU at all.

The static counter gives the rows (layers, FLOPs, bytes: the same as ``python -m profiler flops``), the kernel
collector (:mod:`profiler.bandwidth.kernels`) the kernels each row launches, and the time model
(:mod:`profiler.bandwidth.timemodel`, coefficients fitted on committed measurements) their times and the step's. The
result is a :class:`~profiler.bandwidth.records.BandwidthResult` like a measured one, labelled predicted and for
which card: a row's time is its kernels' predicted time (as a measured row's is its kernels' measured time), the
rates are counted FLOPs and bytes ÷ that time, the roof column names the compute units the model put the row's
FLOPs on, and a row is compute- or memory-bound by which kind of kernel takes more of its time.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from profiler.bandwidth.kernels import OPTIMIZERS, Kernel, counted_step_kernels, nhwc_convolutions, step_kernels
from profiler.bandwidth.records import CATEGORIES, BandwidthResult, LayerTiming
from profiler.bandwidth.runner import category
from profiler.bandwidth.timemodel import (
    CALIBRATION_FILE,
    CLASSES,
    COEFFICIENTS,
    EFFICIENCY_CLASS,
    FLOOR,
    HOST_BACKWARD,
    HOST_FORWARD,
    HOST_INFERENCE,
    STREAM_CLASS,
    TILE,
    Calibration,
    committed_calibration,
    host_seconds,
    kernel_seconds,
    pack,
    roof_precision,
    simulate_steps,
    step_bound,
)
from profiler.catalogue import DEFAULT_GPU, GpuSpec, Precision, datasheet_for, gpu_spec
from profiler.counting import ModelStats, dynamo_import_skipped
from profiler.errors import ProfilerError
from profiler.kinds import LOSS_ROW, OPTIMIZER_ROW, ROOT_ROW, Bound, Mode, OpClass, Phase, Source
from profiler.models import build, resolve
from profiler.models.loading import ForwardFailed, explain
from profiler.scopes import named_modules

#: The ``--dtype`` choices (parameters, activations and input all in that dtype).
DTYPE_NAMES = ("float32", "bfloat16", "float16")
#: PyTorch's defaults, which the roofs assume (see :meth:`profiler.catalogue.GpuSpec.roof`).
DEFAULT_SETTINGS = {"float32_matmul_precision": "highest", "cudnn_allow_tf32": True, "cudnn_benchmark": False}
OPTIMIZER_TYPES = {"sgd": "SGD", "sgd-momentum": "SGD (momentum 0.9)", "adam": "Adam"}
HOST_ASSUMPTION = ("the host is as fast as the one the host costs were fitted on (the machine of the measurements "
                   "named in fitted_on): every op call of the eager step costs it a fixed time, views included, one "
                   "cost for calls autograd does not record (inference, the optimizer), one for a training step's "
                   "forward calls and one for backward; a kernel starts once its call is made and the previous "
                   "kernel is done")


def predicted_basis(gpu: GpuSpec) -> str:
    """What a predicted row's time is."""
    return (f"predicted kernel time on {gpu.name} (no GPU ran): per kernel max(FLOPs ÷ (efficiency × wave share × "
            "compute roof), bytes ÷ (efficiency × streaming bandwidth)) + a floor; datasheet compute roofs, the "
            "datasheet DRAM bandwidth scaled by the copy bandwidth measured on the reference card, efficiencies "
            "fitted on committed measurements (profiler/bandwidth/timemodel.py)")


def _check(dtype: str, optimizer: str) -> None:
    if dtype not in DTYPE_NAMES:
        raise ProfilerError(f"unknown dtype '{dtype}': choose one of {', '.join(DTYPE_NAMES)}")
    if optimizer not in OPTIMIZERS:
        raise ProfilerError(f"unknown optimizer '{optimizer}': choose one of {', '.join(OPTIMIZERS)}")


def config_kernels(name: str, size: int, batch: int, train: bool, gpu: GpuSpec, dtype: str = "float32",
                   optimizer: str = "sgd", channels: int | None = None, classes: int | None = None) -> list[Kernel]:
    """The kernels of one step of a configuration on ``gpu`` (:func:`~profiler.bandwidth.kernels.step_kernels`)."""
    _check(dtype, optimizer)
    spec = resolve(name)
    model = build(spec, size, channels, classes)
    try:
        return step_kernels(model, spec.input_shape(batch, size, channels), train, getattr(torch, dtype), optimizer,
                            nhwc_convolutions(gpu, dtype))
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None


@dataclass
class _RowTime:
    """Predicted seconds of one row's kernels, by phase and by which roof bounds them."""

    forward_s: float = 0.0
    backward_s: float = 0.0
    optimizer_s: float = 0.0
    compute_bound_s: float = 0.0
    memory_bound_s: float = 0.0
    precision: Precision | None = None

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s + self.optimizer_s


def predict_step(model_name: str, size: int, batch: int = 128, train: bool = False, gpu: str = DEFAULT_GPU,
                 dtype: str = "float32", optimizer: str = "sgd", channels: int | None = None,
                 classes: int | None = None, calibration: Calibration | None = None) -> BandwidthResult:
    """The predicted time per layer and per step of one configuration on the catalogue card ``gpu`` (module
    docstring), with the committed coefficients unless ``calibration`` is given. ``optimizer`` applies to training
    steps (steady state: from the second step on)."""
    return count_and_predict_step(model_name, size, batch, train, gpu, dtype, optimizer, channels, classes,
                                  calibration)[1]


def count_and_predict_step(model_name: str, size: int, batch: int = 128, train: bool = False,
                           gpu: str = DEFAULT_GPU, dtype: str = "float32", optimizer: str = "sgd",
                           channels: int | None = None, classes: int | None = None,
                           calibration: Calibration | None = None) -> tuple[ModelStats, BandwidthResult]:
    """The static count of one configuration (as :func:`~profiler.counting.count_configs` gives it) and its
    :func:`predict_step`, from one meta pass (:func:`~profiler.bandwidth.kernels.counted_step_kernels`)."""
    _check(dtype, optimizer)
    card = gpu_spec(gpu)
    spec = resolve(model_name)
    model = build(spec, size, channels, classes)
    try:
        stats, kernels = counted_step_kernels(model, spec.input_shape(batch, size, channels), train,
                                              getattr(torch, dtype), optimizer, nhwc_convolutions(card, dtype),
                                              name=spec.name, model_source=spec.source)
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None
    modules = named_modules(model)
    if train:
        modules[LOSS_ROW] = torch.nn.CrossEntropyLoss()
    return stats, _result(stats, modules, kernels, card, dtype, optimizer if train else None,
                          calibration or committed_calibration())


def _row_times(kernels: Sequence[Kernel], kernel_s: np.ndarray, compute_bound: np.ndarray, card: GpuSpec,
               dtype: str) -> dict[str, _RowTime]:
    rows: dict[str, _RowTime] = {}
    for kernel, seconds, on_compute in zip(kernels, kernel_s, compute_bound, strict=True):
        row = rows.setdefault(kernel.layer, _RowTime())
        phase = {Phase.FORWARD: "forward_s", Phase.BACKWARD: "backward_s", Phase.OPTIMIZER: "optimizer_s"}
        setattr(row, phase[kernel.phase], getattr(row, phase[kernel.phase]) + float(seconds))
        if on_compute:
            row.compute_bound_s += float(seconds)
        else:
            row.memory_bound_s += float(seconds)
        precision = roof_precision(card, dtype, kernel.op_class)
        if precision is not None and kernel.flops and row.precision is None:
            row.precision = precision
    return rows


def _layer(name: str, type_: str, category_: str, time: _RowTime, flops: int | None, nbytes: int | None,
           card: GpuSpec) -> LayerTiming:
    """One predicted row: its kernels' time, counted FLOPs and bytes, the rates and fractions of the datasheet
    roofs they imply, the roof of its FLOPs and its bound."""
    row = LayerTiming(name=name, type=type_, category=category_, ms_per_step=time.total_s * 1e3,
                      forward_ms=time.forward_s * 1e3, backward_ms=time.backward_s * 1e3, flops=flops, bytes=nbytes,
                      intensity=flops / nbytes if flops is not None and nbytes else None)
    seconds = time.total_s
    if not seconds:
        return row
    row.bound = Bound.COMPUTE if time.compute_bound_s > time.memory_bound_s else Bound.MEMORY
    if nbytes is not None:
        row.bytes_per_s = nbytes / seconds
        row.bandwidth_peak_fraction = row.bytes_per_s / card.bandwidth_bytes_per_s
    if flops:
        row.flops_per_s = flops / seconds
        if time.precision is not None:
            row.compute_roof = str(time.precision)
            row.compute_peak_fraction = row.flops_per_s / card.peak(time.precision)
    return row


def _result(stats: ModelStats, modules: dict[str, torch.nn.Module], kernels: list[Kernel], card: GpuSpec,
            dtype: str, optimizer: str | None, calibration: Calibration) -> BandwidthResult:
    coefficients = calibration.vector()
    arrays = pack([(kernels, card, dtype)], calibration.copy)
    kernel_s, compute_bound = kernel_seconds(arrays, coefficients)
    host_s = host_seconds(arrays, coefficients)
    simulated = simulate_steps(arrays.starts, kernel_s, host_s)
    times = _row_times(kernels, kernel_s, compute_bound, card, dtype)
    rows = []
    for layer in stats.layers:
        key = "" if layer.name == ROOT_ROW else layer.name
        rows.append(_layer(layer.name, layer.type, category(modules.get(key)), times.pop(layer.name, _RowTime()),
                           layer.flops, layer.bytes, card))
    if OPTIMIZER_ROW in times:
        rows.append(_layer(OPTIMIZER_ROW, OPTIMIZER_TYPES[optimizer], "other", times.pop(OPTIMIZER_ROW), None, None,
                           card))
    if times:  # every kernel's layer is a row of the counter's; anything else is a bug in the collector
        raise AssertionError(f"kernels of layers without a row: {sorted(times)}")
    busy_ms = float(simulated.busy_s[0]) * 1e3
    step_ms = float(simulated.step_s[0]) * 1e3
    host_ms = float(simulated.host_s[0]) * 1e3
    for row in rows:
        row.share = row.ms_per_step / busy_ms if busy_ms else 0.0
    shares = {c: sum(r.ms_per_step for r in rows if r.category == c) / busy_ms if busy_ms else 0.0
              for c in CATEGORIES}
    compute_s = float(kernel_s[compute_bound].sum())
    bound = step_bound(busy_ms, host_ms, compute_s, float(kernel_s.sum()) - compute_s)
    totals = stats.totals
    notes = [f"predicted for {card.name} ({card.key}) by the time model: nothing ran on a GPU"]
    if stats.mode == Mode.TRAIN:
        notes.append(f"training step = forward + cross-entropy loss + backward + {OPTIMIZER_TYPES[optimizer]} update "
                     "(steady state); the static counts cover forward, loss and backward, the time model also the "
                     "update's bytes (row (optimizer))")
    if roof_precision(card, dtype, OpClass.MATMUL) is Precision.FP32 and dtype != "float32":
        notes.append(f"{card.name} has no {dtype} tensor cores: its {dtype} products run on the FP32 roof")
    return BandwidthResult(
        model=stats.model, source=Source.PREDICTED, model_source=stats.model_source,
        input_shape=tuple(stats.input_shape),
        mode=stats.mode, dtype=dtype, device_kind="cuda", device_name=card.name, time_basis=predicted_basis(card),
        warmup=None, timed_steps=None, steps=None, step_ms=step_ms, profiled_step_ms=None,
        profiled_mean_step_ms=None, overhead_percent=None, attributed_ms=busy_ms, idle_ms=step_ms - busy_ms,
        flops=totals.flops, bytes=totals.bytes, step_flops_per_s=totals.flops / (step_ms / 1e3),
        step_bytes_per_s=totals.bytes / (step_ms / 1e3), layers=rows, shares=shares, peaks=None,
        peaks_source=f"datasheet of {card.name} (profiler/catalogue.py)", datasheet=datasheet_for(card.name), nvml=None,
        settings=dict(DEFAULT_SETTINGS),
        provenance={"time_model": "profiler/bandwidth/timemodel.py",
                    "coefficients": f"profiler/bandwidth/{CALIBRATION_FILE.name}", "fitted": calibration.date},
        notes=notes, gpu=card.key, optimizer=optimizer, bound=bound, host_ms=host_ms,
        assumptions=assumptions(card, dtype, calibration, len(kernels), int(arrays.host_calls.sum())))


def assumptions(card: GpuSpec, dtype: str, calibration: Calibration, kernels: int, host_calls: int) -> dict:
    """What a prediction rests on: per op class the roof and its efficiency, the streaming bandwidth, the GEMM tiles
    and SMs of the wave share, the layout transforms, the floor and host costs, with the data and method they were
    fitted by."""
    values = calibration.values
    stream = values[f"e_{STREAM_CLASS}"]
    roofs = {}
    for op_class in CLASSES:
        precision = roof_precision(card, dtype, op_class)
        own = values[f"e_{EFFICIENCY_CLASS[op_class]}"]
        roofs[str(op_class)] = {
            "compute_roof": str(precision) if precision is not None else None,
            "compute_flops_per_s": card.peak(precision) if precision is not None else None,
            "compute_efficiency": own if op_class.on_compute_roof else None,
            "bandwidth_efficiency": stream if op_class.on_compute_roof else own}
    copy = calibration.copy
    return {"gpu": card.key, "bandwidth_bytes_per_s": card.bandwidth_bytes_per_s,
            "bandwidth_source": card.sources["bandwidth_bytes_per_s"],
            "streaming_bandwidth_bytes_per_s": copy.bandwidth(card),
            "streaming_bandwidth_source": f"datasheet × {copy.share:.3f}, the share a device-to-device copy reached "
                                          f"on the {copy.card} ({copy.source}); assumed the same on every card",
            "roofs": roofs,
            "gemm_tile": list(TILE), "sm_count": card.sm_count, "sm_count_source": card.sources["sm_count"],
            "layout_transforms": nhwc_convolutions(card, dtype),
            "kernel_floor_us": values[COEFFICIENTS[FLOOR].name],
            "host_inference_call_us": values[COEFFICIENTS[HOST_INFERENCE].name],
            "host_forward_call_us": values[COEFFICIENTS[HOST_FORWARD].name],
            "host_backward_call_us": values[COEFFICIENTS[HOST_BACKWARD].name],
            "host": HOST_ASSUMPTION, "pytorch_settings": dict(DEFAULT_SETTINGS), "kernels": kernels,
            "host_calls": host_calls, "fitted_on": calibration.fitted_on, "method": calibration.method,
            "fitted": calibration.date, "fit_errors": {k: v for k, v in calibration.errors.items()
                                                       if not isinstance(v, dict)}}


def run_predicted(names: Sequence[str], sizes: Sequence[int] | None, batch: int = 128, channels: int | None = None,
                  classes: int | None = None, train: bool = False, gpu: str = DEFAULT_GPU, dtype: str = "float32",
                  optimizer: str = "sgd", fast_start: bool = False) -> list[BandwidthResult]:
    """:func:`predict_step` for every (model, size) pair (sizes default to each model's own). ``fast_start`` (the
    CLI's choice) skips importing ``torch._dynamo`` for zoo models, as counting does."""
    gpu_spec(gpu)  # an unknown card fails before any work
    _check(dtype, optimizer)
    specs = [resolve(name) for name in names]
    skip = fast_start and not any(spec.external for spec in specs)
    with dynamo_import_skipped() if skip else nullcontext():
        return [predict_step(spec.name if not spec.external else name, size, batch, train, gpu, dtype, optimizer,
                             channels, classes)
                for name, spec in zip(names, specs, strict=True) for size in sizes or [spec.default_size]]
