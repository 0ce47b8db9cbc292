"""The time model: GPU time per kernel from a roofline, host time per op call, and the step they make together.

For each kernel of a step (:mod:`profiler.bandwidth.kernels`) on a card of the catalogue (:mod:`profiler.catalogue`)::

    kernel time = max(FLOPs / (e_class × waves × compute roof), bytes / (e_class' × streaming bandwidth)) + floor

The compute roof is the one PyTorch's defaults select for the kernel's dtype on that card
(:meth:`~profiler.catalogue.GpuSpec.roof`: TF32 tensor cores for float32 convolutions from compute capability 8.0, FP32
CUDA cores for float32 matrix products, the bf16/fp16 tensor cores under those dtypes), at its dense datasheet rate.
``waves`` is the share of the SMs a GEMM's output tiles keep busy: a matrix product or a forward or input-gradient
convolution (its implicit GEMM, :attr:`~profiler.bandwidth.kernels.Kernel.gemm`) is cut into :data:`TILE` output
tiles, one thread block each, run in waves of one tile per SM, so ``tiles / (⌈tiles / SMs⌉ × SMs)``: AlexNet's
128 × 4096 classifier products make 32 tiles on the H200's 132 SMs, 24 % of the card. (The weight gradient's small
output with its long reduction over every position is split along the reduction instead: not tiled here.) The
streaming bandwidth is the card's datasheet DRAM bandwidth times the share of it a device-to-device copy reaches,
measured on the reference card (:attr:`Calibration.copy`, a :class:`CopyRoof`: 4.22 of 4.8 TB/s on the H200) and
assumed the same on every card, so an efficiency of 1 is a kernel streaming as fast as a copy. The four compute classes
(convolution forward, input gradient, weight gradient, matrix product) have their own compute efficiency ``e_class``
and share the elementwise class's bandwidth efficiency for their bytes; the bandwidth classes (normalization,
elementwise, pooling, reduction) have no FLOPs and their own bandwidth efficiency; the optimizer's update is
``multi_tensor_apply`` elementwise kernels and shares the elementwise one. The floor is what the GPU spends on any
kernel, however small.

The host: every op call of the eager step — views and allocations included — costs the host a fixed time, and a
kernel can start only once the calls before it are made: one cost for calls autograd does not record (inference, the
optimizer's update), one for the forward calls of a training step (autograd records them: graph nodes, saved
tensors) and one for backward (the autograd engine's nodes and their ops). This is an assumption about the host: it
is as fast as the host of the measurements the costs were fitted on. The GPU runs kernels in launch order, each when
it has been launched and the previous one has finished; steps follow each other without synchronization, as in the
measurements (CUDA events around each step, median of 10 after 3 warm-ups), so a GPU-bound step builds a queue and
its time is the sum of its kernels, while a host-bound step waits for launches. A step is **host-bound** when its host
time exceeds its kernels' time (then the host, not the GPU, sets its pace); otherwise it is compute- or memory-bound by
which kind of kernel takes more of it.

The coefficients (:data:`COEFFICIENTS`, 12 in all) are fitted by :mod:`profiler.bandwidth.fit` on committed
measurements and stored with their provenance in ``time_calibration.json`` beside this file, with the measured copy
share (not fitted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from profiler.bandwidth.kernels import Kernel
from profiler.catalogue import GpuSpec, Precision
from profiler.errors import ProfilerError
from profiler.kinds import Bound, OpClass, Phase

CALIBRATION_FILE = Path(__file__).with_name("time_calibration.json")

CLASSES: tuple[OpClass, ...] = tuple(OpClass)
COMPUTE_CLASSES = tuple(c for c in CLASSES if c.on_compute_roof)
#: The bandwidth efficiency of a compute-roof kernel's bytes is this class's.
STREAM_CLASS = OpClass.ELEMENTWISE
#: The class whose efficiency each class uses: its own, but the optimizer's update runs elementwise kernels.
EFFICIENCY_CLASS = {c: STREAM_CLASS if c is OpClass.OPTIMIZER else c for c in CLASSES}
#: The classes with an efficiency of their own, in coefficient order: the first coefficients are their efficiencies.
EFFICIENCY_CLASSES: tuple[OpClass, ...] = tuple(dict.fromkeys(EFFICIENCY_CLASS.values()))
#: (rows, columns) of one GEMM output tile, an assumption: the largest tile of cuBLAS's FP32 and cuDNN's
#: implicit-GEMM kernels (128 × 64 or 64 × 64 tiles fit the reference step times worse leave-one-model-out).
TILE = (128, 128)
#: Steps the measurements ran before timing, and how many they timed (their median is the step time).
WARMUP_STEPS, TIMED_STEPS = 3, 10


@dataclass(frozen=True)
class Coefficient:
    """One fitted number: its name, unit, what it means, the bounds of the fit and the prior it is pulled towards
    where the data say little (see :mod:`profiler.bandwidth.fit`)."""

    name: str
    unit: str
    meaning: str
    low: float
    high: float
    prior: float


def _efficiency(op_class: OpClass) -> Coefficient:
    roof = "its compute roof" if op_class.on_compute_roof else "the streaming bandwidth"
    also = " (and by the optimizer's update, and by compute kernels' bytes)" if op_class is STREAM_CLASS else ""
    return Coefficient(f"e_{op_class}", "fraction", f"share of {roof} reached by {op_class.value.replace('_', ' ')} "
                       f"kernels{also}", 0.02, 1.0, 0.5)


#: The 12 coefficients, in order: eight efficiencies (one per class of :data:`EFFICIENCY_CLASSES`), the kernel
#: floor, three host costs.
COEFFICIENTS: tuple[Coefficient, ...] = (
    *(_efficiency(c) for c in EFFICIENCY_CLASSES),
    Coefficient("kernel_floor_us", "µs", "GPU time of any kernel on top of its roofline time", 0.5, 15.0, 3.0),
    Coefficient("host_inference_call_us", "µs", "host time of one op call autograd does not record (inference, "
                "the optimizer's foreach calls), views included", 1.0, 100.0, 20.0),
    Coefficient("host_forward_call_us", "µs", "host time of one op call in a training step's forward (autograd "
                "records it), views included", 1.0, 100.0, 20.0),
    Coefficient("host_backward_call_us", "µs", "host time of one op call in backward (the autograd engine's), views "
                "included", 1.0, 100.0, 20.0),
)
NAMES = tuple(c.name for c in COEFFICIENTS)
FLOOR, HOST_INFERENCE, HOST_FORWARD, HOST_BACKWARD = (
    NAMES.index(n) for n in ("kernel_floor_us", "host_inference_call_us", "host_forward_call_us",
                             "host_backward_call_us"))
#: Index of each class's efficiency among the coefficients.
EFFICIENCY_INDEX = np.array([EFFICIENCY_CLASSES.index(EFFICIENCY_CLASS[c]) for c in CLASSES])


@dataclass(frozen=True)
class CopyRoof:
    """The measured streaming roof: a device-to-device copy's bytes/s (read + write) on ``card`` beside that card's
    datasheet DRAM bandwidth, and where it was measured. Not fitted."""

    card: str
    copy_bytes_per_s: float
    datasheet_bytes_per_s: float
    source: str

    @property
    def share(self) -> float:
        """The share of its datasheet bandwidth the copy reached; assumed the same on every card."""
        return self.copy_bytes_per_s / self.datasheet_bytes_per_s

    def bandwidth(self, gpu: GpuSpec) -> float:
        """The streaming bandwidth of ``gpu`` (bytes/s): its datasheet bandwidth × :attr:`share`."""
        return gpu.bandwidth_bytes_per_s * self.share


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficient values by name (units of :data:`COEFFICIENTS`) and where they came from: the files and
    configurations they were fitted on, the method, the date, the measured streaming roof the efficiencies are
    shares of, the fit's errors, and per coefficient the configurations that carry it (whose predicted step time
    depends on it most: |d ln step ÷ d ln coefficient|, :meth:`profiler.bandwidth.fit.FitReport.carried_by`)."""

    values: dict[str, float]
    fitted_on: list[str]
    method: str
    date: str
    copy: CopyRoof
    errors: dict[str, Any] = field(default_factory=dict)
    carried_by: dict[str, dict[str, float]] = field(default_factory=dict)

    def vector(self) -> np.ndarray:
        """The values in :data:`COEFFICIENTS` order."""
        return np.array([self.values[name] for name in NAMES], dtype=float)


def calibration_from_json(obj: dict[str, Any]) -> Calibration:
    """A :class:`Calibration` from its JSON object (as :func:`calibration_json` writes it)."""
    values = {name: float(entry["value"]) for name, entry in obj["coefficients"].items()}
    missing = [name for name in NAMES if name not in values]
    if missing:
        raise ProfilerError(f"{CALIBRATION_FILE.name} lacks {', '.join(missing)}: rerun `python -m benchmarks timing`")
    roof = obj["streaming_bandwidth"]
    copy = CopyRoof(roof["card"], float(roof["copy_bytes_per_s"]), float(roof["datasheet_bytes_per_s"]),
                    roof["source"])
    carried = {name: entry.get("carried_by", {}) for name, entry in obj["coefficients"].items()}
    return Calibration(values, list(obj["fitted_on"]), obj["method"], obj["date"], copy, obj.get("errors", {}),
                       carried)


def calibration_json(calibration: Calibration) -> dict[str, Any]:
    """The JSON object of a calibration: each coefficient with its unit and meaning, then its provenance."""
    return {"coefficients": {c.name: {"value": float(f"{calibration.values[c.name]:.4g}"), "unit": c.unit,
                                      "meaning": c.meaning, "carried_by": calibration.carried_by.get(c.name, {})}
                             for c in COEFFICIENTS},
            "streaming_bandwidth": {"card": calibration.copy.card,
                                    "copy_bytes_per_s": calibration.copy.copy_bytes_per_s,
                                    "datasheet_bytes_per_s": calibration.copy.datasheet_bytes_per_s,
                                    "share": round(calibration.copy.share, 4), "source": calibration.copy.source,
                                    "other_cards": "their datasheet bandwidth × the same share"},
            "fitted_on": calibration.fitted_on, "method": calibration.method, "date": calibration.date,
            "errors": calibration.errors,
            "regenerate": "python -m benchmarks timing"}


@cache
def committed_calibration() -> Calibration:
    """The committed coefficients (``time_calibration.json``)."""
    try:
        return calibration_from_json(json.loads(CALIBRATION_FILE.read_text()))
    except (OSError, ValueError, KeyError) as err:
        raise ProfilerError(f"cannot read the time model's coefficients {CALIBRATION_FILE} ({err}); restore it "
                            "from git or rerun `python -m benchmarks timing`") from None


# --------------------------------------------------------------------------------------- kernels as arrays

@dataclass(frozen=True)
class KernelArrays:
    """The kernels of one or more steps as arrays, in launch order, steps one after the other: class index (into
    :data:`CLASSES`), FLOPs, bytes, compute roof in FLOP/s (0 for bandwidth classes), the share of the SMs its output
    tiles keep busy (:func:`wave_share`; 1 where tiles do not bound it), its card's streaming bandwidth in bytes/s, the
    op calls the host makes before launching it (:attr:`~profiler.bandwidth.kernels.Kernel.host_calls`) and the index
    of their cost among the host coefficients (:func:`host_cost_index`). ``starts`` holds the index of each step's
    first kernel."""

    op_class: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray
    roof: np.ndarray
    waves: np.ndarray
    bandwidth: np.ndarray
    host_calls: np.ndarray
    host_cost: np.ndarray
    starts: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.starts)


def roof_precision(gpu: GpuSpec, dtype: str, op_class: OpClass) -> Precision | None:
    """The compute units a kernel of ``op_class`` runs on (None for bandwidth classes)."""
    return gpu.roof(dtype, op_class.convolution) if op_class.on_compute_roof else None


def wave_share(gemm: tuple[int, int, int] | None, sm_count: int) -> float:
    """The share of ``sm_count`` SMs busy over a GEMM with output (batches, rows, columns) cut into :data:`TILE`
    tiles run one per SM in waves: tiles ÷ (waves × SMs); 1 for None (no tiled output)."""
    if gemm is None:
        return 1.0
    batches, rows, columns = gemm
    tiles = batches * math.ceil(rows / TILE[0]) * math.ceil(columns / TILE[1])
    return tiles / (math.ceil(tiles / sm_count) * sm_count) if tiles else 1.0


def host_cost_index(kernel: Kernel) -> int:
    """Which host coefficient prices the calls before ``kernel``: backward, a recorded forward call, or neither."""
    if kernel.phase is Phase.BACKWARD:
        return HOST_BACKWARD
    return HOST_FORWARD if kernel.recorded else HOST_INFERENCE


def pack(steps: Sequence[tuple[Sequence[Kernel], GpuSpec, str]], copy: CopyRoof) -> KernelArrays:
    """Arrays of the kernels of each (kernels, card, dtype) step, streaming at ``copy``'s share of each card's
    datasheet bandwidth."""
    rows = [(CLASSES.index(k.op_class), k.flops, k.bytes,
             gpu.peak(p) if (p := roof_precision(gpu, dtype, k.op_class)) is not None else 0.0,
             wave_share(k.gemm, gpu.sm_count) if k.op_class.on_compute_roof else 1.0, copy.bandwidth(gpu),
             k.host_calls, host_cost_index(k))
            for kernels, gpu, dtype in steps for k in kernels]
    sizes = [len(kernels) for kernels, _, _ in steps]
    if not rows or 0 in sizes:
        raise ValueError("every step needs at least one kernel")
    columns = [np.array(column) for column in zip(*rows, strict=True)]
    return KernelArrays(columns[0].astype(int), *(column.astype(float) for column in columns[1:7]),
                        columns[7].astype(int), np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int))


def kernel_seconds(arrays: KernelArrays, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(GPU seconds, compute-bound?) of every kernel: the roofline time at the fitted efficiencies (compute ones
    scaled by the kernel's wave share) plus the floor."""
    efficiency = coefficients[EFFICIENCY_INDEX]
    compute_class = arrays.roof > 0
    rate = efficiency[arrays.op_class] * arrays.waves * np.where(compute_class, arrays.roof, 1.0)
    compute_s = np.where(compute_class, arrays.flops / rate, 0.0)
    memory_efficiency = np.where(compute_class, efficiency[CLASSES.index(STREAM_CLASS)],
                                 efficiency[arrays.op_class])
    memory_s = arrays.bytes / (memory_efficiency * arrays.bandwidth)
    return np.maximum(compute_s, memory_s) + coefficients[FLOOR] * 1e-6, compute_class & (compute_s >= memory_s)


def host_seconds(arrays: KernelArrays, coefficients: np.ndarray) -> np.ndarray:
    """The host time each kernel waits for before it can be launched: the cost of the calls made since the previous
    launch."""
    return arrays.host_calls * coefficients[arrays.host_cost] * 1e-6


@dataclass(frozen=True)
class StepSeconds:
    """Per step: its time (the median of the timed steps of the simulation), the GPU's busy time (the sum of its
    kernels) and the host's time launching them."""

    step_s: np.ndarray
    busy_s: np.ndarray
    host_s: np.ndarray


def simulate_steps(starts: np.ndarray, kernel_s: np.ndarray, host_s: np.ndarray) -> StepSeconds:
    """The time of each step (kernels from ``starts`` on) run back to back without synchronization: the GPU starts
    kernel i when the host has launched it and kernel i-1 is done.

    Within one step, with host time H_i up to and including kernel i's launch and GPU time K_{i-1} of the kernels
    before it, the last kernel ends K + max(0, max_i(H_i − K_{i−1}) − b) after the step's first event, where b is how
    far the GPU is still behind the host when the step begins (the previous step's backlog). The backlog is carried
    from step to step from an idle GPU on; the step time is the median of :data:`TIMED_STEPS` steps after
    :data:`WARMUP_STEPS`, as measured."""
    busy = np.add.reduceat(kernel_s, starts)
    host_total = np.add.reduceat(host_s, starts)
    before = np.cumsum(kernel_s) - kernel_s - np.repeat(np.cumsum(kernel_s)[starts] - kernel_s[starts],
                                                        np.diff(np.append(starts, len(kernel_s))))
    launched = np.cumsum(host_s) - np.repeat(np.cumsum(host_s)[starts] - host_s[starts],
                                             np.diff(np.append(starts, len(host_s))))
    wait = np.maximum.reduceat(launched - before, starts)
    backlog = np.zeros(len(starts))
    times = []
    for _ in range(WARMUP_STEPS + TIMED_STEPS):
        behind = np.maximum(backlog, 0.0)
        step = busy + np.maximum(0.0, wait - behind)
        backlog = behind + step - host_total
        times.append(step)
    return StepSeconds(np.median(np.array(times[WARMUP_STEPS:]), axis=0), busy, host_total)


def step_bound(busy_s: float, host_s: float, compute_s: float, memory_s: float) -> Bound:
    """Host when launching takes longer than the GPU's work; else compute or memory, by which kind of kernel
    (``compute_s``, ``memory_s``: their summed times) takes more of the step."""
    if host_s > busy_s:
        return Bound.HOST
    return Bound.COMPUTE if compute_s >= memory_s else Bound.MEMORY
