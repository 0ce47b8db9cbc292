"""Plain records of memory results, measured or predicted. Bytes stay bytes; the formatter picks units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from profiler.device import DeviceKind
from profiler.kinds import SCHEMA_VERSION, Source
from profiler.util.units import human_bytes


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

    def notes(self) -> list[str]:
        """Where the verdict's figures come from, one line each."""
        return [f"fit verdict: m = {100 * self.reserved_margin:.1f} %: {self.reserved_margin_source}",
                f"fit verdict: device overhead {human_bytes(self.device_overhead_bytes)}: "
                f"{self.device_overhead_source}",
                f"fit verdict: device total {human_bytes(self.device_total_bytes)}: {self.device_total_source}"]


#: The verdict's fields in JSON and CSV, in order.
VERDICT_FIELDS = ("required_bytes", "device_overhead_bytes", "device_total_bytes", "fits", "margin_bytes",
                  "reserved_margin", "verdict_device", "verdict_held", "measured_within_required")


def verdict_fields(verdict: Verdict | None) -> dict[str, Any]:
    """The verdict's JSON fields (all None for CPU measurements, which have no verdict)."""
    if verdict is None:
        return dict.fromkeys(VERDICT_FIELDS)
    return {"required_bytes": verdict.required_bytes, "device_overhead_bytes": verdict.device_overhead_bytes,
            "device_total_bytes": verdict.device_total_bytes, "fits": verdict.fits,
            "margin_bytes": verdict.margin_bytes, "reserved_margin": verdict.reserved_margin,
            "verdict_device": verdict.device, "verdict_held": verdict.held,
            "measured_within_required": verdict.within_required}


@dataclass(repr=False)
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
    model_source: str = ""
    out_of_memory: bool = False
    verdict: Verdict | None = None

    @property
    def all_notes(self) -> list[str]:
        """The notes, then where the verdict's figures come from."""
        return [*self.notes, *(self.verdict.notes() if self.verdict is not None else [])]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``python -m profiler memory`` prints for this result (``schema_version``: CHANGELOG.md)."""
        return {
            "schema_version": SCHEMA_VERSION, "model": self.model, "model_source": self.model_source,
            "input_shape": list(self.input_shape), "mode": self.mode, "source": self.source, "device": self.device,
            "optimizer": self.optimizer, "dtype": self.dtype, "checkpoint": self.checkpoint,
            "out_of_memory": self.out_of_memory, "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes, "baseline_bytes": self.baseline_bytes,
            "breakdown": dict(self.breakdown), "phases": dict(self.phases),
            "layers": [{"name": name, "activation_bytes": b} for name, b in self.layers.items()],
            "nvml_used_bytes": self.nvml_used_bytes, "nvml_note": self.nvml_note, **verdict_fields(self.verdict),
            "provenance": dict(self.provenance), "notes": self.all_notes,
        }

    def __repr__(self) -> str:
        where = f"measured on {self.device}" if self.source == Source.MEASURED else f"predicted for {self.device}"
        shape = "×".join(map(str, self.input_shape))
        if self.out_of_memory:
            return f"MemoryResult({self.model}, input {shape}, {self.mode}, {where}: out of memory)"
        fits = "" if self.verdict is None else f", {'fits' if self.verdict.fits else 'does NOT fit'}"
        return (f"MemoryResult({self.model}, input {shape} {self.dtype}, {self.mode}, {where}: peak allocated "
                f"{human_bytes(self.peak_allocated_bytes)}, reserved {human_bytes(self.peak_reserved_bytes)}{fits})")
