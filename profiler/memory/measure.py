"""Measure peak memory of one configuration: on CUDA with the allocator's statistics (and NVML), on the CPU with the
torch profiler's memory timeline.

The CUDA protocol is the one of ``reports/data/reference_h200_batch128.json``, so numbers compare: model and input
resident, peak statistics reset; inference = ``eval()`` + ``torch.inference_mode()``, one forward; training = SGD
(lr 0.01; momentum or Adam if asked), cross-entropy on random labels, ``zero_grad(set_to_none=True)``, forward,
backward, step — twice, the peak taken over the second step (the first creates cuDNN plans, cuBLAS workspaces and
optimizer state). Each configuration should run in a fresh process (``python -m profiler.memory.measure``), since
library workspaces left by an earlier model change the next one's peak; :func:`measure_in_subprocess` does that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from profiler.device import DeviceKind, nvml_used_bytes, provenance, quiet_torch_profiler
from profiler.errors import EXIT_OUT_OF_MEMORY, ProfilerError
from profiler.kinds import Phase, Source
from profiler.memory.allocator import round_size
from profiler.memory.layers import LayerBytes
from profiler.memory.records import MemoryResult
from profiler.models import ModelSpec, build, resolve
from profiler.models.loading import output_classes, to_device
from profiler.step import Step, StepConfig, StepObserver, make_batch


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Caching-allocator bytes of distinct storages (each rounded to 512 B as the allocator does)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = round_size(storage.nbytes()) if storage.nbytes() else 0
    return sum(seen.values())


class _CudaPhases(StepObserver):
    """Per phase of the measured step: CUDA's peak statistics reset before it, its peak allocated read after it
    (synchronized both times), and the largest peak reserved; gradient bytes at the end of backward."""

    def __init__(self, device: torch.device, model: nn.Module) -> None:
        self.device, self.model = device, model
        self.active = False
        self.peaks: dict[str, int] = {}
        self.reserved = 0
        self.gradient_bytes = 0

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        if not self.active:
            yield
            return
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        yield
        torch.cuda.synchronize(self.device)
        self.peaks[phase] = torch.cuda.max_memory_allocated(self.device)
        self.reserved = max(self.reserved, torch.cuda.max_memory_reserved(self.device))
        if phase is Phase.BACKWARD:
            self.gradient_bytes = _storage_bytes([p.grad for p in self.model.parameters() if p.grad is not None])


def _real_step(name: str | ModelSpec, size: int, batch: int, channels: int | None, classes: int | None,
               config: StepConfig, device: torch.device) -> Step:
    """The step of one configuration with real, freshly initialized weights and a random batch on ``device``."""
    spec = resolve(name)
    meta_model = build(spec, size, channels, classes)
    num_classes = output_classes(meta_model, spec.input_shape(1, size, channels))
    model = to_device(meta_model, device).to(config.torch_dtype)
    x, y = make_batch(spec.input_shape(batch, size, channels), num_classes, config.torch_dtype, device)
    return Step(model, x, y, config)


def _optimizer_state_bytes(step: Step) -> int:
    if step.optimizer is None:
        return 0
    return _storage_bytes([t for state in step.optimizer.state.values() for t in state.values()
                           if isinstance(t, torch.Tensor) and t.dim() > 0])


def measure_cuda(name: str | ModelSpec, size: int, batch: int, channels: int | None = None, classes: int | None = None,
                 train: bool = False, optimizer: str = "sgd", dtype: str = "float32", checkpoint: bool = False,
                 trace_file: str | None = None) -> MemoryResult:
    """Measure one configuration on the current CUDA device (see the module docstring for the protocol)."""
    device = torch.device("cuda", torch.cuda.current_device())
    torch.backends.cudnn.benchmark = False
    config = StepConfig.make(train, optimizer, dtype, checkpoint)
    spec = resolve(name)
    shape = spec.input_shape(batch, size, channels)
    try:
        step = _real_step(spec, size, batch, channels, classes, config, device)
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        weights = _storage_bytes([*step.model.parameters(), *step.model.buffers()])
        inputs = _storage_bytes([step.x, step.y])
        phases = _CudaPhases(device, step.model)
        layers = LayerBytes(step.model, lambda: torch.cuda.memory_allocated(device), lambda: phases.active)
        with layers, step.checkpointing():
            for run in range(2 if train else 1):
                if run == (1 if train else 0):  # the protocol measures the second training step
                    phases.active = True
                    if trace_file:
                        start_memory_history()
                step.run(phases)
            if trace_file:
                torch.cuda.memory._dump_snapshot(trace_file)
                torch.cuda.memory._record_memory_history(enabled=None)
        peak = max(phases.peaks.values())
        used, note = nvml_used_bytes(device.index)
    except torch.cuda.OutOfMemoryError as err:
        free, total = torch.cuda.mem_get_info(device)
        raise ProfilerError(f"{spec.name} at {list(shape)} ({config.mode.words}) ran out of GPU memory: "
                            f"{str(err).splitlines()[0]} The device has {total / 2**30:.1f} GiB; try a smaller --batch "
                            "or --size, or --checkpoint", exit_code=EXIT_OUT_OF_MEMORY) from None
    optimizer_state = _optimizer_state_bytes(step)
    known = weights + inputs + phases.gradient_bytes + optimizer_state
    return MemoryResult(
        model=spec.name, model_source=spec.source, input_shape=tuple(shape), mode=config.mode,
        source=Source.MEASURED,
        device=torch.cuda.get_device_name(device), device_kind=DeviceKind.CUDA, peak_allocated_bytes=peak,
        peak_reserved_bytes=phases.reserved,
        baseline_bytes=baseline,
        breakdown={"weights": weights, "gradients": phases.gradient_bytes, "optimizer": optimizer_state,
                   "input": inputs, "activations": max(peak - known, 0), "workspace": None},
        phases=dict(phases.peaks), layers=layers.bytes, optimizer=optimizer if train else None, dtype=dtype,
        checkpoint=checkpoint, nvml_used_bytes=used, nvml_note=note, provenance=provenance(device),
        notes=["measured breakdown: weights, input, gradients (at the end of backward) and optimizer state are "
               "exact; activations is the rest of the peak and includes cuDNN/cuBLAS workspaces"])


class _Gradients(StepObserver):
    """Gradient bytes at the end of backward (CPU measurement)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.bytes = model, 0

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        yield
        if phase is Phase.BACKWARD:
            self.bytes = _storage_bytes([p.grad for p in self.model.parameters() if p.grad is not None])


#: Allocation events the ``--trace`` history keeps (older ones are dropped first).
HISTORY_ENTRIES = 200_000


def start_memory_history() -> None:
    """Record the CUDA allocator's history for ``--trace`` with Python stacks only: the default (``stacks="all"``)
    also unwinds the C++ stack on every allocation, which makes the measured step and the snapshot slow."""
    torch.cuda.memory._record_memory_history(max_entries=HISTORY_ENTRIES, stacks="python")


def measure_cpu(name: str | ModelSpec, size: int, batch: int, channels: int | None = None, classes: int | None = None,
                train: bool = False, optimizer: str = "sgd", dtype: str = "float32",
                checkpoint: bool = False) -> MemoryResult:
    """Host memory of the same step on the CPU, from the torch profiler's memory timeline (tensors created minus
    destroyed). There is no caching allocator: "reserved" equals "allocated"."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    quiet_torch_profiler()
    device = torch.device("cpu")
    config = StepConfig.make(train, optimizer, dtype, checkpoint)
    spec = resolve(name)
    step = _real_step(spec, size, batch, channels, classes, config, device)
    weights = _storage_bytes([*step.model.parameters(), *step.model.buffers()])
    inputs = _storage_bytes([step.x, step.y])
    gradients = _Gradients(step.model)
    with step.checkpointing():
        if train:  # a first step creates the optimizer state; the second is measured
            step.run()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            step.run(gradients)
    optimizer_state = _optimizer_state_bytes(step)
    current = peak = 0
    for _time, action, _key, nbytes in prof._memory_profile().timeline:
        if action == Action.CREATE:
            current += nbytes
        elif action == Action.DESTROY:
            current -= nbytes
        peak = max(peak, current)
    total = weights + inputs + optimizer_state + peak
    return MemoryResult(
        model=spec.name, model_source=spec.source, input_shape=tuple(step.x.shape),
        mode=config.mode, source=Source.MEASURED,
        device=provenance(device)["device"] + ", host memory", device_kind=DeviceKind.CPU, peak_allocated_bytes=total,
        peak_reserved_bytes=total, baseline_bytes=weights + inputs,
        breakdown={"weights": weights, "gradients": gradients.bytes, "optimizer": optimizer_state, "input": inputs,
                   "activations": max(total - weights - inputs - gradients.bytes - optimizer_state, 0),
                   "workspace": None},
        phases={}, layers={}, optimizer=optimizer if train else None, dtype=dtype, checkpoint=checkpoint,
        nvml_used_bytes=None, nvml_note="NVML: not applicable to CPU memory", provenance=provenance(device),
        notes=["CPU memory, not GPU memory: the torch profiler's host-memory timeline (tensors created minus "
               "destroyed during the step) on top of the resident weights, input and optimizer state"])


def measure_in_subprocess(config: dict[str, Any], timeout_s: float = 600) -> MemoryResult:
    """Run :func:`measure_cuda` for ``config`` in a fresh Python process (the protocol's "fresh process");
    ``config["device"] == "cpu"`` runs :func:`measure_cpu` there instead. A process that has not finished after
    ``timeout_s`` seconds is killed and reported as a :class:`ProfilerError`, so one hung measurement does not stop
    a sweep."""
    try:
        proc = subprocess.run([sys.executable, "-m", "profiler.memory.measure", json.dumps(config)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ProfilerError(f"the measurement of {config.get('name')} at size {config.get('size')}, batch "
                            f"{config.get('batch')} did not finish within {timeout_s:g} s and was stopped; run it "
                            "alone to see where it hangs") from None
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["measurement failed"])[-1].removeprefix("profiler: error: ")
        raise ProfilerError(message, exit_code=proc.returncode if proc.returncode in (2, 3) else 2)
    data = json.loads(proc.stdout)
    data["input_shape"] = tuple(data["input_shape"])
    data["device_kind"] = DeviceKind(data["device_kind"])
    return MemoryResult(**data)


def _main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    measure = measure_cpu if config.pop("device", "cuda") == "cpu" else measure_cuda
    try:
        result = measure(**config)
    except ProfilerError as err:
        sys.stderr.write(f"profiler: error: {err}\n")
        return err.exit_code
    sys.stdout.write(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
