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
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from profiler.device import nvml_used_bytes, provenance
from profiler.errors import EXIT_OUT_OF_MEMORY, ProfilerError
from profiler.memory.allocator import round_size
from profiler.memory.records import MemoryResult
from profiler.memory.trace import DTYPES, checkpointed_blocks, make_optimizer
from profiler.models import build, resolve
from profiler.models.loading import logits_of, output_classes, to_device


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Caching-allocator bytes of distinct storages (each rounded to 512 B as the allocator does)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = round_size(storage.nbytes()) if storage.nbytes() else 0
    return sum(seen.values())


class _LayerBytes:
    """Per leaf layer: bytes its forward leaves allocated (``memory_allocated`` after minus before)."""

    def __init__(self, model: nn.Module, read: Callable[[], int]) -> None:
        self.bytes: dict[str, int] = {}
        self.active = False
        self._handles = []
        for name, module in model.named_modules():
            if next(module.children(), None) is not None:
                continue
            start: list[int] = []

            def pre(_m: nn.Module, _a: tuple, start: list[int] = start) -> None:
                start.append(read())

            def post(_m: nn.Module, _a: tuple, _o: Any, name: str = name, start: list[int] = start) -> None:
                before = start.pop()
                if self.active:
                    self.bytes[name] = self.bytes.get(name, 0) + read() - before

            self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def measure_cuda(name: str, size: int, batch: int, channels: int | None = None, classes: int | None = None,
                 train: bool = False, optimizer: str = "sgd", dtype: str = "float32", checkpoint: bool = False,
                 trace_file: str | None = None) -> MemoryResult:
    """Measure one configuration on the current CUDA device (see the module docstring for the protocol)."""
    device = torch.device("cuda", torch.cuda.current_device())
    torch.backends.cudnn.benchmark = False
    spec = resolve(name)
    shape = spec.input_shape(batch, size, channels)
    meta_model, num_classes = _meta_model_and_classes(name, size, channels, classes)
    try:
        model = to_device(meta_model, device).to(DTYPES[dtype])
        x = torch.randn(shape, device=device, dtype=DTYPES[dtype])
        y = torch.randint(0, num_classes, (batch,), device=device)
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        weights = _storage_bytes([*model.parameters(), *model.buffers()])
        inputs = _storage_bytes([x, y])
        layers = _LayerBytes(model, lambda: torch.cuda.memory_allocated(device))
        phases: dict[str, int] = {}
        reserved = 0

        def phase(name_: str, work: Callable[[], Any]) -> Any:
            nonlocal reserved
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            out = work()
            torch.cuda.synchronize(device)
            phases[name_] = torch.cuda.max_memory_allocated(device)
            reserved = max(reserved, torch.cuda.max_memory_reserved(device))
            return out

        with ExitStack() as stack:
            if checkpoint:
                stack.enter_context(checkpointed_blocks(model))
            if not train:
                model.eval()
                layers.active = True
                if trace_file:
                    start_memory_history()
                with torch.inference_mode():
                    phase("forward", lambda: model(x))
                gradients = optimizer_state = 0
            else:
                model.train()
                opt = make_optimizer(optimizer, list(model.parameters()))
                loss_fn = nn.CrossEntropyLoss()
                for step in range(2):
                    measured = step == 1
                    layers.active = measured
                    if measured and trace_file:
                        start_memory_history()

                    def forward() -> torch.Tensor:
                        opt.zero_grad(set_to_none=True)
                        out = model(x)
                        return loss_fn(logits_of(out), y)

                    if measured:
                        loss = phase("forward", forward)
                        phase("backward", loss.backward)
                        gradients = _storage_bytes([p.grad for p in model.parameters() if p.grad is not None])
                        phase("optimizer", opt.step)
                    else:
                        loss = forward()
                        loss.backward()
                        opt.step()
                    del loss
                optimizer_state = _storage_bytes([t for state in opt.state.values() for t in state.values()
                                                  if isinstance(t, torch.Tensor) and t.is_cuda])
            if trace_file:
                torch.cuda.memory._dump_snapshot(trace_file)
                torch.cuda.memory._record_memory_history(enabled=None)
        layers.remove()
        peak = max(phases.values())
        used, note = nvml_used_bytes(device.index)
    except torch.cuda.OutOfMemoryError as err:
        free, total = torch.cuda.mem_get_info(device)
        raise ProfilerError(f"{name} at {list(shape)} ({'training' if train else 'inference'}) ran out of GPU "
                            f"memory: {str(err).splitlines()[0]} The device has {total / 2**30:.1f} GiB; try a "
                            f"smaller --batch or --size, or --checkpoint", exit_code=EXIT_OUT_OF_MEMORY) from None
    known = weights + inputs + gradients + optimizer_state
    return MemoryResult(
        model=spec.name, input_shape=tuple(shape), mode="train" if train else "inference", source="measured",
        device=torch.cuda.get_device_name(device), peak_allocated_bytes=peak, peak_reserved_bytes=reserved,
        baseline_bytes=baseline,
        breakdown={"weights": weights, "gradients": gradients, "optimizer": optimizer_state, "input": inputs,
                   "activations": max(peak - known, 0), "workspace": None},
        phases=phases, layers=layers.bytes, optimizer=optimizer if train else None, dtype=dtype,
        checkpoint=checkpoint, nvml_used_bytes=used, nvml_note=note, provenance=provenance(device),
        notes=["measured breakdown: weights, input, gradients (at the end of backward) and optimizer state are "
               "exact; activations is the rest of the peak and includes cuDNN/cuBLAS workspaces"])


#: Allocation events the ``--trace`` history keeps (older ones are dropped first).
HISTORY_ENTRIES = 200_000


def start_memory_history() -> None:
    """Record the CUDA allocator's history for ``--trace`` with Python stacks only: the default (``stacks="all"``)
    also unwinds the C++ stack on every allocation, which makes the measured step and the snapshot slow."""
    torch.cuda.memory._record_memory_history(max_entries=HISTORY_ENTRIES, stacks="python")


def _meta_model_and_classes(name: str, size: int, channels: int | None, classes: int | None
                            ) -> tuple[nn.Module, int]:
    """The meta model, and how many logits it returns (labels are drawn below that)."""
    spec = resolve(name)
    model = build(spec, size, channels, classes)
    return model, output_classes(model, spec.input_shape(1, size, channels))


def measure_cpu(name: str, size: int, batch: int, channels: int | None = None, classes: int | None = None,
                train: bool = False, optimizer: str = "sgd", dtype: str = "float32",
                checkpoint: bool = False) -> MemoryResult:
    """Host memory of the same step on the CPU, from the torch profiler's memory timeline (tensors created minus
    destroyed). There is no caching allocator: "reserved" equals "allocated"."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    device = torch.device("cpu")
    spec = resolve(name)
    shape = spec.input_shape(batch, size, channels)
    meta_model, num_classes = _meta_model_and_classes(name, size, channels, classes)
    model = to_device(meta_model, device).to(DTYPES[dtype])
    x = torch.randn(shape, dtype=DTYPES[dtype])
    y = torch.randint(0, num_classes, (batch,))
    weights = _storage_bytes([*model.parameters(), *model.buffers()])
    inputs = _storage_bytes([x, y])
    gradients = optimizer_state = 0
    with ExitStack() as stack:
        if checkpoint:
            stack.enter_context(checkpointed_blocks(model))
        if train:
            model.train()
            opt = make_optimizer(optimizer, list(model.parameters()))
            for p in model.parameters():
                p.grad = None
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(logits_of(model(x)), y)
            loss.backward()
            opt.step()
            del loss
        else:
            model.eval()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            if train:
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(logits_of(model(x)), y)
                loss.backward()
                gradients = _storage_bytes([p.grad for p in model.parameters() if p.grad is not None])
                opt.step()
                del loss
            else:
                with torch.inference_mode():
                    model(x)
    if train:
        optimizer_state = _storage_bytes([t for s in opt.state.values() for t in s.values()
                                          if isinstance(t, torch.Tensor) and t.dim() > 0])
    current = peak = 0
    for _time, action, _key, nbytes in prof._memory_profile().timeline:
        if action == Action.CREATE:
            current += nbytes
        elif action == Action.DESTROY:
            current -= nbytes
        peak = max(peak, current)
    resident = weights + inputs + (optimizer_state if train else 0)
    total = resident + peak
    return MemoryResult(
        model=spec.name, input_shape=tuple(shape), mode="train" if train else "inference", source="measured",
        device=provenance(device)["device"] + ", host memory", peak_allocated_bytes=total,
        peak_reserved_bytes=total, baseline_bytes=weights + inputs,
        breakdown={"weights": weights, "gradients": gradients, "optimizer": optimizer_state, "input": inputs,
                   "activations": max(total - weights - inputs - gradients - optimizer_state, 0),
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
