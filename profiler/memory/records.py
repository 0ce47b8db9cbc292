"""Plain records of memory results, measured or predicted. Bytes stay bytes; the formatter picks units."""

from __future__ import annotations

from dataclasses import dataclass, field

from profiler.device import DeviceKind


@dataclass
class MemoryResult:
    """Peak device memory of one configuration (model, input shape, mode), measured or predicted.

    ``breakdown`` splits the bytes allocated at the peak: weights, gradients, optimizer, input, activations,
    workspace. ``phases`` gives the peak allocated during the forward, backward and optimizer step (training) or the
    forward (inference). ``layers`` maps each leaf layer to the bytes its forward left allocated (output and what
    autograd saved). ``source`` is "measured" or "predicted"; ``device`` names the GPU (predicted: the one predicted
    for) or the CPU, and ``device_kind`` says which of the two it is (a prediction is always for a CUDA device)."""

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
