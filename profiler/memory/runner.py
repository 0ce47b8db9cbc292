"""``python -m profiler memory``: decide between measuring and predicting, run every configuration, find the
largest batch that fits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace

import torch

from profiler.device import current_gpu
from profiler.errors import EXIT_OUT_OF_MEMORY, ProfilerError
from profiler.gpus import GpuSpec, gpu_spec, parse_bytes
from profiler.memory.predict import predict
from profiler.memory.records import MemoryResult
from profiler.memory.trace import DTYPES, trace_step
from profiler.models import build, resolve
from profiler.models.loading import ForwardFailed, explain

MAX_BATCH = 1 << 20
GiB = float(1 << 30)


def predict_config(name: str, size: int, batch: int, channels: int | None = None, classes: int | None = None,
                   train: bool = False, optimizer: str = "sgd", dtype: str = "float32", checkpoint: bool = False,
                   gpu: str = "h100") -> MemoryResult:
    """Predicted peak memory of one configuration on ``gpu`` (no GPU needed)."""
    spec = resolve(name)
    target = gpu_spec(gpu)
    model = build(spec, size, channels, classes)
    try:
        trace = trace_step(model, spec.input_shape(batch, size, channels), train, optimizer, DTYPES[dtype],
                           checkpoint_blocks=checkpoint, gpu=target)
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None
    return predict(trace, target, spec.name, checkpoint=checkpoint)


def run_memory(args: argparse.Namespace) -> list[MemoryResult]:
    """Every (model, size) configuration of the command line, measured or predicted (see ``--help``)."""
    where = _measure_device(args)
    gpu = _target_gpu(args, where)
    if args.trace and where != "cuda":
        raise ProfilerError("--trace records the CUDA allocator's history; it needs --measure on a CUDA device")
    if args.max_batch and where == "cpu":
        raise ProfilerError("--max-batch searches GPU memory; use it with --predict, or --measure on CUDA")
    configs = [(spec.name, size) for spec in map(resolve, args.models) for size in args.size or [spec.default_size]]
    common = dict(channels=args.channels, classes=args.classes, train=args.train, optimizer=args.optimizer,
                  dtype=args.dtype, checkpoint=args.checkpoint)

    results = []
    for index, (name, size) in enumerate(configs):
        def predicted(batch: int, name: str = name, size: int = size) -> MemoryResult:
            return predict_config(name, size, batch, gpu=gpu.key, **common)

        def measured(batch: int, name: str = name, size: int = size, index: int = index) -> MemoryResult:
            if where == "cpu":
                from profiler.memory.measure import measure_cpu

                return measure_cpu(name, size, batch, **common)
            from profiler.memory.measure import measure_in_subprocess

            trace = _numbered(args.trace, index, len(configs)) if args.trace else None
            return measure_in_subprocess(dict(name=name, size=size, batch=batch, trace_file=trace, **common))

        try:
            if args.max_batch:
                budget = parse_bytes(args.gpu_memory) if args.gpu_memory else _budget(gpu, where)
                results.append(largest_batch(predicted, budget, measured if where else None))
            else:
                results.append((measured if where else predicted)(args.batch))
        except ProfilerError as err:
            if err.exit_code != EXIT_OUT_OF_MEMORY or len(configs) == 1:
                raise
            results.append(_oom_entry(name, size, args, str(err)))
    if where is None:  # said once it succeeded, so that a user error stays the only line on stderr
        reason = "predicted" if args.predict else "no CUDA device: predicted"
        sys.stderr.write(f"profiler: {reason} peak memory for {gpu.name} (nothing ran on a GPU)\n")
    return results


def _measure_device(args: argparse.Namespace) -> str | None:
    """"cuda" or "cpu" to measure there, None to predict."""
    has_cuda = torch.cuda.is_available()
    if args.predict:
        return None
    if args.measure:
        device = args.device or "cuda"
        if device == "cuda" and not has_cuda:
            raise ProfilerError("--measure needs a CUDA GPU and none is available here; use --predict (for --gpu "
                                "h100/h200) or --measure --device cpu (host memory)")
        return device
    if args.device == "cpu":
        return "cpu"
    if args.device == "cuda" and not has_cuda:
        raise ProfilerError("--device cuda: no CUDA GPU is available here; leave --device out to predict")
    return "cuda" if has_cuda else None


def _target_gpu(args: argparse.Namespace, where: str | None) -> GpuSpec:
    """The GPU predictions are for: --gpu, or when measuring on CUDA the catalogue entry of the card at hand."""
    if where == "cuda":
        here = current_gpu()
        if here is not None:
            return here
    return gpu_spec(args.gpu)


def _budget(gpu: GpuSpec, where: str | None) -> int:
    """Bytes the caching allocator may reserve: the card at hand when measuring, else the predicted GPU's."""
    if where == "cuda":
        free, total = torch.cuda.mem_get_info()
        return total - gpu.device_overhead_bytes
    return gpu.usable_bytes


def _numbered(path: str, index: int, count: int) -> str:
    if count == 1:
        return path
    stem, dot, ext = path.rpartition(".")
    return f"{stem}.{index + 1}.{ext}" if dot else f"{path}.{index + 1}"


def _oom_entry(name: str, size: int, args: argparse.Namespace, message: str) -> MemoryResult:
    spec = resolve(name)
    return MemoryResult(model=spec.name, input_shape=spec.input_shape(args.batch, size, args.channels),
                        mode="train" if args.train else "inference", source="measured",
                        device=torch.cuda.get_device_name() if torch.cuda.is_available() else "CUDA",
                        peak_allocated_bytes=0, peak_reserved_bytes=0, baseline_bytes=0, breakdown={}, phases={},
                        layers={}, optimizer=args.optimizer if args.train else None, dtype=args.dtype,
                        checkpoint=args.checkpoint, notes=[message], out_of_memory=True)


def largest_batch(predicted: Callable[[int], MemoryResult], budget: int,
                  measured: Callable[[int], MemoryResult] | None = None) -> MemoryResult:
    """The largest batch whose *predicted* peak reserved memory fits ``budget`` bytes, by bisection (memory grows
    with the batch). With ``measured``, that batch is then run for real, and the next one up, to confirm."""
    cache: dict[int, MemoryResult] = {}

    def at(batch: int) -> MemoryResult:
        if batch not in cache:
            cache[batch] = predicted(batch)
        return cache[batch]

    def fits(batch: int) -> bool:
        return at(batch).peak_reserved_bytes <= budget

    if not fits(1):
        raise ProfilerError(f"even batch 1 does not fit: predicted {at(1).peak_reserved_bytes / GiB:.2f} GiB "
                            f"reserved, budget {budget / GiB:.2f} GiB", exit_code=EXIT_OUT_OF_MEMORY)
    low, high = 1, 2
    while high <= MAX_BATCH and fits(high):
        low, high = high, high * 2
    high = min(high, MAX_BATCH + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    note = (f"largest batch whose predicted peak reserved memory fits {budget / GiB:.2f} GiB: {low} "
            f"(batch {low + 1} is predicted to need {at(low + 1).peak_reserved_bytes / GiB:.2f} GiB)")
    if measured is None:
        return replace(at(low), notes=[*at(low).notes, note])
    result = measured(low)
    try:
        above = measured(low + 1)
        outcome = (f"measured: batch {low + 1} also fits (peak reserved {above.peak_reserved_bytes / GiB:.2f} GiB), "
                   "so the prediction is conservative here")
    except ProfilerError as err:
        if err.exit_code != EXIT_OUT_OF_MEMORY:
            raise
        outcome = f"measured: batch {low + 1} runs out of memory, as predicted"
    return replace(result, notes=[*result.notes, note, outcome])
