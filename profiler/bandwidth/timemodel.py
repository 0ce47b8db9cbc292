"""The time model: GPU time per kernel from a roofline, host time per op call, and the step they make together.

For each kernel of a step (:mod:`profiler.bandwidth.kernels`) on a card of the catalogue (:mod:`profiler.catalogue`)::

    kernel time = max(FLOPs / (e_class × compute roof), bytes / (e_memory × bandwidth)) + kernel floor

The compute roof is the one PyTorch's defaults select for the kernel's dtype on that card
(:meth:`~profiler.catalogue.GpuSpec.roof`: TF32 tensor cores for float32 convolutions from compute capability 8.0, FP32
CUDA cores for float32 matrix products, the bf16/fp16 tensor cores under those dtypes), at its dense datasheet rate;
the bandwidth is the datasheet's DRAM bandwidth. The four compute classes (convolution forward, input gradient, weight
gradient, matrix product) have their own compute efficiency ``e_class`` and share the elementwise class's bandwidth
efficiency for their bytes; the five bandwidth classes (normalization, elementwise, pooling, reduction, optimizer
update) have no FLOPs and their own bandwidth efficiency. The floor is what the GPU spends on any kernel, however small.

The host: every op call the dispatcher sees — views and allocations included — costs the host a fixed time, and a
kernel can start only once the calls before it are made: in forward (Python module and functional call, dispatcher,
launch; the optimizer's foreach calls count as forward calls) one cost, in backward (the autograd engine's nodes and
their ops) another. This is an assumption about the host: it is as fast as the host of the measurements
the costs were fitted on. The GPU runs kernels in launch order, each when it has been launched and the previous one
has finished; steps follow each other without synchronization, as in the measurements (CUDA events around each step,
median of 10 after 3 warm-ups), so a GPU-bound step builds a queue and its time is the sum of its kernels, while a
host-bound step waits for launches. A step is **host-bound** when its host time exceeds its kernels' time (then the
host, not the GPU, sets its pace); otherwise it is compute- or memory-bound by which kind of kernel takes more of it.

The coefficients (:data:`COEFFICIENTS`, 12 in all) are fitted by :mod:`profiler.bandwidth.fit` on committed
measurements and stored with their provenance in ``time_calibration.json`` beside this file.
"""

from __future__ import annotations

import json
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

#: The op classes in coefficient order: the first nine coefficients are their efficiencies.
CLASSES: tuple[OpClass, ...] = tuple(OpClass)
COMPUTE_CLASSES = tuple(c for c in CLASSES if c.on_compute_roof)
#: The bandwidth efficiency of a compute-roof kernel's bytes is this class's.
STREAM_CLASS = OpClass.ELEMENTWISE
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
    roof = "its compute roof" if op_class.on_compute_roof else "the DRAM bandwidth"
    return Coefficient(f"e_{op_class}", "fraction", f"share of {roof} reached by {op_class.value.replace('_', ' ')} "
                       "kernels", 0.02, 1.0, 0.5)


#: The 12 coefficients, in order: nine efficiencies (one per op class), the kernel floor, two host costs.
COEFFICIENTS: tuple[Coefficient, ...] = (
    *(_efficiency(c) for c in CLASSES),
    Coefficient("kernel_floor_us", "µs", "GPU time of any kernel on top of its roofline time", 0.5, 15.0, 3.0),
    Coefficient("host_forward_call_us", "µs", "host time of one op call in forward, views included (and of one "
                "optimizer foreach call)", 1.0, 100.0, 20.0),
    Coefficient("host_backward_call_us", "µs", "host time of one op call in backward (the autograd engine's), views "
                "included", 1.0, 100.0, 20.0),
)
NAMES = tuple(c.name for c in COEFFICIENTS)
FLOOR, HOST_FORWARD, HOST_BACKWARD = (NAMES.index(n) for n in ("kernel_floor_us", "host_forward_call_us",
                                                                "host_backward_call_us"))


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficient values by name (units of :data:`COEFFICIENTS`) and where they came from: the files and
    configurations they were fitted on, the method, the date, and the fit's errors."""

    values: dict[str, float]
    fitted_on: list[str]
    method: str
    date: str
    errors: dict[str, Any] = field(default_factory=dict)

    def vector(self) -> np.ndarray:
        """The values in :data:`COEFFICIENTS` order."""
        return np.array([self.values[name] for name in NAMES], dtype=float)


def calibration_from_json(obj: dict[str, Any]) -> Calibration:
    """A :class:`Calibration` from its JSON object (as :func:`calibration_json` writes it)."""
    values = {name: float(entry["value"]) for name, entry in obj["coefficients"].items()}
    missing = [name for name in NAMES if name not in values]
    if missing:
        raise ProfilerError(f"{CALIBRATION_FILE.name} lacks {', '.join(missing)}: rerun `python -m benchmarks timing`")
    return Calibration(values, list(obj["fitted_on"]), obj["method"], obj["date"], obj.get("errors", {}))


def calibration_json(calibration: Calibration) -> dict[str, Any]:
    """The JSON object of a calibration: each coefficient with its unit and meaning, then its provenance."""
    return {"coefficients": {c.name: {"value": float(f"{calibration.values[c.name]:.4g}"), "unit": c.unit,
                                      "meaning": c.meaning} for c in COEFFICIENTS},
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
    :data:`CLASSES`), FLOPs, bytes, compute roof in FLOP/s (0 for bandwidth classes), the op calls the host makes
    before launching it (:attr:`~profiler.bandwidth.kernels.Kernel.host_calls`) and whether they are backward calls.
    ``starts`` holds the index of each step's first kernel."""

    op_class: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray
    roof: np.ndarray
    host_calls: np.ndarray
    backward: np.ndarray
    starts: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.starts)


def roof_precision(gpu: GpuSpec, dtype: str, op_class: OpClass) -> Precision | None:
    """The compute units a kernel of ``op_class`` runs on (None for bandwidth classes)."""
    return gpu.roof(dtype, op_class.convolution) if op_class.on_compute_roof else None


def pack(steps: Sequence[tuple[Sequence[Kernel], GpuSpec, str]]) -> KernelArrays:
    """Arrays of the kernels of each (kernels, card, dtype) step."""
    rows = [(CLASSES.index(k.op_class), k.flops, k.bytes,
             gpu.peak(p) if (p := roof_precision(gpu, dtype, k.op_class)) is not None else 0.0,
             k.host_calls, k.phase is Phase.BACKWARD)
            for kernels, gpu, dtype in steps for k in kernels]
    sizes = [len(kernels) for kernels, _, _ in steps]
    if not rows or 0 in sizes:
        raise ValueError("every step needs at least one kernel")
    columns = [np.array(column) for column in zip(*rows, strict=True)]
    return KernelArrays(columns[0].astype(int), columns[1].astype(float), columns[2].astype(float),
                        columns[3].astype(float), columns[4].astype(float), columns[5].astype(bool),
                        np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int))


def kernel_seconds(arrays: KernelArrays, bandwidth: np.ndarray | float, coefficients: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(GPU seconds, compute-bound?) of every kernel: the roofline time at the fitted efficiencies plus the floor.
    ``bandwidth``: bytes/s of each kernel's card (or one for all)."""
    efficiency = coefficients[:len(CLASSES)]
    compute_class = arrays.roof > 0
    compute_s = np.where(compute_class, arrays.flops / (efficiency[arrays.op_class] * np.where(compute_class,
                                                                                             arrays.roof, 1.0)), 0.0)
    memory_efficiency = np.where(compute_class, efficiency[CLASSES.index(STREAM_CLASS)],
                                 efficiency[arrays.op_class])
    memory_s = arrays.bytes / (memory_efficiency * bandwidth)
    return np.maximum(compute_s, memory_s) + coefficients[FLOOR] * 1e-6, compute_class & (compute_s >= memory_s)


def host_seconds(arrays: KernelArrays, coefficients: np.ndarray) -> np.ndarray:
    """The host time each kernel waits for before it can be launched: the cost of the calls made since the previous
    launch."""
    per_call = np.where(arrays.backward, coefficients[HOST_BACKWARD], coefficients[HOST_FORWARD]) * 1e-6
    return arrays.host_calls * per_call


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
