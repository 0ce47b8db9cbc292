"""Predict peak GPU memory: replay a meta-device trace through the caching-allocator model with the GPU's workspaces.

The prediction is the protocol's ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``) over the measured
step: every tensor PyTorch allocates (weights, input, activations saved for backward, temporaries, gradients,
optimizer state), each rounded and placed as the caching allocator does (:mod:`profiler.memory.allocator`), plus
what cuBLAS and cuDNN take from that allocator (:mod:`profiler.catalogue`, :mod:`profiler.memory.workspaces`), each
cuDNN workspace capped at what would be free on the card. Every prediction carries its fit verdict
(:mod:`profiler.memory.verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler.catalogue import GpuSpec
from profiler.device import DeviceKind
from profiler.kinds import Source
from profiler.memory.allocator import CachingAllocator
from profiler.memory.calibration import calibration_for
from profiler.memory.records import MemoryResult
from profiler.memory.trace import CATEGORIES, ConvCall, Trace
from profiler.memory.verdict import fit_verdict
from profiler.memory.workspaces import ConvWorkspaces, cap, conv_workspaces, stages


@dataclass
class Replay:
    """What the allocator model saw: peaks (over the measured step; ``peak_allocated_first`` over the first training
    step), the split by category at the peak, the peak of each phase, the baseline (weights and input resident,
    before the first step) and how many cuDNN workspaces were cut to what was free."""

    peak_allocated: int
    peak_reserved: int
    baseline: int
    breakdown: dict[str, int]
    phases: dict[str, int]
    peak_allocated_first: int | None = None
    capped_workspaces: int = 0


def replay(trace: Trace, gpu: GpuSpec, workspaces: dict[str, Any] | None = None,
           budget_bytes: int | None = None) -> Replay:
    """Replay ``trace`` through the caching-allocator model, adding ``gpu``'s cuBLAS workspaces and the cuDNN
    workspaces of the coefficient table ``workspaces`` (default: the calibration for ``gpu``), each capped at what
    the allocator could hand out within ``budget_bytes`` of reserved memory (default: the card's memory less the
    device overhead)."""
    table = workspaces if workspaces is not None else calibration_for(gpu).workspaces
    budget = gpu.usable_bytes if budget_bytes is None else budget_bytes
    alloc = CachingAllocator()
    category_of: dict[object, str] = {}
    live = dict.fromkeys(CATEGORIES, 0)
    state = {"phase": "setup", "measuring": False, "baseline": 0, "peak": -1, "first": None, "capped": 0}
    breakdown = dict(live)
    phases: dict[str, int] = {}
    seen_convs: set[tuple] = set()
    sizes: dict[tuple[ConvCall, str], ConvWorkspaces] = {}  # the same convolution recurs in every step and block
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

    def workspace(requested: int) -> None:
        granted = cap(requested, alloc.largest_free_block(requested), budget - alloc.reserved)
        state["capped"] += granted < requested
        if granted > 0:
            malloc("workspace", granted, "workspace")
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
            if state["phase"] != "setup":
                state["first"] = alloc.peak_allocated
            alloc.reset_peaks()
            state.update(measuring=True, peak=alloc.allocated)
            breakdown.update(live)
            phases.clear()
        elif event.kind == "gemm" and event.thread not in cublas_threads:
            cublas_threads.add(event.thread)
            malloc(("cublas", event.thread), gpu.cublas_workspace_bytes, "workspace")
        elif event.kind == "conv":
            for stage in stages(event.conv):
                ws = sizes.get((event.conv, stage))
                if ws is None:
                    ws = sizes[event.conv, stage] = conv_workspaces(event.conv, stage, table)
                if ws.probe and (stage, event.conv.signature()) not in seen_convs:
                    workspace(ws.probe)
                seen_convs.add((stage, event.conv.signature()))
                workspace(ws.run)
    return Replay(alloc.peak_allocated, alloc.peak_reserved, state["baseline"], breakdown, phases,
                  peak_allocated_first=state["first"], capped_workspaces=state["capped"])


def predict(trace: Trace, gpu: GpuSpec, model_name: str, checkpoint: bool = False, total_bytes: int | None = None,
            total_source: str | None = None, model_source: str = "") -> MemoryResult:
    """A :class:`MemoryResult` labelled predicted for ``gpu``, with its fit verdict. ``total_bytes`` replaces the
    card's memory (``--gpu-memory``), for the verdict and for the workspace cap."""
    cal = calibration_for(gpu)
    total = gpu.total_bytes if total_bytes is None else total_bytes
    result = replay(trace, gpu, cal.workspaces, budget_bytes=total - gpu.device_overhead_bytes)
    notes = list(trace.notes)
    if (other := cal.other_card_note(gpu)) is not None:
        notes.append(other)
    if result.capped_workspaces:
        notes.append(f"{result.capped_workspaces} cuDNN workspace(s) cut to the memory that would be free on the "
                     "card (PyTorch then runs a convolution algorithm that needs less)")
    return MemoryResult(
        model=model_name, model_source=model_source, input_shape=trace.input_shape, mode=trace.mode,
        source=Source.PREDICTED, device=gpu.name,
        device_kind=DeviceKind.CUDA,
        peak_allocated_bytes=result.peak_allocated, peak_reserved_bytes=result.peak_reserved,
        baseline_bytes=result.baseline, breakdown=result.breakdown, phases=result.phases,
        layers=dict(trace.layer_activation_bytes), optimizer=trace.optimizer, dtype=trace.dtype,
        checkpoint=checkpoint,
        provenance={"method": "meta-tensor trace replayed through a CUDA caching-allocator model",
                    "calibration": cal.summary},
        notes=notes, verdict=fit_verdict(result.peak_reserved, trace.mode, gpu, cal, total_bytes, total_source))
