"""Fitting the time model's 12 coefficients (:mod:`profiler.bandwidth.timemodel`) on committed measurements, and
checking them leave-one-model-out.

Measurements (:func:`committed_measurements`), all under ``reports/data/``:

* ``reference_h200_batch128.json``: 24 step times (6 models × 96/224 × inference/training, batch 128, fp32, SGD
  without momentum) on an H200, plain PyTorch (its ``provenance.method`` says how), and the device-to-device copy
  bandwidth measured there (``copy_bandwidth_Bps``), the streaming roof the bandwidth efficiencies are shares of
  (:func:`committed_copy_roof`; measured, not fitted);
* every ``bandwidth_<device>.json`` / ``gpu_bandwidth_<device>.json`` that ``benchmarks/gpu_bandwidth.py`` writes on a
  GPU: their step times, and the kernel time of each layer (forward and backward), once such a file is committed.

Objective: the mean squared log ratio predicted ÷ measured over the step times, plus — per configuration with
per-layer times — the mean over its layers of the same, weighted as one more point (layers under 1 % of the step
are left out: their times are launch noise), plus a weak pull of each coefficient's logarithm towards its prior
(:data:`PRIOR_WEIGHT`; the priors are stated in :data:`~profiler.bandwidth.timemodel.COEFFICIENTS`), so that a
coefficient the data cannot pin (say, the optimizer's efficiency, a few percent of any step) stays at a plausible
value instead of wandering to a bound. Minimised in log-coefficient space by Levenberg–Marquardt with box bounds and
finite-difference Jacobians, from several starting points of the floor and host costs (the step time is a max of
GPU and host paths, so a single start can end in the wrong branch); numpy only.

Leave-one-model-out: for each model, refit without any of its configurations and predict them; the errors tell how
the model does on a network it has not seen, which is what a user's prediction is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from profiler.bandwidth.kernels import Kernel
from profiler.bandwidth.timemodel import (
    COEFFICIENTS,
    FLOOR,
    HOST_BACKWARD,
    HOST_FORWARD,
    HOST_INFERENCE,
    Calibration,
    CopyRoof,
    KernelArrays,
    StepSeconds,
    host_seconds,
    kernel_seconds,
    pack,
    simulate_steps,
)
from profiler.catalogue import GpuSpec, gpu_for_device
from profiler.kinds import OTHER_ROW, Mode

REFERENCE = "reference_h200_batch128.json"
BANDWIDTH_FILES = ("bandwidth_*.json", "gpu_bandwidth_*.json")
#: Weight of the pull towards the priors, per coefficient, relative to one measured point.
PRIOR_WEIGHT = 0.03
#: Layers below this share of the step are left out of the per-layer objective.
MIN_LAYER_SHARE = 0.01
#: A coefficient is carried by the configurations whose predicted step time moves by at least this share of a change
#: of the coefficient (|d ln step ÷ d ln coefficient|: 0.1 = 1 % for a 10 % change).
CARRIED = 0.1
#: Starting points of (floor µs, host cost per call µs) for the fit.
STARTS = ((1.0, 5.0), (3.0, 15.0), (8.0, 30.0))


@dataclass(frozen=True)
class Measurement:
    """One measured configuration: what ran (zoo model, input size, batch, training or not, dtype, optimizer), on
    which card of the catalogue, its step time, and where it was committed. ``layer_ms``: kernel time per layer
    (row name → ms per step) where the file has it."""

    model: str
    size: int
    batch: int
    train: bool
    gpu: GpuSpec
    step_ms: float
    source: str
    dtype: str = "float32"
    optimizer: str = "sgd"
    layer_ms: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} {self.size} {Mode.of(self.train)}"

    @property
    def key(self) -> str:
        """The measurement's name in the committed fit (:func:`measurement_key`)."""
        return measurement_key(self.model, self.size, self.train, self.batch, self.gpu.key)


def measurement_key(model: str, size: int, train: bool, batch: int, gpu: str) -> str:
    """How ``time_calibration.json`` names a measured configuration (``fitted_on``, the per-configuration errors):
    "alexnet 224 train batch 128 on h200"."""
    return f"{model} {size} {Mode.of(train)} batch {batch} on {gpu}"


def committed_measurements(data_dir: Path) -> list[Measurement]:
    """Every committed measurement the fit may use (module docstring), in file order."""
    reference = json.loads((data_dir / REFERENCE).read_text())
    gpu = _card(reference["provenance"]["device"], REFERENCE)
    found = [Measurement(run["model"], run["size"], run["batch"], run["train"], gpu, run["ms_per_step"], REFERENCE)
             for run in reference["runs"]]
    for path in sorted({p for pattern in BANDWIDTH_FILES for p in data_dir.glob(pattern)}):
        found += bandwidth_measurements(json.loads(path.read_text()), path.name)
    return found


def committed_copy_roof(data_dir: Path) -> CopyRoof:
    """The copy bandwidth measured beside the reference step times, against its card's datasheet bandwidth."""
    reference = json.loads((data_dir / REFERENCE).read_text())
    gpu = _card(reference["provenance"]["device"], REFERENCE)
    return CopyRoof(gpu.key, float(reference["copy_bandwidth_Bps"]), gpu.bandwidth_bytes_per_s,
                    f"reports/data/{REFERENCE}: copy_bandwidth_Bps (device-to-device copy, read + write) on the "
                    f"{gpu.name}, against its datasheet {gpu.bandwidth_bytes_per_s / 1e12:g} TB/s "
                    f"({gpu.sources['bandwidth_bytes_per_s']})")


def _card(device_name: str, source: str) -> GpuSpec:
    spec = gpu_for_device(device_name)
    if spec is None:
        raise ValueError(f"{source}: {device_name} is not in the GPU catalogue (profiler/catalogue.py)")
    return spec


def bandwidth_measurements(doc: dict[str, Any], source: str) -> list[Measurement]:
    """The CUDA runs of one ``benchmarks/gpu_bandwidth.py`` file: step time and per-layer kernel time (the
    ``(other)`` row, kernels outside every layer, is not a layer)."""
    gpu = _card(doc["provenance"]["device"], source)
    found = []
    for run in doc["runs"]:
        if run.get("device_kind") != "cuda":
            continue
        shape = run["input_shape"]
        layers = {layer["name"]: layer["ms_per_step"] for layer in run["layers"]
                  if layer["name"] != OTHER_ROW and layer["ms_per_step"]}
        found.append(Measurement(run["model"], shape[-1], shape[0], run["mode"] == Mode.TRAIN, gpu, run["step_ms"],
                                 source, run.get("dtype", "float32"), run.get("optimizer") or "sgd", layers))
    return found


# ------------------------------------------------------------------------------------------------ the fit

@dataclass
class Problem:
    """The measurements of a fit with their kernels packed once: per measurement its kernels' rows, and per layer
    point (measurement, row) which kernels belong to it."""

    measurements: list[Measurement]
    arrays: KernelArrays
    copy: CopyRoof
    layer_points: list[tuple[int, np.ndarray, float]]

    @classmethod
    def build(cls, measurements: Sequence[Measurement], kernels: Sequence[Sequence[Kernel]], copy: CopyRoof
              ) -> Problem:
        """``kernels[i]``: the kernels of ``measurements[i]`` (:func:`profiler.bandwidth.kernels.step_kernels`);
        ``copy``: the measured streaming roof."""
        arrays = pack([(k, m.gpu, m.dtype) for m, k in zip(measurements, kernels, strict=True)], copy)
        points = []
        for index, (m, step) in enumerate(zip(measurements, kernels, strict=True)):
            start = arrays.starts[index]
            for layer, ms in m.layer_ms.items():
                rows = np.array([start + i for i, k in enumerate(step) if k.layer == layer], dtype=int)
                if len(rows) and ms >= MIN_LAYER_SHARE * m.step_ms:
                    points.append((index, rows, ms * 1e-3))
        return cls(list(measurements), arrays, copy, points)

    def subset(self, keep: Sequence[int], kernels: Sequence[Sequence[Kernel]]) -> Problem:
        return Problem.build([self.measurements[i] for i in keep], [kernels[i] for i in keep], self.copy)

    def simulate(self, coefficients: np.ndarray) -> StepSeconds:
        """Each measurement's simulated step (time, GPU busy time, host time) at ``coefficients``."""
        kernel_s, _ = kernel_seconds(self.arrays, coefficients)
        return simulate_steps(self.arrays.starts, kernel_s, host_seconds(self.arrays, coefficients))

    def predicted_step_s(self, coefficients: np.ndarray) -> np.ndarray:
        return self.simulate(coefficients).step_s

    def residuals(self, log_coefficients: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Log errors of the step times, the per-layer log errors (each configuration's mean as one point) and
        the prior pull, as one vector whose squared sum is the objective."""
        coefficients = np.exp(log_coefficients)
        kernel_s, _ = kernel_seconds(self.arrays, coefficients)
        step_s = simulate_steps(self.arrays.starts, kernel_s, host_seconds(self.arrays, coefficients)).step_s
        measured = np.array([m.step_ms * 1e-3 for m in self.measurements])
        parts = [np.log(step_s / measured)]
        if self.layer_points:
            per_config = np.bincount([i for i, _, _ in self.layer_points], minlength=len(self.measurements))
            parts.append(np.array([np.log(kernel_s[rows].sum() / ms) / np.sqrt(per_config[i])
                                   for i, rows, ms in self.layer_points]))
        parts.append(np.sqrt(PRIOR_WEIGHT) * (log_coefficients - prior))
        return np.concatenate(parts)


def _bounds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.log([c.low for c in COEFFICIENTS]), np.log([c.high for c in COEFFICIENTS]),
            np.log([c.prior for c in COEFFICIENTS]))


def _levenberg_marquardt(residuals: Callable[[np.ndarray], np.ndarray], start: np.ndarray, low: np.ndarray,
                         high: np.ndarray, iterations: int = 200) -> np.ndarray:
    """A bounded Levenberg–Marquardt minimisation of ``|residuals(θ)|²`` from ``start`` (θ clipped to the box)."""
    theta = np.clip(start, low, high)
    r = residuals(theta)
    cost, damping, h = r @ r, 1e-2, 1e-4
    for _ in range(iterations):
        jacobian = np.column_stack([(residuals(np.clip(theta + h * unit, low, high)) - r) / h
                                    for unit in np.eye(len(theta))])
        normal, gradient = jacobian.T @ jacobian, jacobian.T @ r
        while damping < 1e8:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-9), -gradient)
            candidate = np.clip(theta + step, low, high)
            r_new = residuals(candidate)
            if r_new @ r_new < cost:
                break
            damping *= 4
        else:
            return theta
        moved = np.max(np.abs(candidate - theta))
        theta, r, cost, damping = candidate, r_new, r_new @ r_new, max(damping / 3, 1e-7)
        if moved < 1e-6:
            break
    return theta


def fit_coefficients(problem: Problem) -> np.ndarray:
    """The coefficient values (units of :data:`COEFFICIENTS`) that minimise the objective (module docstring)."""
    low, high, prior = _bounds()
    best: tuple[float, np.ndarray] | None = None
    for floor_us, host_us in STARTS:
        start = prior.copy()
        start[FLOOR] = np.log(floor_us)
        start[[HOST_INFERENCE, HOST_FORWARD, HOST_BACKWARD]] = np.log(host_us)
        theta = _levenberg_marquardt(lambda t: problem.residuals(t, prior), start, low, high)
        r = problem.residuals(theta, prior)
        if best is None or r @ r < best[0]:
            best = (float(r @ r), theta)
    return np.exp(best[1])


@dataclass(frozen=True)
class FitReport:
    """A fit and its check: the streaming roof it used, the coefficients fitted on everything, each measurement's
    in-sample error and its leave-one-model-out error (predicted ÷ measured − 1), and the coefficients of each
    left-out fit; ``elasticity[i, j]``: d ln(step time i) ÷ d ln(coefficient j) at the fit on everything."""

    measurements: list[Measurement]
    copy: CopyRoof
    coefficients: np.ndarray
    in_sample: np.ndarray
    leave_one_model_out: np.ndarray
    lomo_coefficients: dict[str, np.ndarray]
    elasticity: np.ndarray

    def carried_by(self, index: int) -> dict[str, float]:
        """The configurations that carry coefficient ``index`` (:data:`CARRIED`), with |d ln step ÷ d ln
        coefficient|, largest first."""
        column = np.abs(self.elasticity[:, index])
        return {self.measurements[i].label: round(float(column[i]), 2) for i in np.argsort(-column, kind="stable")
                if column[i] >= CARRIED}

    def summary(self) -> dict[str, float]:
        """Mean and worst absolute error, in-sample and leave-one-model-out, in percent."""
        return {"in_sample_mean_percent": float(100 * np.mean(np.abs(self.in_sample))),
                "in_sample_max_percent": float(100 * np.max(np.abs(self.in_sample))),
                "lomo_mean_percent": float(100 * np.mean(np.abs(self.leave_one_model_out))),
                "lomo_max_percent": float(100 * np.max(np.abs(self.leave_one_model_out)))}


def fit_and_check(measurements: Sequence[Measurement], kernels: Sequence[Sequence[Kernel]], copy: CopyRoof
                  ) -> FitReport:
    """Fit on all ``measurements`` (with their ``kernels``, streaming at the measured ``copy`` roof), then once per
    model without it (leave-one-model-out)."""
    problem = Problem.build(measurements, kernels, copy)
    coefficients = fit_coefficients(problem)
    measured = np.array([m.step_ms * 1e-3 for m in measurements])
    in_sample = problem.predicted_step_s(coefficients) / measured - 1
    lomo = np.zeros(len(measurements))
    per_model = {}
    for model in dict.fromkeys(m.model for m in measurements):
        held = [i for i, m in enumerate(measurements) if m.model == model]
        rest = [i for i, m in enumerate(measurements) if m.model != model]
        per_model[model] = fit_coefficients(problem.subset(rest, kernels))
        lomo[held] = problem.subset(held, kernels).predicted_step_s(per_model[model]) / measured[held] - 1
    return FitReport(list(measurements), copy, coefficients, in_sample, lomo, per_model,
                     _elasticity(problem, coefficients))


def _elasticity(problem: Problem, coefficients: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """d ln(step time) ÷ d ln(coefficient) of every measurement and coefficient (central differences)."""
    columns = []
    for unit in np.eye(len(coefficients)):
        up = problem.predicted_step_s(coefficients * np.exp(step * unit))
        down = problem.predicted_step_s(coefficients * np.exp(-step * unit))
        columns.append(np.log(up / down) / (2 * step))
    return np.column_stack(columns)


def calibration_of(report: FitReport) -> Calibration:
    """The committed form of a fit: values by name, what they were fitted on, the method and the errors."""
    sources = sorted({m.source for m in report.measurements})
    configs = [m.key for m in report.measurements]
    layered = sum(1 for m in report.measurements if m.layer_ms)
    method = (f"bounded Levenberg–Marquardt on log coefficients minimising the mean squared log error of "
              f"{len(configs)} step times ({layered} with per-layer kernel times) plus a pull of weight "
              f"{PRIOR_WEIGHT} towards each coefficient's prior (profiler/bandwidth/fit.py); checked "
              "leave-one-model-out")
    errors = {**{k: round(v, 1) for k, v in report.summary().items()},
              "per_configuration_percent": {m.key:
                                            {"in_sample": round(100 * a, 1), "lomo": round(100 * b, 1)}
                                            for m, a, b in zip(report.measurements, report.in_sample,
                                                               report.leave_one_model_out, strict=True)}}
    return Calibration({c.name: float(v) for c, v in zip(COEFFICIENTS, report.coefficients, strict=True)},
                       [f"reports/data/{s}" for s in sources] + configs, method, date.today().isoformat(), report.copy,
                       errors, {c.name: report.carried_by(i) for i, c in enumerate(COEFFICIENTS)})

