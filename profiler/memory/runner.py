"""``python -m profiler memory``: decide between measuring and predicting, run every configuration, give each its fit
verdict (checked against the measurement when one ran on CUDA), find the largest batch that fits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from profiler.catalogue import DEFAULT_GPU, GpuSpec, gpu_spec
from profiler.device import DeviceKind, current_gpu
from profiler.errors import EXIT_OUT_OF_MEMORY, ProfilerError
from profiler.kinds import Mode, Source
from profiler.memory.predict import predict
from profiler.memory.records import MemoryResult
from profiler.memory.trace import trace_step
from profiler.memory.verdict import checked
from profiler.models import ModelSpec, build, resolve
from profiler.models.loading import ForwardFailed, explain
from profiler.step import StepConfig

#: The largest batch ``--max-batch`` tries.
MAX_BATCH = 1 << 20
#: How many batches ``--max-batch --measure`` steps down from a predicted edge that runs out of memory.
MAX_STEPS_DOWN = 8
GiB = float(1 << 30)


def predict_config(name: str | ModelSpec, size: int, batch: int, channels: int | None = None,
                   classes: int | None = None, train: bool = False, optimizer: str = "sgd", dtype: str = "float32",
                   checkpoint: bool = False, gpu: str = DEFAULT_GPU, total_bytes: int | None = None,
                   total_source: str | None = None) -> MemoryResult:
    """Predicted peak memory of one configuration on ``gpu`` (no GPU needed), with its fit verdict against the
    card's memory or ``total_bytes``."""
    spec = resolve(name)
    target = gpu_spec(gpu)
    model = build(spec, size, channels, classes)
    try:
        trace = trace_step(model, spec.input_shape(batch, size, channels),
                           StepConfig.make(train, optimizer, dtype, checkpoint), gpu=target)
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None
    return predict(trace, target, spec.name, checkpoint=checkpoint, total_bytes=total_bytes,
                   total_source=total_source, model_source=spec.source)


def peak_memory_configs(models: Sequence[str | ModelSpec], sizes: Sequence[int] | None = None, *, batch: int = 128,
                        channels: int | None = None, classes: int | None = None, train: bool = False,
                        optimizer: str = "sgd", dtype: str = "float32", checkpoint: bool = False,
                        gpu: str = DEFAULT_GPU, gpu_memory: int | None = None, measure: bool | None = None,
                        device: str | None = None, max_batch: bool = False, trace: str | None = None
                        ) -> list[MemoryResult]:
    """Every (model, size) configuration (sizes default to each model's own), measured or predicted, each with its
    fit verdict. ``measure``: True measures (on CUDA, or the host with ``device="cpu"``), False predicts for ``gpu``,
    None measures where CUDA is and predicts otherwise. ``gpu_memory`` replaces the card's total memory in the
    verdicts; ``max_batch`` searches the largest batch that fits; ``trace`` saves the CUDA allocator's history of
    measured runs (numbered per configuration). An out-of-memory measurement in a sweep of several is recorded and
    the sweep goes on; alone, it raises (exit code 3)."""
    where = _measure_device(measure, device)
    card = _target_gpu(gpu, where)
    total, total_source = _device_total(card, where, gpu_memory)
    if trace and where != "cuda":
        raise ProfilerError("--trace records the CUDA allocator's history; it needs --measure on a CUDA device")
    if max_batch and where == "cpu":
        raise ProfilerError("--max-batch searches GPU memory; use it with --predict, or --measure on CUDA")
    configs = [(spec, size) for spec in map(resolve, models) for size in sizes or [spec.default_size]]
    common = dict(channels=channels, classes=classes, train=train, optimizer=optimizer, dtype=dtype,
                  checkpoint=checkpoint)

    results = []
    for index, (spec, size) in enumerate(configs):
        def predicted(batch: int, spec: ModelSpec = spec, size: int = size) -> MemoryResult:
            return predict_config(spec, size, batch, gpu=card.key, total_bytes=total, total_source=total_source,
                                  **common)

        def measured(batch: int, spec: ModelSpec = spec, size: int = size, index: int = index) -> MemoryResult:
            if where == "cpu":
                from profiler.memory.measure import measure_cpu

                return measure_cpu(spec, size, batch, **common)
            numbered = _numbered(trace, index, len(configs)) if trace else None
            if not spec.by_name:  # a module passed to the Python API cannot be rebuilt by name in a fresh process
                from profiler.memory.measure import measure_cuda

                result = measure_cuda(spec, size, batch, trace_file=numbered, **common)
            else:
                from profiler.memory.measure import measure_in_subprocess

                result = measure_in_subprocess(dict(name=spec.name, size=size, batch=batch, trace_file=numbered,
                                                    **common))
            return replace(result, verdict=checked(predicted(batch).verdict, result))

        try:
            if max_batch:
                results.append(largest_batch(predicted, measured if where else None))
            else:
                results.append((measured if where else predicted)(batch))
        except ProfilerError as err:
            if err.exit_code != EXIT_OUT_OF_MEMORY or len(configs) == 1:
                raise
            results.append(_oom_entry(spec, size, batch, message=str(err),
                                      predicted=predicted if where == "cuda" else None, **common))
    return results


def _measure_device(measure: bool | None, device: str | None) -> str | None:
    """"cuda" or "cpu" to measure there, None to predict."""
    has_cuda = torch.cuda.is_available()
    if measure is False:
        return None
    if measure:
        where = device or "cuda"
        if where == "cuda" and not has_cuda:
            raise ProfilerError("--measure needs a CUDA GPU and none is available here; use --predict (for any "
                                "--gpu of python -m profiler gpus) or --measure --device cpu (host memory)")
        return where
    if device == "cpu":
        return "cpu"
    if device == "cuda" and not has_cuda:
        raise ProfilerError("--device cuda: no CUDA GPU is available here; leave --device out to predict")
    return "cuda" if has_cuda else None


def _target_gpu(gpu: str, where: str | None) -> GpuSpec:
    """The GPU predictions are for: ``gpu``, or when measuring on CUDA the catalogue entry of the card at hand."""
    if where == "cuda":
        here = current_gpu()
        if here is not None:
            return here
    return gpu_spec(gpu)


def _device_total(gpu: GpuSpec, where: str | None, override: int | None) -> tuple[int | None, str | None]:
    """The total memory the verdicts use and its source: ``--gpu-memory``; when measuring on CUDA the device's own
    ``total_memory`` (read from its properties: ``mem_get_info`` would create a CUDA context in this process that
    stays alive while the measurement runs in its child); else None (the catalogue's figure for ``gpu``)."""
    if override is not None:
        return override, f"--gpu-memory: {override:,} B, replacing the {gpu.name}'s memory"
    if where == "cuda":
        index = torch.cuda.current_device()
        return (torch.cuda.get_device_properties(index).total_memory,
                f"torch.cuda.get_device_properties({index}).total_memory of the device at hand")
    return None, None


def _numbered(path: str, index: int, count: int) -> str:
    if count == 1:
        return path
    stem, dot, ext = path.rpartition(".")
    return f"{stem}.{index + 1}.{ext}" if dot else f"{path}.{index + 1}"


def _oom_entry(spec: ModelSpec, size: int, batch: int, *, message: str,
               predicted: Callable[[int], MemoryResult] | None, channels: int | None, classes: int | None,
               train: bool, optimizer: str, dtype: str, checkpoint: bool) -> MemoryResult:
    """The record of a measurement that ran out of memory in a sweep, with the verdict checked against it."""
    result = MemoryResult(model=spec.name, model_source=spec.source,
                          input_shape=spec.input_shape(batch, size, channels), mode=Mode.of(train),
                          source=Source.MEASURED,
                          device=torch.cuda.get_device_name() if torch.cuda.is_available() else "CUDA",
                          device_kind=DeviceKind.CUDA,
                          peak_allocated_bytes=0, peak_reserved_bytes=0, baseline_bytes=0, breakdown={}, phases={},
                          layers={}, optimizer=optimizer if train else None, dtype=dtype,
                          checkpoint=checkpoint, notes=[message], out_of_memory=True)
    if predicted is None:
        return result
    return replace(result, verdict=checked(predicted(batch).verdict, result))


def largest_batch(predicted: Callable[[int], MemoryResult],
                  measured: Callable[[int], MemoryResult] | None = None) -> MemoryResult:
    """The largest batch (up to :data:`MAX_BATCH`) whose predicted fit verdict is ``fits``, by bisection (memory
    grows with the batch). With ``measured`` that batch is then run for real: if it runs out of memory the search
    steps down one batch at a time (at most :data:`MAX_STEPS_DOWN`); if it runs, the next batch up is run too, to say
    whether the verdict was conservative there."""
    cache: dict[int, MemoryResult] = {}

    def at(batch: int) -> MemoryResult:
        if batch not in cache:
            cache[batch] = predicted(batch)
        return cache[batch]

    def fits(batch: int) -> bool:
        return at(batch).verdict.fits

    if not fits(1):
        raise ProfilerError(f"even batch 1 does not fit the {at(1).verdict.device}: {_need(at(1))}",
                            exit_code=EXIT_OUT_OF_MEMORY)
    low, high = 1, 2
    while high <= MAX_BATCH and fits(high):
        low, high = high, high * 2
    high = min(high, MAX_BATCH + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    device = at(low).verdict.device
    if low == MAX_BATCH:
        note = (f"batch {MAX_BATCH:,}, the largest the search tries, fits the {device} ({_need(at(low))}); larger "
                "batches were not searched")
    else:
        note = (f"largest batch that fits the {device}: {low:,} ({_need(at(low))}); batch {low + 1:,} does not "
                f"({_need(at(low + 1))})")
    if measured is None:
        return replace(at(low), notes=[*at(low).notes, note])
    return _confirm(low, measured, note)


def _need(result: MemoryResult) -> str:
    """A verdict's figures in one clause: required + overhead against the total."""
    v = result.verdict
    return (f"needs {v.required_bytes / GiB:.2f} GiB + {v.device_overhead_bytes / GiB:.2f} GiB overhead of "
            f"{v.device_total_bytes / GiB:.2f} GiB")


def _confirm(batch: int, measured: Callable[[int], MemoryResult], note: str) -> MemoryResult:
    """Measure the predicted edge ``batch``; step down while it runs out of memory, else try one batch up."""
    for step in range(MAX_STEPS_DOWN + 1):
        try:
            result = measured(batch - step)
        except ProfilerError as err:
            if err.exit_code != EXIT_OUT_OF_MEMORY or batch - step == 1:
                raise
            continue
        if step:
            outcome = (f"measured: batch {batch:,} ran out of memory; batch {batch - step:,} is the largest that ran "
                       "(the verdict was not safe here)")
            return replace(result, notes=[*result.notes, note, outcome])
        break
    else:
        raise ProfilerError(f"measured: batches {batch - MAX_STEPS_DOWN:,} to {batch:,} all ran out of memory although "
                            "predicted to fit", exit_code=EXIT_OUT_OF_MEMORY)
    try:
        above = measured(batch + 1)
        outcome = (f"measured: batch {batch + 1:,} also ran (peak reserved {above.peak_reserved_bytes / GiB:.2f} GiB), "
                   "so the verdict is conservative here")
    except ProfilerError as err:
        if err.exit_code != EXIT_OUT_OF_MEMORY:
            raise
        outcome = f"measured: batch {batch + 1:,} runs out of memory, as predicted"
    return replace(result, notes=[*result.notes, note, outcome])
