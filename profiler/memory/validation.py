"""How far the memory prediction is from the committed measurements, fitted on them and not.

The committed measurements are the 24 runs of ``reports/data/reference_h200_batch128.json`` (six models × 96/224 ×
inference/training, batch 128, NVIDIA H200). For each run, peak allocated and peak reserved memory are predicted
twice:

* **in-sample**: with the committed calibration (``calibration.json``), whose fitted coefficient saw this run;
* **leave-one-model-out (LOMO)**: with the coefficients :func:`fit_workspaces` finds on the other five models.

:func:`workspace_sensitivity` gives the range a run's predicted peaks take when every cuDNN workspace is moved by up
to ±15 %, each by its own factor: how much of a reserved error the unknown workspaces alone can explain.

:func:`reserved_margins` gives m of the fit verdict, per mode: the largest factor by which a prediction of peak
reserved memory fell short of the measurement (measured / predicted − 1), leave-one-model-out or in-sample, so that
predicted × (1 + m) covers every committed run. This module reads ``reports/`` and therefore needs the repository
checkout.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from profiler.catalogue import gpu_spec
from profiler.kinds import Mode
from profiler.memory.calibration import calibrations
from profiler.memory.predict import Replay, predict, replay
from profiler.memory.records import MemoryResult
from profiler.memory.trace import Trace, trace_step
from profiler.memory.verdict import fit_verdict
from profiler.memory.workspaces import conv_workspaces, stages
from profiler.models import build, resolve
from profiler.step import StepConfig

REFERENCE_FILE = Path(__file__).resolve().parents[2] / "reports" / "data" / "reference_h200_batch128.json"
REFERENCE_GPU = "h200"

#: The filter-gradient weight factors :func:`fit_workspaces` tries.
WEIGHT_FACTORS = tuple(x / 2 for x in range(0, 13))
#: How far :func:`workspace_sensitivity` moves each cuDNN workspace, up or down (0.15 = ±15 %), and how many
#: independently drawn tables it replays.
WORKSPACE_SPREAD = 0.15
SENSITIVITY_DRAWS = 12


@dataclass(frozen=True)
class ReferenceRun:
    """One committed measurement: configuration and the peaks of ``torch.cuda.max_memory_*`` (``peak_allocated_first``:
    the first training step; None for inference), in bytes."""

    model: str
    size: int
    batch: int
    train: bool
    peak_allocated: int
    peak_reserved: int
    peak_allocated_first: int | None
    nvml_used: int

    @property
    def label(self) -> str:
        return f"{self.model}@{self.size} {'training' if self.train else 'inference'}"


@dataclass(frozen=True)
class RunErrors:
    """Predicted against measured for one run; errors are (predicted − measured) / measured (0.01 = 1 % over).
    ``required`` is the committed calibration's fit verdict for the run: its predicted peak reserved × (1 + m)."""

    run: ReferenceRun
    allocated: int
    reserved: int
    lomo_allocated: int
    lomo_reserved: int
    allocated_first: int | None
    lomo_allocated_first: int | None
    required: int

    @staticmethod
    def _error(predicted: int | None, measured: int | None) -> float | None:
        return None if predicted is None or measured is None else (predicted - measured) / measured

    @property
    def allocated_error(self) -> float:
        return self._error(self.allocated, self.run.peak_allocated)

    @property
    def reserved_error(self) -> float:
        return self._error(self.reserved, self.run.peak_reserved)

    @property
    def lomo_allocated_error(self) -> float:
        return self._error(self.lomo_allocated, self.run.peak_allocated)

    @property
    def lomo_reserved_error(self) -> float:
        return self._error(self.lomo_reserved, self.run.peak_reserved)

    @property
    def allocated_first_error(self) -> float | None:
        return self._error(self.allocated_first, self.run.peak_allocated_first)

    @property
    def lomo_allocated_first_error(self) -> float | None:
        return self._error(self.lomo_allocated_first, self.run.peak_allocated_first)


def reference_runs() -> list[ReferenceRun]:
    """The committed reference runs, in file order."""
    doc = json.loads(REFERENCE_FILE.read_text())
    return [ReferenceRun(model=r["model"], size=r["size"], batch=r["batch"], train=r["train"],
                         peak_allocated=r["peak_allocated"], peak_reserved=r["peak_reserved"],
                         peak_allocated_first=r.get("peak_allocated_step1"), nvml_used=r["nvml_used"])
            for r in doc["runs"]]


@cache
def _trace(model: str, size: int, batch: int, train: bool) -> Trace:
    spec = resolve(model)
    return trace_step(build(spec, size), spec.input_shape(batch, size), StepConfig.make(train),
                      gpu=gpu_spec(REFERENCE_GPU))


def reference_prediction(run: ReferenceRun) -> MemoryResult:
    """The prediction for the reference card of the configuration ``run`` measured, from the trace the validation
    replays: the same result as :func:`~profiler.memory.runner.predict_config` gives, without tracing again."""
    spec = resolve(run.model)
    return predict(_trace(run.model, run.size, run.batch, run.train), gpu_spec(REFERENCE_GPU), spec.name,
                   model_source=spec.source)


def _replay(run: ReferenceRun, table: dict[str, Any]) -> Replay:
    return replay(_trace(run.model, run.size, run.batch, run.train), gpu_spec(REFERENCE_GPU), table)


def workspace_table(weight_factor: float) -> dict[str, Any]:
    """The committed coefficient table of the reference card with the filter-gradient weight factor replaced (the
    one coefficient :func:`fit_workspaces` fits)."""
    table = copy.deepcopy(calibrations()[REFERENCE_GPU].workspaces)
    for kernel in ("spatial", "pointwise"):
        table["backward_filter"][kernel]["weight"] = weight_factor
    return table


@cache
def _replay_with_factor(run: ReferenceRun, weight_factor: float) -> Replay:
    """:func:`_replay` with :func:`workspace_table` (``weight_factor``): the same for every fit that includes ``run``,
    so the leave-one-model-out fits replay each (run, factor) once."""
    return _replay(run, workspace_table(weight_factor))


def fit_workspaces(runs: list[ReferenceRun]) -> float:
    """The filter-gradient weight factor (from :data:`WEIGHT_FACTORS`) that minimises the mean |error| of predicted
    peak allocated memory over the training runs of ``runs``, first and second step (ties: the smaller factor)."""
    training = [r for r in runs if r.train]

    def mean_error(factor: float) -> float:
        errors = []
        for r in training:
            result = _replay_with_factor(r, factor)
            errors += [abs(result.peak_allocated / r.peak_allocated - 1),
                       abs(result.peak_allocated_first / r.peak_allocated_first - 1)]
        return sum(errors) / len(errors)

    return min(WEIGHT_FACTORS, key=lambda f: (round(mean_error(f), 6), f))


@cache
def validate() -> tuple[RunErrors, ...]:
    """In-sample and leave-one-model-out predictions of every reference run."""
    runs = reference_runs()
    gpu = gpu_spec(REFERENCE_GPU)
    calibration = calibrations()[REFERENCE_GPU]
    committed = calibration.workspaces
    lomo_factors = {model: fit_workspaces([r for r in runs if r.model != model])
                    for model in dict.fromkeys(r.model for r in runs)}
    out = []
    for run in runs:
        fitted, held_out = _replay(run, committed), _replay_with_factor(run, lomo_factors[run.model])
        out.append(RunErrors(run=run, allocated=fitted.peak_allocated, reserved=fitted.peak_reserved,
                             lomo_allocated=held_out.peak_allocated, lomo_reserved=held_out.peak_reserved,
                             allocated_first=fitted.peak_allocated_first,
                             lomo_allocated_first=held_out.peak_allocated_first,
                             required=fit_verdict(fitted.peak_reserved, str(Mode.of(run.train)), gpu,
                                                  calibration).required_bytes))
    return tuple(out)


def reserved_margins(errors: tuple[RunErrors, ...] | None = None) -> dict[str, float]:
    """m per mode ("inference", "train"): the largest measured / predicted − 1 of peak reserved memory over the
    reference runs of that mode, leave-one-model-out or in-sample (the verdict must cover the committed calibration's
    own predictions too), 0 if none fell short; rounded up to the next 0.001."""
    errors = validate() if errors is None else errors
    margins = {}
    for mode in Mode:
        train = mode is Mode.TRAIN
        shortfall = max([0.0] + [e.run.peak_reserved / predicted - 1 for e in errors if e.run.train == train
                                 for predicted in (e.reserved, e.lomo_reserved)])
        margins[str(mode)] = -(-round(shortfall * 1e6) // 1000) / 1000
    return margins


def device_overhead(runs: list[ReferenceRun], nvml_outside_total_bytes: int) -> int:
    """Device memory outside the caching allocator: the largest NVML used − peak reserved over ``runs``, less what
    NVML counts that torch's total memory leaves out (``nvml_outside_total_bytes``)."""
    return max(r.nvml_used - r.peak_reserved for r in runs) - nvml_outside_total_bytes


@dataclass(frozen=True)
class Sensitivity:
    """The lowest and highest predicted peak allocated and peak reserved bytes of a run over the replays of
    :func:`workspace_sensitivity`."""

    allocated: tuple[int, int]
    reserved: tuple[int, int]


def workspace_sensitivity(run: ReferenceRun, spread: float = WORKSPACE_SPREAD,
                          draws: int = SENSITIVITY_DRAWS) -> Sensitivity:
    """How far ``run``'s predicted peaks move when the committed rule's cuDNN workspaces are not exact: ``draws``
    replays, each with every workspace (one per stage and convolution shape, the same on every call) scaled by its
    own factor drawn uniformly from [1 − spread, 1 + spread] (draw i seeds ``random.Random(i)``, so the result is
    reproducible). Peak allocated moves by about what the workspace at the peak moves; peak reserved depends on
    which blocks every workspace and tensor land in, and can move much more."""
    committed = calibrations()[REFERENCE_GPU].workspaces
    trace = _trace(run.model, run.size, run.batch, run.train)
    calls = {f"{stage}:{event.conv.key()}": conv_workspaces(event.conv, stage, committed).run
             for event in trace.events if event.kind == "conv" for stage in stages(event.conv)}
    allocated, reserved = [], []
    for draw in range(draws):
        rng = random.Random(draw)
        table = {**committed, "measured": {key: {"run": int(nbytes * rng.uniform(1 - spread, 1 + spread))}
                                           for key, nbytes in calls.items()}}
        result = replay(trace, gpu_spec(REFERENCE_GPU), table)
        allocated.append(result.peak_allocated)
        reserved.append(result.peak_reserved)
    return Sensitivity(allocated=(min(allocated), max(allocated)), reserved=(min(reserved), max(reserved)))
