"""Plain records of a bandwidth run: device peaks, per-layer timings, and the result of one
configuration. Times are milliseconds per step, rates per second, bytes stay bytes; units are the formatter's job.

``None`` always means "not measured" (and the record says why somewhere near it), never zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from profiler.catalogue import Datasheet
from profiler.device import DeviceKind
from profiler.device.nvml import NvmlSummary
from profiler.kinds import OPTIMIZER_ROW, OTHER_ROW, SCHEMA_VERSION, Source

CONVENTION = ("FLOPs and bytes are the static counts of the same step (python -m profiler flops); achieved FLOP/s "
              "and bytes/s = counted ÷ measured time; % of peak = achieved ÷ the device's measured peak; a layer is "
              "memory-bound when its intensity (FLOP/B) lies below the ridge point (compute peak ÷ copy bandwidth). "
              "Counted bytes assume every tensor crosses DRAM, so a layer whose tensors stay in cache can show more "
              "than the copy bandwidth")

PREDICTED_CONVENTION = ("FLOPs and bytes are the static counts of the same step (python -m profiler flops); a row's "
                        "time is its kernels' predicted time; achieved FLOP/s and bytes/s = counted ÷ predicted time; "
                        "% of peak = achieved ÷ the card's datasheet roof; a row is compute- or memory-bound by "
                        "which kind of kernel takes more of its predicted time")

#: Layer categories of the time shares, by the layer's module type (see :func:`profiler.bandwidth.runner.category`).
CATEGORIES = ("conv", "linear", "normalization", "elementwise", "pooling", "other")


@dataclass
class DevicePeaks:
    """Measured peaks of one device (see :mod:`profiler.bandwidth.peaks` for how).

    ``copy_bytes_per_s`` counts read + write of a device-to-device (or host memory) copy. ``fp32_flops_per_s`` is a
    large fp32 matmul with TF32 off; ``tf32_flops_per_s`` the same matmul with TF32 on and ``conv_flops_per_s`` a
    large fp32 convolution with cuDNN's default (TF32 allowed) — both CUDA only (None on the CPU)."""

    device: str
    kind: str                                   # "cuda" | "cpu"
    copy_bytes_per_s: float
    fp32_flops_per_s: float
    tf32_flops_per_s: float | None = None
    conv_flops_per_s: float | None = None
    method: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def tensor_core_flops_per_s(self) -> float | None:
        """The roof of TF32 work: the faster of the TF32 matmul and the convolution (None on the CPU)."""
        measured = [v for v in (self.tf32_flops_per_s, self.conv_flops_per_s) if v is not None]
        return max(measured) if measured else None

    @property
    def fp32_ridge(self) -> float:
        """FLOP/B where the FP32 roof meets the bandwidth roof."""
        return self.fp32_flops_per_s / self.copy_bytes_per_s

    @property
    def tensor_core_ridge(self) -> float | None:
        """FLOP/B where the TF32 roof meets the bandwidth roof (None on the CPU)."""
        roof = self.tensor_core_flops_per_s
        return roof / self.copy_bytes_per_s if roof is not None else None


@dataclass
class LayerTiming:
    """One row: a layer of the static count (same name), or ``(optimizer)`` / ``(other)``.

    ``ms_per_step`` is the layer's measured time per step — CUDA kernel time on a GPU, CPU time inside its ranges on
    the CPU — split into ``forward_ms`` and ``backward_ms`` where that applies. ``flops``/``bytes`` are the static
    counts for the same step (None for rows the counter has no numbers for); the rates are counted ÷ measured.
    ``compute_roof`` names the peak the layer is compared with ("fp32" or "tf32"), ``bound`` whether its intensity
    lies below ("memory") or above ("compute") that roof's ridge point."""

    name: str
    type: str
    category: str
    ms_per_step: float
    forward_ms: float = 0.0
    backward_ms: float = 0.0
    share: float = 0.0
    flops: int | None = None
    bytes: int | None = None
    intensity: float | None = None
    flops_per_s: float | None = None
    bytes_per_s: float | None = None
    compute_roof: str | None = None
    compute_peak_fraction: float | None = None
    bandwidth_peak_fraction: float | None = None
    bound: str | None = None


@dataclass(repr=False)
class BandwidthResult:
    """Time and achieved rates per layer of one configuration on one device, measured or predicted.

    ``source`` says which (:class:`~profiler.kinds.Source`); ``model_source`` is where the model comes from. Measured:
    ``step_ms`` is the median step time over ``timed_steps`` steps without profiling (CUDA events on a GPU,
    ``perf_counter`` on the CPU); ``profiled_step_ms`` the same over the ``steps`` profiled steps (ranges, hooks,
    profiler and NVML sampling on), so ``overhead_percent`` is the profiler's cost, and ``step_spread_percent`` how
    much step times vary (the larger interquartile range of the two sets, in % of ``step_ms``): an overhead within
    it, negative ones included, is noise (:attr:`overhead_within_noise`). ``attributed_ms`` sums the rows
    (``(other)`` included) per profiled step; on a GPU ``busy_ms`` is the union of the kernel intervals per
    profiled step (the time some kernel ran; overlapping kernels count once) and ``idle_ms`` the rest of the mean
    profiled step, when no kernel ran (launch gaps, hooks). Predicted (:mod:`profiler.bandwidth.predict`, no device
    ran): ``step_ms`` is the time model's step on the catalogue card ``gpu``, the rows its kernel times, ``idle_ms``
    the time the GPU waits for the host, ``host_ms`` the host's time launching the step, ``bound`` the step's bound
    and ``assumptions`` the roofs, efficiencies and host costs used with the data they were fitted on; the profiling
    fields are None. ``flops``/``bytes`` are the static counts of the step, ``step_flops_per_s``/``step_bytes_per_s``
    those ÷ the step time. ``time_basis`` says what a row's time is."""

    model: str
    source: str                                 # "measured" | "predicted"
    model_source: str
    input_shape: tuple[int, ...]
    mode: str                                   # "inference" | "train"
    dtype: str
    device_kind: str                            # "cuda" | "cpu"
    device_name: str
    time_basis: str
    warmup: int | None
    timed_steps: int | None
    steps: int | None
    step_ms: float
    profiled_step_ms: float | None
    profiled_mean_step_ms: float | None
    overhead_percent: float | None
    attributed_ms: float
    idle_ms: float | None
    flops: int
    bytes: int
    step_flops_per_s: float
    step_bytes_per_s: float
    layers: list[LayerTiming]
    shares: dict[str, float]
    peaks: DevicePeaks | None
    peaks_source: str
    datasheet: Datasheet | None
    nvml: NvmlSummary | None
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    busy_ms: float | None = None
    gpu: str | None = None                      # catalogue key (profiler/catalogue.py) of the card, where known
    optimizer: str | None = None                # training steps only
    bound: str | None = None                    # profiler.kinds.Bound of the step (predicted)
    host_ms: float | None = None
    assumptions: dict[str, Any] | None = None
    step_spread_percent: float | None = None    # measured runs with at least 2 timed and 2 profiled steps

    @property
    def overhead_within_noise(self) -> bool:
        """Whether the profiler's overhead is smaller than the variation between steps (then its sign means
        nothing)."""
        return (self.overhead_percent is not None and self.step_spread_percent is not None
                and abs(self.overhead_percent) <= self.step_spread_percent)

    @property
    def predicted(self) -> bool:
        """Whether the time model made these figures (no device ran)."""
        return self.source == Source.PREDICTED

    @property
    def where(self) -> str:
        """"measured on <GPU> (CUDA)", "measured on CPU (...) — CPU figures only, no GPU figure" or "predicted for
        <GPU> (<key>) — no GPU ran": what the figures are, first on every output."""
        if self.predicted:
            return f"predicted for {self.device_name} ({self.gpu}) — no GPU ran"
        if self.device_kind == DeviceKind.CUDA:
            return f"measured on {self.device_name} (CUDA)"
        return f"measured on {self.device_name} — CPU figures only, no GPU figure"

    @property
    def convention(self) -> str:
        """How the rows' rates and bounds are made."""
        return PREDICTED_CONVENTION if self.predicted else CONVENTION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``python -m profiler bandwidth`` prints: every field of the record (peaks, datasheet, NVML
        timeline, provenance included), what it is (``measured_on`` or ``predicted_for``) and the conventions;
        floats to 6 significant digits (``schema_version``: CHANGELOG.md)."""
        from profiler.counting import conventions

        obj = asdict(self)
        obj["input_shape"] = list(self.input_shape)
        head = {"schema_version": SCHEMA_VERSION,
                "predicted_for" if self.predicted else "measured_on": self.where,
                "convention": self.convention, "count_convention": conventions()}
        return _significant({**head, **obj})

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.input_shape))
        slowest = max((row for row in self.layers if row.name not in (OTHER_ROW, OPTIMIZER_ROW)),
                      key=lambda row: row.ms_per_step, default=None)
        top = f", slowest layer {slowest.name} ({100 * slowest.share:.0f} %)" if slowest else ""
        return (f"BandwidthResult({self.model}, input {shape} {self.dtype}, {self.mode}, {self.where}: "
                f"{self.step_ms:.3f} ms/step{top})")


def _significant(obj: Any, digits: int = 6) -> Any:
    """Floats rounded to ``digits`` significant digits, recursively (measurements carry no more)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _significant(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_significant(v, digits) for v in obj]
    return obj
