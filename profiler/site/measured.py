"""Committed GPU measurements (``reports/data/*.json``) → plain records, each run tied to its file's provenance.

The reports show a number as *measured* only if it comes from here. A file is read only if its schema is known: add
a new one to :data:`MEASUREMENT_FILES` once its fields are mapped below. The files of this project's own GPU run
(``gpu_memory_<gpu>.json``, ``gpu_bandwidth_<gpu>.json``) are read by :mod:`profiler.site.measured_gpu`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from profiler.errors import ProfilerError
from profiler.util.units import rate_per_s

#: The repository's folder of committed measurements (the reports never read outside the repository).
DATA_DIR = Path(__file__).resolve().parents[2] / "reports" / "data"

#: Measurement files in the reference schema (``provenance``, ``copy_bandwidth_Bps``, ``runs``), in this order.
MEASUREMENT_FILES = ("reference_h200_batch128.json",)


@dataclass(frozen=True)
class MeasuredRun:
    """One measured configuration: peak ``torch.cuda.max_memory_allocated``/``reserved`` over the step, the
    median step time, and whole-device used memory from NVML (context and libraries included)."""

    model: str
    size: int
    batch: int
    train: bool
    params: int
    baseline_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    ms_per_step: float
    nvml_used_bytes: int | None
    source: str  # the file, relative to the repository root

    @property
    def examples_per_s(self) -> float:
        """Images per second at the measured step time (batch ÷ step time)."""
        return rate_per_s(self.batch, self.ms_per_step)

    def achieved_per_s(self, counted: float) -> float:
        """A counted amount of the step (FLOPs, bytes) ÷ the measured step time, per second: derived, not
        measured (the optimizer update is in the time but not in the counts)."""
        return rate_per_s(counted, self.ms_per_step)


@dataclass(frozen=True)
class MeasurementSet:
    """One committed file: where it is, the device, its provenance in one line, its runs."""

    source: str
    device: str
    provenance: str
    copy_bandwidth_bytes_per_s: float | None
    runs: tuple[MeasuredRun, ...]


@dataclass(frozen=True)
class Measurements:
    """Every committed measurement the reports may quote."""

    sets: tuple[MeasurementSet, ...]

    def run(self, model: str, size: int, train: bool, batch: int = 128) -> MeasuredRun | None:
        """The measured run of this configuration, or None (the first file that has it wins)."""
        for measurement_set in self.sets:
            for run in measurement_set.runs:
                if (run.model, run.size, run.train, run.batch) == (model, size, train, batch):
                    return run
        return None


def load_measurements(data_dir: Path = DATA_DIR) -> Measurements:
    """Read the files of :data:`MEASUREMENT_FILES` that exist under ``data_dir`` (none: no measurements)."""
    sets = []
    for name in MEASUREMENT_FILES:
        path = data_dir / name
        if path.is_file():
            sets.append(_reference_set(path, f"reports/data/{name}"))
    return Measurements(tuple(sets))


def _reference_set(path: Path, source: str) -> MeasurementSet:
    try:
        doc = json.loads(path.read_text())
        prov = doc["provenance"]
        runs = tuple(MeasuredRun(model=r["model"], size=r["size"], batch=r["batch"], train=r["train"],
                                 params=r["params"], baseline_bytes=r["baseline_allocated"],
                                 peak_allocated_bytes=r["peak_allocated"], peak_reserved_bytes=r["peak_reserved"],
                                 ms_per_step=r["ms_per_step"], nvml_used_bytes=r.get("nvml_used"), source=source)
                     for r in doc["runs"])
    except (ValueError, KeyError, TypeError) as err:
        raise ProfilerError(f"{source} is not a measurement file in the reference schema ({err!r}); fix or remove "
                            "it, or map its schema in profiler/site/measured.py") from None
    line = (f"`{source}`: {prov['device']}, torch {prov['torch']}, CUDA {prov['cuda']}, cuDNN {prov['cudnn']}, "
            f"measured {prov['date']}; {prov['notes']}")
    return MeasurementSet(source, prov["device"], line, doc.get("copy_bandwidth_Bps"), runs)
