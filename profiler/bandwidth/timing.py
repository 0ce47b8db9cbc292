"""Which layer each kernel (GPU) or each microsecond of CPU time belongs to: named profiler ranges per layer, then
attribution of the torch profiler's events to those ranges.

Ranges. :class:`LayerRanges` opens a ``torch.profiler.record_function`` range named
``profiler.bandwidth/forward:<layer>`` in each module's forward pre-hook and closes it in its forward hook, so every
op a module's forward runs — its children's included — happens inside its range. Backward has no module hooks that
bracket the work, so it goes through the autograd graph instead: :class:`~profiler.scopes.ModuleScopes` claims for
each module the autograd nodes its forward created (its own work, not its children's), and before ``backward()``
:meth:`LayerRanges.hook_backward` registers on each claimed node a pre-hook that opens
``profiler.bandwidth/backward:<layer>`` and a post-hook that closes it. The engine runs a node's pre-hooks, the node,
then its post-hooks on the thread that executes the node (the caller's on the CPU, a device thread on CUDA), so the
backward ops — and the kernels they launch — happen inside the range of the module whose forward created that node.
Gradient accumulation into a parameter (its ``AccumulateGrad`` node) belongs to the module that owns the parameter.
We chose this over matching the sequence numbers that backward ``evaluate_function`` events carry: ownership is
decided once, by the same code the static counter uses, so time and counts are charged to the same rows.

The engine does some of a node's work after its post-hooks: when a tensor feeds several ops, their gradients are
summed into the next node's input buffer right after each producing node ran. That happens inside the engine's
``autograd::engine::evaluate_function: <node>`` event, so :func:`widened` stretches each backward range to the
evaluate_function event around it; the sum then belongs to the node whose gradient arrived last, as in the static
counter (:mod:`profiler.scopes`).

Attribution. The profiler's raw events (:func:`trace_events`) are plain intervals with a thread. On a GPU, each
kernel (or memcpy/memset) names the CPU op that launched it (``linked_correlation_id``); the kernel belongs to the
innermost layer range enclosing that op on the op's thread (:func:`kernel_times`). Only torch ops and ranges are
launchers: CUDA runtime calls outside every op (``cudaEventRecord`` of the step timers, ``cudaDeviceSynchronize``)
also have no linked id, but their ``correlation_id`` is CUPTI's, a numbering that collides with the ops'. On the
CPU, a layer's time is the wall time inside its ranges minus the time inside nested layer ranges (:func:`cpu_times`);
what a step spends outside every layer range (autograd engine, hooks, Python between layers) is reported apart, so
the rows add up to the step.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function

from profiler.kinds import OPTIMIZER_ROW, Phase
from profiler.scopes import ModuleScopes, in_backward
from profiler.step import StepObserver

PREFIX = "profiler.bandwidth/"
STEP_RANGE = f"{PREFIX}step"
FORWARD, BACKWARD, OPTIMIZER = "forward", "backward", "optimizer"
#: The autograd engine's event around everything it does for one node (hooks, the node, input-buffer sums).
EVALUATE_FUNCTION = "autograd::engine::evaluate_function: "
#: Device activities that occupy the GPU (kineto's names); annotations mirrored on the GPU timeline are not work.
DEVICE_WORK = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
#: CPU activities that are torch ops or ranges (kineto's names): the only events a kernel's linked id may name.
TORCH_OPS = frozenset({"cpu_op", "user_annotation"})
#: CUDA runtime (cudaEventRecord) and driver (cuLaunchKernel) calls, by name, where torch reports no activity type.
CUDA_API_CALL = re.compile(r"cu(da)?[A-Z]")


def range_name(phase: str, layer: str) -> str:
    """The record_function name of ``layer``'s range in ``phase`` (forward, backward, optimizer)."""
    return f"{PREFIX}{phase}:{layer}"


def parse_range(name: str) -> tuple[str, str] | None:
    """(phase, layer) of a layer range's name; None for any other event (the step range included)."""
    if not name.startswith(PREFIX):
        return None
    phase, sep, layer = name[len(PREFIX):].partition(":")
    return (phase, layer) if sep else None


class LayerRanges(StepObserver):
    """Profiler ranges per module in forward and per claimed autograd node in backward (module docstring).

    ``modules`` maps qualified names to modules (the loss module included, under its row name). Use
    :meth:`attached` around the profiled steps, call :meth:`hook_backward` between forward and ``backward()``, and
    :meth:`end_step` after each step."""

    def __init__(self, modules: dict[str, nn.Module], track_backward: bool) -> None:
        self.modules = modules
        self.scopes = ModuleScopes(modules, track_backward=track_backward)
        self._open: dict[str, list[record_function]] = defaultdict(list)
        self._handles: list[Any] = []
        self._hooked: set[torch.autograd.graph.Node] = set()

    def _enter(self, key: str, name: str) -> None:
        scope = record_function(name)
        scope.__enter__()
        self._open[key].append(scope)

    def _exit(self, key: str) -> None:
        if self._open[key]:
            self._open[key].pop().__exit__(None, None, None)

    def _pre(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if not in_backward():  # a forward re-run inside backward (checkpointing) is the node's work
                self._enter(name, range_name(FORWARD, name))
        return hook

    def _post(self, name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if not in_backward():
                self._exit(name)
        return hook

    @contextmanager
    def attached(self) -> Iterator[LayerRanges]:
        """Install the forward hooks (and ModuleScopes' node claiming) for the duration of the block."""
        with self.scopes.attached():
            try:
                for name, module in self.modules.items():
                    self._handles.append(module.register_forward_pre_hook(self._pre(name)))
                    self._handles.append(module.register_forward_hook(self._post(name)))
                yield self
            finally:
                for handle in self._handles:
                    handle.remove()
                self._handles.clear()
                self.end_step()

    def hook_backward(self) -> None:
        """Give every autograd node claimed since the last call a range of its owner (call before ``backward()``)."""
        for node, owner in self._claimed().items():
            if node in self._hooked:
                continue
            self._hooked.add(node)
            key = f"node:{id(node)}"
            name = range_name(BACKWARD, owner)

            def pre(grad_outputs: tuple, key: str = key, name: str = name) -> None:
                self._enter(key, name)

            def post(grad_inputs: tuple, grad_outputs: tuple, key: str = key) -> None:
                self._exit(key)

            node.register_prehook(pre)
            node.register_hook(post)

    def _claimed(self) -> dict[torch.autograd.graph.Node, str]:
        # ModuleScopes keeps node → owning module in a private map; it is the one ownership rule of the project
        return self.scopes._node_owner

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """The step's phases: the optimizer update gets a range of its own (row ``(optimizer)``)."""
        if phase is Phase.OPTIMIZER:
            with record_function(range_name(OPTIMIZER, OPTIMIZER_ROW)):
                yield
        else:
            yield

    def before_backward(self) -> None:
        self.hook_backward()

    def end_step(self) -> None:
        """Forget the step's autograd nodes (they would otherwise stay alive) and close ranges a failure left open."""
        self._claimed().clear()
        self._hooked.clear()
        for key in list(self._open):
            while self._open[key]:
                self._exit(key)
        self._open.clear()


@dataclass(frozen=True)
class TraceEvent:
    """One profiler event as an interval. ``on_device``: GPU work (kernel, memcpy, memset); ``linked_id``: for GPU
    work, the ``correlation_id`` of the CPU op that launched it; 0 for CPU ops and ranges, whose ``correlation_id``
    is their own. CUDA runtime calls (``cudaLaunchKernel``) are CPU events whose own ``correlation_id`` is CUPTI's,
    a different numbering, so they must not be taken for ops (:attr:`is_torch_op`). ``activity``: kineto's activity
    type ("cpu_op", "cuda_runtime", "kernel", ...) where this torch reports it as a string, else ""."""

    name: str
    thread: int
    start_ns: int
    end_ns: int
    on_device: bool = False
    correlation_id: int = 0
    linked_id: int = 0
    activity: str = ""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def is_torch_op(self) -> bool:
        """A torch op or range (a CPU event that may launch kernels under its own ``correlation_id``): by activity
        type where known, else any CPU event without a linked id that is not named like a CUDA API call."""
        if self.on_device or self.linked_id:
            return False
        if self.activity:
            return self.activity in TORCH_OPS
        return not CUDA_API_CALL.match(self.name)


def trace_events(prof: torch.profiler.profile) -> list[TraceEvent]:
    """The raw events of a finished ``torch.profiler.profile`` as :class:`TraceEvent` records.

    Reads the kineto events directly (cheaper than ``prof.events()``, which builds a tree and matches memory
    records). GPU events that are not work — annotations the profiler mirrors onto the GPU timeline — are dropped:
    by their activity type where this torch reports it as a string, else by matching a CPU annotation's name."""
    raw = prof.profiler.kineto_results.events()
    cpu_type = torch.autograd.DeviceType.CPU
    annotations = {e.name() for e in raw if e.device_type() == cpu_type and _is_annotation(e)}
    events = []
    for e in raw:
        on_device = e.device_type() != cpu_type
        if on_device and not _is_device_work(e, annotations):
            continue
        start = e.start_ns()
        events.append(TraceEvent(e.name(), e.start_thread_id(), start, start + e.duration_ns(), on_device,
                                 e.correlation_id(), e.linked_correlation_id(), activity_type(e)))
    return events


def activity_type(event: Any) -> str:
    """kineto's activity type of a raw event ("kernel", "cpu_op", ...), or "" where this torch has none: the method
    arrived after torch 2.11, and its first form returned an int, which names nothing we can compare."""
    method = getattr(event, "activity_type", None)
    kind = method() if method is not None else None
    return kind if isinstance(kind, str) else ""


def _is_annotation(event: Any) -> bool:
    flag = getattr(event, "is_user_annotation", None)
    if flag is not None:
        return bool(flag())
    return event.name().startswith((PREFIX, "ProfilerStep#", "Optimizer."))


def _is_device_work(event: Any, annotations: set[str]) -> bool:
    kind = activity_type(event)
    if kind:
        return kind in DEVICE_WORK
    return event.name() not in annotations


@dataclass
class Attribution:
    """Time per (layer, phase) summed over the profiled steps, in ns. ``unattributed_ns``: GPU work no layer range
    encloses (GPU), or step time outside every layer range (CPU). ``busy_ns``: the union of GPU work intervals (GPU
    only: kernels overlapping on several streams count once). ``step_ns``: the step ranges' total (CPU only)."""

    ns: dict[tuple[str, str], int] = field(default_factory=dict)
    unattributed_ns: int = 0
    busy_ns: int = 0
    step_ns: int = 0
    device_events: int = 0


def enclosing(ranges: list[TraceEvent], queries: Iterable[TraceEvent] = ()) -> dict[TraceEvent, TraceEvent | None]:
    """For each query, the innermost range enclosing it on the same thread; for each range, the range it is nested
    in directly (None at the top). Ranges of one thread nest, as record_function ranges do."""
    by_thread: dict[int, list[tuple[tuple[int, int, int], TraceEvent, bool]]] = defaultdict(list)
    for r in ranges:
        by_thread[r.thread].append(((r.start_ns, 0, -r.end_ns), r, True))
    for q in queries:
        by_thread[q.thread].append(((q.start_ns, 1, -q.end_ns), q, False))
    enclosing: dict[TraceEvent, TraceEvent | None] = {}
    for items in by_thread.values():
        items.sort(key=lambda item: item[0])
        stack: list[TraceEvent] = []
        for _, event, is_range in items:
            while stack and stack[-1].end_ns < event.end_ns:
                stack.pop()
            enclosing[event] = stack[-1] if stack else None
            if is_range:
                stack.append(event)
    return enclosing


def widened(events: list[TraceEvent]) -> list[TraceEvent]:
    """The layer ranges, each backward range stretched to the engine's evaluate_function event around it (module
    docstring); forward and optimizer ranges as they are."""
    ranges = [e for e in events if not e.on_device and parse_range(e.name)]
    engine = [e for e in events if not e.on_device and e.name.startswith(EVALUATE_FUNCTION)]
    around = enclosing(engine, [r for r in ranges if parse_range(r.name)[0] == BACKWARD])
    return [replace(r, start_ns=e.start_ns, end_ns=e.end_ns) if (e := around.get(r)) is not None else r
            for r in ranges]


def kernel_times(events: list[TraceEvent]) -> Attribution:
    """GPU work time per layer range: each kernel goes to the innermost range (backward ranges :func:`widened`)
    enclosing the op that launched it.

    A kernel launched by a range itself (a correlation id that names the range) goes to that range; a kernel with no
    linked op (linked id 0), whose launching op is unknown, or outside every layer range, is unattributed. Launchers
    are torch ops and ranges only (:attr:`TraceEvent.is_torch_op`, module docstring)."""
    cpu = {e.correlation_id: e for e in events if e.is_torch_op}
    ranges = widened(events)
    work = [e for e in events if e.on_device]
    launchers = {cpu[k.linked_id] for k in work if k.linked_id and k.linked_id in cpu}
    owner = enclosing(ranges, (op for op in launchers if not parse_range(op.name)))
    result = Attribution(device_events=len(work), busy_ns=_union_ns(work))
    for kernel in work:
        op = cpu.get(kernel.linked_id) if kernel.linked_id else None
        where = None if op is None else (op if parse_range(op.name) else owner.get(op))
        if where is None:
            result.unattributed_ns += kernel.duration_ns
            continue
        phase, layer = parse_range(where.name)
        result.ns[(layer, phase)] = result.ns.get((layer, phase), 0) + kernel.duration_ns
    return result


def cpu_times(events: list[TraceEvent]) -> Attribution:
    """CPU time per layer range (backward ranges :func:`widened`): its wall time minus that of the layer ranges
    nested in it (same thread), so nothing is counted twice. The step ranges' own remainder is the unattributed
    time."""
    ranges = [e for e in events if not e.on_device and e.name == STEP_RANGE] + widened(events)
    nested: dict[TraceEvent, int] = defaultdict(int)
    for inner, outer in enclosing(ranges).items():
        if outer is not None:
            nested[outer] += inner.duration_ns
    result = Attribution()
    for r in ranges:
        own = r.duration_ns - nested[r]
        if r.name == STEP_RANGE:
            result.step_ns += r.duration_ns
            result.unattributed_ns += own
        else:
            phase, layer = parse_range(r.name)
            result.ns[(layer, phase)] = result.ns.get((layer, phase), 0) + own
    return result


def _union_ns(intervals: list[TraceEvent]) -> int:
    """Total length of the union of the intervals."""
    total, end = 0, None
    for e in sorted(intervals, key=lambda e: e.start_ns):
        if end is None or e.start_ns > end:
            total += e.duration_ns
            end = e.end_ns
        elif e.end_ns > end:
            total += e.end_ns - end
            end = e.end_ns
    return total
