"""The fit verdict: does a step fit a card, with what margin, and — after a measurement — did the verdict hold.

The caching allocator must be able to reserve the predicted peak reserved memory, inflated by m, the largest factor
by which a prediction of reserved memory fell short of a committed measurement of the same mode (inference or
training) in leave-one-model-out validation, or in-sample where that was worse (``calibration.json``,
:mod:`profiler.memory.validation`), next to what the CUDA context and the libraries hold outside it
(:data:`profiler.catalogue.DEVICE_OVERHEAD_BYTES`):

    fits  ⇔  required + overhead ≤ total,   required = ⌈predicted peak reserved × (1 + m)⌉.
"""

from __future__ import annotations

import math
from dataclasses import replace

from profiler.catalogue import GpuSpec
from profiler.memory.calibration import Calibration
from profiler.memory.records import MemoryResult, Verdict


def fit_verdict(predicted_reserved_bytes: int, mode: str, gpu: GpuSpec, calibration: Calibration,
                total_bytes: int | None = None, total_source: str | None = None) -> Verdict:
    """The verdict for a step of ``mode`` ("inference" or "train") whose predicted peak reserved memory is
    ``predicted_reserved_bytes`` on ``gpu``, whose total memory is ``total_bytes`` when given (``--gpu-memory``, or
    the device at hand), else the catalogue's."""
    margin_factor = calibration.reserved_margins[mode]
    required = math.ceil(predicted_reserved_bytes * (1 + margin_factor))
    total = gpu.total_bytes if total_bytes is None else total_bytes
    margin = total - gpu.device_overhead_bytes - required
    return Verdict(required_bytes=required, device_overhead_bytes=gpu.device_overhead_bytes,
                   device_total_bytes=total, margin_bytes=margin, fits=margin >= 0,
                   reserved_margin=margin_factor,
                   reserved_margin_source=calibration.reserved_margin_source,
                   device_overhead_source=gpu.sources["device_overhead_bytes"],
                   device_total_source=total_source or gpu.sources["total_bytes"], device=gpu.name)


def checked(verdict: Verdict, measured: MemoryResult) -> Verdict:
    """``verdict`` with what the measurement of the same step showed: its peak reserved memory, whether the verdict
    held (the step ran where it was predicted to fit, ran out of memory where not) and whether the measured peak
    reserved stayed within the required bytes."""
    ran = not measured.out_of_memory
    return replace(verdict, measured_reserved_bytes=measured.peak_reserved_bytes if ran else None,
                   held=ran == verdict.fits,
                   within_required=measured.peak_reserved_bytes <= verdict.required_bytes if ran else None)
