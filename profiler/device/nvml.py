"""NVML counters during the profiled steps, from a sampling thread.

Every ``interval_s`` the thread reads the device's used memory (``nvmlDeviceGetMemoryInfo``), GPU utilization and
memory-controller utilization (``nvmlDeviceGetUtilizationRates``: the percent of the driver's last sample period —
1/6 s to 1 s depending on the GPU — in which a kernel ran, resp. device memory was read or written). On GPUs with GPM
(Hopper and newer) it also takes GPM samples at least :data:`GPM_MIN_INTERVAL_S` apart (NVML's documented minimum)
and computes DRAM bandwidth utilization (``NVML_GPM_METRIC_DRAM_BW_UTIL``, percent of the theoretical peak) between
consecutive ones, and once over the whole window.

A metric NVML does not support is reported as ``None`` with the reason, and NVML missing or failing to start is
reported the same way — never as zeros, and never as an error: the timing does not depend on it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


@dataclass
class MetricSummary:
    """One NVML metric over the sampled window: min/mean/max, or ``None`` with ``reason`` when not measured."""

    unit: str
    min: float | None = None
    mean: float | None = None
    max: float | None = None
    samples: int = 0
    reason: str | None = None


@dataclass
class NvmlSummary:
    """NVML counters sampled by a thread during the profiled steps. ``available`` is False (with ``reason``) when
    NVML could not be used at all; each metric may still be unsupported on its own (its ``reason`` says so).
    ``timeline`` holds one dict per sample: ``t_s`` (seconds since the first sample) and each metric (None where
    that sample has no value)."""

    available: bool
    reason: str | None = None
    interval_s: float = 0.0
    window_s: float = 0.0
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    timeline: list[dict[str, float | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)



#: NVML: "The interval between these two nvmlGpmSampleGet() calls should be greater than 100ms".
GPM_MIN_INTERVAL_S = 0.1
DEFAULT_INTERVAL_S = 0.02

METRICS = {
    "used_memory_bytes": "bytes",
    "gpu_util_percent": "%",
    "memory_util_percent": "%",
    "dram_bw_util_percent": "%",
}


def load_pynvml() -> ModuleType:
    import pynvml

    return pynvml


def why(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class NvmlSampler:
    """Context manager: samples NVML on a thread while the block runs; :meth:`summary` afterwards.

    ``uuid`` (``torch.cuda.get_device_properties(i).uuid``) picks the device NVML-side, since NVML's indices ignore
    ``CUDA_VISIBLE_DEVICES``; ``index`` is the fallback. ``nvml`` replaces the ``pynvml`` module (tests)."""

    def __init__(self, index: int = 0, uuid: str | None = None, interval_s: float = DEFAULT_INTERVAL_S,
                 nvml: ModuleType | Any | None = None) -> None:
        self.index, self.uuid, self.interval_s = index, uuid, interval_s
        self._nvml = nvml
        self._handle: Any = None
        self._reason: str | None = None
        self._unsupported: dict[str, str] = {}
        self._timeline: list[dict[str, float | None]] = []
        self._gpm: list[Any] = []          # [first, previous, current] sample buffers
        self._gpm_times: list[float] = []  # when the first and the previous GPM samples were taken
        self._window_dram: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._window = 0.0

    def __enter__(self) -> NvmlSampler:
        try:
            if self._nvml is None:
                self._nvml = load_pynvml()
        except ImportError:
            self._reason = "NVML unavailable: the nvidia-ml-py package (pynvml) is not installed"
            return self
        try:
            self._nvml.nvmlInit()
        except Exception as err:
            self._reason = f"NVML unavailable: nvmlInit failed ({why(err)})"
            return self
        try:
            self._handle = self._device_handle()
            self._start_gpm()
        except Exception as err:
            self._reason = f"NVML unavailable: no handle for the device ({why(err)})"
            self._shutdown()
            return self
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._sample(final=True)
        self._window = time.perf_counter() - self._t0
        self._shutdown()

    def _device_handle(self) -> Any:
        if self.uuid:
            uuid = self.uuid if self.uuid.startswith(("GPU-", "MIG-")) else f"GPU-{self.uuid}"
            try:
                return self._nvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception:  # older drivers or an unexpected uuid form: fall back to the index
                pass
        return self._nvml.nvmlDeviceGetHandleByIndex(self.index)

    def _start_gpm(self) -> None:
        nvml = self._nvml
        try:
            supported = bool(nvml.nvmlGpmQueryDeviceSupport(self._handle).isSupportedDevice)
        except Exception as err:
            self._unsupported["dram_bw_util_percent"] = f"GPM query failed ({why(err)})"
            return
        if not supported:
            self._unsupported["dram_bw_util_percent"] = "not supported: GPM metrics need a Hopper or newer GPU"
            return
        try:
            self._gpm = [nvml.nvmlGpmSampleAlloc() for _ in range(3)]
        except Exception as err:
            self._unsupported["dram_bw_util_percent"] = f"GPM sample buffers unavailable ({why(err)})"
            self._gpm = []

    def _shutdown(self) -> None:
        for sample in self._gpm:
            try:
                self._nvml.nvmlGpmSampleFree(sample)
            except Exception:  # freeing is best effort; NVML shuts down next
                pass
        self._gpm = []
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # nothing left to do about it
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _read(self, key: str, read: Any) -> float | None:
        if key in self._unsupported:
            return None
        try:
            return float(read())
        except Exception as err:
            self._unsupported[key] = _unsupported_reason(self._nvml, err)
            return None

    def _sample(self, final: bool = False) -> None:
        now = time.perf_counter()
        nvml, handle = self._nvml, self._handle
        rates: dict[str, Any] = {}

        def utilization(field: str) -> float:
            if "value" not in rates:
                rates["value"] = nvml.nvmlDeviceGetUtilizationRates(handle)
            return getattr(rates["value"], field)

        entry: dict[str, float | None] = {
            "t_s": round(now - self._t0, 4),
            "used_memory_bytes": self._read("used_memory_bytes", lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used),
            "gpu_util_percent": self._read("gpu_util_percent", lambda: utilization("gpu")),
            "memory_util_percent": self._read("memory_util_percent", lambda: utilization("memory")),
            "dram_bw_util_percent": self._gpm_step(now, final),
        }
        self._timeline.append(entry)

    def _gpm_step(self, now: float, final: bool) -> float | None:
        """Take a GPM sample if the previous one is old enough; the DRAM utilization since then, if any."""
        if not self._gpm or "dram_bw_util_percent" in self._unsupported:
            return None
        first, previous, current = self._gpm
        try:
            if not self._gpm_times:
                self._nvml.nvmlGpmSampleGet(self._handle, first)
                self._nvml.nvmlGpmSampleGet(self._handle, previous)
                self._gpm_times = [now, now]
                return None
            due = now - self._gpm_times[1] > GPM_MIN_INTERVAL_S
            whole_window = final and now - self._gpm_times[0] > GPM_MIN_INTERVAL_S
            if not (due or whole_window):
                return None
            self._nvml.nvmlGpmSampleGet(self._handle, current)
            value = self._gpm_metric(previous, current) if due else None
            if whole_window:
                self._window_dram = self._gpm_metric(first, current)
            if due:
                self._gpm[1], self._gpm[2] = current, previous
                self._gpm_times[1] = now
            return value
        except Exception as err:
            self._unsupported["dram_bw_util_percent"] = _unsupported_reason(self._nvml, err)
            return None

    def _gpm_metric(self, sample1: Any, sample2: Any) -> float:
        nvml = self._nvml
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = 1
        request.sample1, request.sample2 = sample1, sample2
        request.metrics[0].metricId = nvml.NVML_GPM_METRIC_DRAM_BW_UTIL
        nvml.nvmlGpmMetricsGet(request)
        status = request.metrics[0].nvmlReturn
        if status != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(status)
        return float(request.metrics[0].value)

    def summary(self) -> NvmlSummary:
        """Min/mean/max per metric over the samples, the timeline, and why any metric is missing."""
        if self._reason is not None:
            return NvmlSummary(available=False, reason=self._reason, interval_s=self.interval_s,
                               metrics={key: MetricSummary(unit, reason=self._reason) for key, unit in METRICS.items()})
        metrics = {}
        for key, unit in METRICS.items():
            values = [v for entry in self._timeline if (v := entry.get(key)) is not None]
            if values:
                metrics[key] = MetricSummary(unit, min(values), sum(values) / len(values), max(values), len(values))
            else:
                metrics[key] = MetricSummary(unit, reason=self._unsupported.get(key) or self._no_values(key))
        notes = []
        if self._window_dram is not None:
            notes.append(f"DRAM bandwidth utilization over the whole window (GPM, first to last sample): "
                         f"{self._window_dram:.1f} %")
        if self._window < 1.0:
            notes.append(f"the sampled window lasted {self._window:.2f} s: NVML's utilization rates are averaged by "
                         "the driver over up to 1 s, so they also cover time just before the profiled steps")
        return NvmlSummary(available=True, interval_s=self.interval_s, window_s=round(self._window, 4),
                           metrics=metrics, timeline=list(self._timeline), notes=notes)

    def _no_values(self, key: str) -> str:
        if key == "dram_bw_util_percent":
            return (f"no GPM interval: the window ({self._window:.2f} s) is shorter than GPM's minimum of "
                    f"{GPM_MIN_INTERVAL_S * 1000:.0f} ms between samples")
        return "no sample was taken"


def _unsupported_reason(nvml: Any, err: BaseException) -> str:
    not_supported = getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", None)
    if getattr(err, "value", None) == not_supported and not_supported is not None:
        return "not supported by this GPU or driver (NVML_ERROR_NOT_SUPPORTED)"
    return f"NVML error ({why(err)})"
