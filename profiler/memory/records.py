"""Plain records of memory results, measured or predicted. Bytes stay bytes; the formatter picks units."""

from __future__ import annotations

from dataclasses import dataclass, field

from profiler.device import DeviceKind


@dataclass(frozen=True)
class Verdict:
    """Whether a step fits a card: ``required_bytes`` (predicted peak reserved × (1 + ``reserved_margin``), the
    allocator's need with the largest under-prediction validation found) plus ``device_overhead_bytes`` (CUDA context
    and libraries, outside the allocator) against ``device_total_bytes``. ``margin_bytes`` is what is left (negative:
    what is missing); ``fits`` is ``margin_bytes >= 0``. Each figure's source is a sentence.

    Checked against a measurement: ``measured_reserved_bytes`` (None if it ran out of memory), ``held`` (the step ran
    where it was predicted to fit, or ran out of memory where not) and ``within_required`` (measured peak reserved
    ≤ required; None if it ran out of memory)."""

    required_bytes: int
    device_overhead_bytes: int
    device_total_bytes: int
    margin_bytes: int
    fits: bool
    reserved_margin: float
    reserved_margin_source: str
    device_overhead_source: str
    device_total_source: str
    device: str
    measured_reserved_bytes: int | None = None
    held: bool | None = None
    within_required: bool | None = None


@dataclass
class MemoryResult:
    """Peak device memory of one configuration (model, input shape, mode), measured or predicted.

    ``breakdown`` splits the bytes allocated at the peak: weights, gradients, optimizer, input, activations,
    workspace. ``phases`` gives the peak allocated during the forward, backward and optimizer step (training) or the
    forward (inference). ``layers`` maps each leaf layer to the bytes its forward left allocated (output and what
    autograd saved). ``source`` is "measured" or "predicted"; ``device`` names the GPU (predicted: the one predicted
    for) or the CPU, and ``device_kind`` says which of the two it is (a prediction is always for a CUDA device).
    ``verdict`` says whether the step fits the GPU (predicted, and when measured on CUDA, checked against the
    measurement); None for CPU measurements."""

    model: str
    input_shape: tuple[int, ...]
    mode: str
    source: str
    device: str
    device_kind: DeviceKind
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    baseline_bytes: int
    breakdown: dict[str, int]
    phases: dict[str, int]
    layers: dict[str, int]
    optimizer: str | None = None
    dtype: str = "float32"
    checkpoint: bool = False
    nvml_used_bytes: int | None = None
    nvml_note: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    out_of_memory: bool = False
    verdict: Verdict | None = None
