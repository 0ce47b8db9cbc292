"""This project's own GPU measurements (``reports/data/gpu_memory_<gpu>.json`` and ``gpu_bandwidth_<gpu>.json``, written
by ``benchmarks/gpu_run.py``) → plain records, each tied to its file's provenance.

The reference schema (``reference_h200_batch128.json``, plain PyTorch) is :mod:`profiler.site.measured`'s; these
are the files of our own protocol: peak memory of every configuration beside its prediction, and kernel time per
layer. A dry run's file (``"dry_run": true``: CPU stand-ins) is refused, whatever its name. Nothing here computes a
figure: the records carry what the files measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.errors import ProfilerError
from profiler.kinds import Mode
from profiler.site.measured import DATA_DIR

MEMORY_PATTERN = "gpu_memory_*.json"
BANDWIDTH_PATTERN = "gpu_bandwidth_*.json"


@dataclass(frozen=True)
class MeasuredPeak:
    """One configuration's measured peak ``torch.cuda.max_memory_allocated``/``reserved`` over the protocol's step
    (profiler/memory/measure.py), the allocations at the peak by kind, and the prediction for the same GPU beside
    it (None where the prediction failed)."""

    model: str
    size: int
    batch: int
    train: bool
    optimizer: str
    dtype: str
    checkpoint: bool
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    baseline_bytes: int
    breakdown: dict[str, int | None]
    phases: dict[str, int]
    nvml_used_bytes: int | None
    predicted_peak_allocated_bytes: int | None
    predicted_peak_reserved_bytes: int | None
    allocated_error_percent: float | None
    source: str  # the file, relative to the repository root


@dataclass(frozen=True)
class GpuMemorySet:
    """One ``gpu_memory_<gpu>.json``: where it is, the device, its provenance in one line, its runs, and the
    configurations that failed (key → why)."""

    source: str
    device: str
    provenance: str
    runs: tuple[MeasuredPeak, ...]
    failed: dict[str, str]

    def run(self, model: str, size: int, train: bool, batch: int = 128, optimizer: str = "sgd",
            dtype: str = "float32", checkpoint: bool = False) -> MeasuredPeak | None:
        """The measured configuration, or None."""
        wanted = (model, size, train, batch, optimizer, dtype, checkpoint)
        return next((r for r in self.runs if (r.model, r.size, r.train, r.batch, r.optimizer, r.dtype,
                                              r.checkpoint) == wanted), None)


@dataclass(frozen=True)
class MeasuredLayerTime:
    """One row of a measured configuration: a layer of the static count, ``(optimizer)`` or ``(other)``. Time is
    CUDA kernel time per step; rates are counted FLOPs and bytes ÷ that time; ``compute_roof`` names the measured
    roof the layer is compared with (``fp32``/``tf32``), the fractions are of the measured peaks."""

    name: str
    type: str
    category: str
    ms_per_step: float
    forward_ms: float
    backward_ms: float
    share: float
    flops: int | None
    bytes: int | None
    flops_per_s: float | None
    bytes_per_s: float | None
    compute_roof: str | None
    compute_peak_fraction: float | None
    bandwidth_peak_fraction: float | None
    bound: str | None


@dataclass(frozen=True)
class MeasuredLayerTimes:
    """One measured bandwidth configuration: step times without and with the profiler, GPU busy time, and the
    per-layer rows (module order, then ``(optimizer)`` and ``(other)``)."""

    model: str
    size: int
    batch: int
    train: bool
    step_ms: float
    profiled_step_ms: float
    overhead_percent: float
    busy_ms: float | None
    idle_ms: float | None
    attributed_ms: float
    layers: tuple[MeasuredLayerTime, ...]
    nvml: dict[str, Any] | None
    source: str


@dataclass(frozen=True)
class GpuBandwidthSet:
    """One ``gpu_bandwidth_<gpu>.json``: the device's measured peaks beside the datasheet's, its runs, and the
    configurations that failed (key → why)."""

    source: str
    device: str
    provenance: str
    peaks: dict[str, Any]
    datasheet: dict[str, Any] | None
    runs: tuple[MeasuredLayerTimes, ...]
    failed: dict[str, str]

    def run(self, model: str, size: int, train: bool, batch: int = 128) -> MeasuredLayerTimes | None:
        """The measured configuration, or None."""
        return next((r for r in self.runs if (r.model, r.size, r.train, r.batch) == (model, size, train, batch)),
                    None)


def load_gpu_memory(data_dir: Path = DATA_DIR) -> tuple[GpuMemorySet, ...]:
    """Every ``gpu_memory_<gpu>.json`` under ``data_dir``, by file name."""
    return tuple(_read(path, _memory_set) for path in sorted(data_dir.glob(MEMORY_PATTERN)))


def load_gpu_bandwidth(data_dir: Path = DATA_DIR) -> tuple[GpuBandwidthSet, ...]:
    """Every ``gpu_bandwidth_<gpu>.json`` under ``data_dir``, by file name."""
    return tuple(_read(path, _bandwidth_set) for path in sorted(data_dir.glob(BANDWIDTH_PATTERN)))


def _read(path: Path, parse: Any) -> Any:
    source = f"reports/data/{path.name}"
    try:
        doc = json.loads(path.read_text())
        if doc.get("dry_run") is not False:
            raise ProfilerError(f"{source} is not a GPU measurement ('dry_run' is {doc.get('dry_run')!r}; a dry "
                                "run's CPU stand-ins must not be committed): remove it")
        return parse(doc, source)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ProfilerError(f"{source} is not a file of benchmarks/gpu_run.py ({err!r}); fix or remove it, or map "
                            "its schema in profiler/site/measured_gpu.py") from None


def _provenance_line(source: str, prov: dict[str, Any]) -> str:
    script = prov.get("script", "benchmarks/gpu_run.py")
    return (f"`{source}`: {prov['device']}, driver {prov['driver']}, torch {prov['torch']}, CUDA {prov['cuda']}, "
            f"cuDNN {prov['cudnn']}, measured {str(prov['date'])[:10]} by {script}")


def _failed(doc: dict[str, Any]) -> dict[str, str]:
    return {entry["key"]: entry["error"] for entry in doc.get("failed", [])}


def _memory_set(doc: dict[str, Any], source: str) -> GpuMemorySet:
    runs = []
    for entry in doc["runs"]:
        config, measured, predicted = entry["config"], entry["measured"], entry["predicted"] or {}
        runs.append(MeasuredPeak(
            model=config["name"], size=config["size"], batch=config["batch"], train=config["train"],
            optimizer=config.get("optimizer", "sgd"), dtype=config.get("dtype", "float32"),
            checkpoint=config.get("checkpoint", False), peak_allocated_bytes=measured["peak_allocated_bytes"],
            peak_reserved_bytes=measured["peak_reserved_bytes"], baseline_bytes=measured["baseline_bytes"],
            breakdown=measured["breakdown"], phases=measured["phases"],
            nvml_used_bytes=measured.get("nvml_used_bytes"),
            predicted_peak_allocated_bytes=predicted.get("peak_allocated_bytes"),
            predicted_peak_reserved_bytes=predicted.get("peak_reserved_bytes"),
            allocated_error_percent=entry.get("allocated_error_percent"), source=source))
    prov = doc["provenance"]
    return GpuMemorySet(source, prov["device"], _provenance_line(source, prov), tuple(runs), _failed(doc))


_LAYER_FIELDS = ("name", "type", "category", "ms_per_step", "forward_ms", "backward_ms", "share", "flops", "bytes",
                 "flops_per_s", "bytes_per_s", "compute_roof", "compute_peak_fraction", "bandwidth_peak_fraction",
                 "bound")


def _bandwidth_set(doc: dict[str, Any], source: str) -> GpuBandwidthSet:
    runs = tuple(MeasuredLayerTimes(
        model=run["model"], size=run["input_shape"][-1], batch=run["input_shape"][0], train=run["mode"] == Mode.TRAIN,
        step_ms=run["step_ms"], profiled_step_ms=run["profiled_step_ms"], overhead_percent=run["overhead_percent"],
        busy_ms=run.get("busy_ms"), idle_ms=run["idle_ms"], attributed_ms=run["attributed_ms"],
        layers=tuple(MeasuredLayerTime(**{name: layer[name] for name in _LAYER_FIELDS}) for layer in run["layers"]),
        nvml=run.get("nvml"), source=source) for run in doc["runs"])
    prov = doc["provenance"]
    return GpuBandwidthSet(source, prov["device"], _provenance_line(source, prov), doc["peaks"], doc.get("datasheet"),
                           runs, _failed(doc))
