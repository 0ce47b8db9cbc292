"""Predict peak GPU memory: replay a meta-device trace through the caching-allocator model with the GPU's workspaces.

The prediction is the protocol's ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``) over the measured
step: every tensor PyTorch allocates (weights, input, activations saved for backward, temporaries, gradients,
optimizer state), each rounded and placed as the caching allocator does (:mod:`profiler.memory.allocator`), plus
what cuBLAS and cuDNN take from that allocator (:mod:`profiler.gpus`, :mod:`profiler.memory.calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass

from profiler.device import DeviceKind
from profiler.gpus import GpuSpec
from profiler.memory.allocator import CachingAllocator
from profiler.memory.calibration import calibration
from profiler.memory.records import MemoryResult
from profiler.memory.trace import CATEGORIES, ConvCall, Trace


@dataclass(frozen=True)
class ConvWorkspaces:
    """cuDNN workspace bytes for one convolution pass: ``probe`` is allocated once, the first time cuDNN sees the
    shape (PyTorch allocates the largest workspace among the heuristic's candidate plans to check it fits, then
    frees it); ``run`` is the chosen plan's workspace, allocated on every call."""

    probe: int
    run: int


def conv_workspaces(conv: ConvCall, stage: str, coefficients: dict | None = None) -> ConvWorkspaces:
    """Workspaces of ``conv`` in ``stage`` ("forward", "backward_data", "backward_filter"): a measured value where the
    calibration has one for this exact convolution, else a·input + b·output + c·weight bytes with coefficients per
    stage, kind (probe/run) and kernel class ("pointwise" 1×1 or "spatial"), from calibration.json."""
    cal = coefficients or calibration()["cudnn"]
    measured = cal.get("measured", {}).get(f"{stage}:{conv.key()}")
    if measured is not None:
        return ConvWorkspaces(probe=measured["probe"], run=measured["run"])
    kernel_class = "pointwise" if conv.weight_shape[2:] == (1, 1) else "spatial"
    table = cal[stage]

    def linear(kind: str) -> int:
        c = table[kind][kernel_class]
        return int(c["input"] * conv.input_bytes + c["output"] * conv.output_bytes + c["weight"] * conv.weight_bytes)

    return ConvWorkspaces(probe=linear("probe"), run=linear("run"))


@dataclass
class Replay:
    """What the allocator model saw: peaks, the split by category at the peak, the peak of each phase, and the
    baseline (weights and input resident, before the first step)."""

    peak_allocated: int
    peak_reserved: int
    baseline: int
    breakdown: dict[str, int]
    phases: dict[str, int]


def replay(trace: Trace, gpu: GpuSpec, coefficients: dict | None = None) -> Replay:
    """Replay ``trace`` through the caching-allocator model, adding ``gpu``'s cuBLAS and cuDNN workspaces."""
    alloc = CachingAllocator()
    category_of: dict[object, str] = {}
    live = dict.fromkeys(CATEGORIES, 0)
    state = {"phase": "setup", "measuring": False, "baseline": 0, "peak": -1}
    breakdown = dict(live)
    phases: dict[str, int] = {}
    seen_convs: set[tuple] = set()
    cublas_threads: set[str] = set()

    def malloc(key: object, nbytes: int, category: str) -> None:
        size = alloc.malloc(key, nbytes)
        category_of[key] = category
        live[category] += size
        if state["measuring"]:
            phase = state["phase"]
            phases[phase] = max(phases.get(phase, 0), alloc.allocated)
            if alloc.allocated > state["peak"]:
                state["peak"] = alloc.allocated
                breakdown.update(live)

    def free(key: object) -> None:
        size = alloc.free(key)
        if size:
            live[category_of.pop(key)] -= size

    def transient(nbytes: int) -> None:
        if nbytes > 0:
            malloc("workspace", nbytes, "workspace")
            free("workspace")

    for event in trace.events:
        if event.kind == "alloc":
            malloc(event.key, event.nbytes, event.category)
        elif event.kind == "free":
            free(event.key)
        elif event.kind == "phase":
            if state["phase"] == "setup":  # weights and input are resident, nothing has run yet
                state["baseline"] = alloc.allocated
            state["phase"] = event.phase
            if state["measuring"]:  # a phase that allocates nothing still holds what is allocated
                phases[event.phase] = max(phases.get(event.phase, 0), alloc.allocated)
        elif event.kind == "measure":
            alloc.reset_peaks()
            state.update(measuring=True, peak=alloc.allocated)
            breakdown.update(live)
            phases.clear()
        elif event.kind == "gemm" and event.thread not in cublas_threads:
            cublas_threads.add(event.thread)
            malloc(("cublas", event.thread), gpu.cublas_workspace_bytes, "workspace")
        elif event.kind == "conv":
            stages = ["forward"] if event.conv.pass_ == "forward" else [
                s for s, wanted in (("backward_data", event.conv.output_mask[0]),
                                    ("backward_filter", event.conv.output_mask[1])) if wanted]
            for stage in stages:
                ws = conv_workspaces(event.conv, stage, coefficients)
                if (stage, event.conv.signature()) not in seen_convs:
                    seen_convs.add((stage, event.conv.signature()))
                    transient(ws.probe)
                transient(ws.run)
    return Replay(alloc.peak_allocated, alloc.peak_reserved, state["baseline"], breakdown, phases)


def predict(trace: Trace, gpu: GpuSpec, model_name: str, checkpoint: bool = False) -> MemoryResult:
    """A :class:`MemoryResult` labelled predicted for ``gpu``."""
    result = replay(trace, gpu)
    cal = calibration()["provenance"]
    return MemoryResult(
        model=model_name, input_shape=trace.input_shape, mode=trace.mode, source="predicted", device=gpu.name,
        device_kind=DeviceKind.CUDA,
        peak_allocated_bytes=result.peak_allocated, peak_reserved_bytes=result.peak_reserved,
        baseline_bytes=result.baseline, breakdown=result.breakdown, phases=result.phases,
        layers=dict(trace.layer_activation_bytes), optimizer=trace.optimizer, dtype=trace.dtype,
        checkpoint=checkpoint,
        provenance={"method": "meta-tensor trace replayed through a CUDA caching-allocator model",
                    "calibration": cal["summary"]},
        notes=list(trace.notes))
