"""The Python API — what the commands compute, for notebooks and scripts — and the multi-configuration runs the
commands make. Every function takes keyword arguments and returns the records the commands format; each record has
``to_dict()`` (the command's JSON object) and a one-line ``repr``.

``model`` is a zoo name (``python -m profiler models``), ``torchvision:NAME``, ``module.path:callable`` or an
``nn.Module``. A module handed over is never changed: it is copied to the meta device and analysed there.
``input_shape`` (batch first, e.g. ``(128, 1, 224, 224)``) wins over ``size``/``batch``/``channels``; a module whose
input is not an image takes its ``input_shape`` as it is. User mistakes raise :class:`~profiler.errors.ProfilerError`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from profiler.bandwidth.records import BandwidthResult
from profiler.catalogue import DEFAULT_GPU, GPUS, GpuSpec, gpu_spec
from profiler.counting import ModelStats, count_configs
from profiler.errors import ProfilerError
from profiler.kinds import Mode
from profiler.memory.records import MemoryResult
from profiler.models import ModelSpec, resolve

ModelLike = str | nn.Module


def count(model: ModelLike, input_shape: tuple[int, ...] | None = None, *, size: int | None = None, batch: int = 1,
          channels: int | None = None, classes: int | None = None, train: bool = False, depth: int | None = None,
          dtype: str = "float32") -> ModelStats:
    """Parameters, MACs, FLOPs (= 2 × MACs), other ops and bytes moved per layer of one inference (or, with
    ``train``, one training step's forward, loss and backward), counted on meta tensors — ``python -m profiler
    flops``; conventions: :func:`profiler.counting.conventions`."""
    spec, size, batch, channels = _config(model, input_shape, size, batch, channels)
    return count_configs([spec], [size], batch=batch, channels=channels, classes=classes, train=train, depth=depth,
                         dtype=dtype)[0]


def peak_memory(model: ModelLike, input_shape: tuple[int, ...] | None = None, *, size: int | None = None,
                batch: int = 128, channels: int | None = None, classes: int | None = None, train: bool = False,
                optimizer: str = "sgd", dtype: str = "float32", checkpoint: bool = False, gpu: str | None = None,
                gpu_memory: int | None = None, measure: bool | None = None, device: str | None = None
                ) -> MemoryResult:
    """Peak GPU memory of one inference or training step, with a breakdown and the fit verdict for ``gpu`` (default
    h100; ``gpu_memory`` bytes replace its total) — ``python -m profiler memory``. ``measure``: True measures (CUDA,
    or host memory with ``device="cpu"``), False predicts, None measures where CUDA is and predicts elsewhere."""
    from profiler.memory.runner import peak_memory_configs

    spec, size, batch, channels = _config(model, input_shape, size, batch, channels)
    return peak_memory_configs([spec], [size], batch=batch, channels=channels, classes=classes, train=train,
                               optimizer=optimizer, dtype=dtype, checkpoint=checkpoint, gpu=gpu or DEFAULT_GPU,
                               gpu_memory=gpu_memory, measure=measure, device=device)[0]


def layer_times(model: ModelLike, input_shape: tuple[int, ...] | None = None, *, size: int | None = None,
                batch: int = 128, channels: int | None = None, classes: int | None = None, train: bool = False,
                optimizer: str = "sgd", dtype: str = "float32", gpu: str | None = None, gpu_memory: int | None = None,
                predict: bool | None = None, device: str | None = None, steps: int = 20, warmup: int = 5
                ) -> BandwidthResult:
    """Time, achieved FLOP/s and bytes/s per layer of one step — ``python -m profiler bandwidth``: measured on
    ``device`` (or CUDA where there is one), predicted for ``gpu`` by the time model with ``predict=True`` or where
    there is no CUDA device."""
    spec, size, batch, channels = _config(model, input_shape, size, batch, channels)
    return layer_time_configs([spec], [size], batch=batch, channels=channels, classes=classes, train=train,
                              optimizer=optimizer, dtype=dtype, gpu=gpu, gpu_memory=gpu_memory, predict=predict,
                              device=device, steps=steps, warmup=warmup)[0]


def gpus() -> list[GpuSpec]:
    """The catalogue of cards predictions can target (``--gpu``), each with its figures and their sources."""
    return list(GPUS.values())


def layer_time_configs(models: Sequence[str | ModelSpec], sizes: Sequence[int] | None = None, *, batch: int = 128,
                       channels: int | None = None, classes: int | None = None, train: bool = False,
                       optimizer: str = "sgd", dtype: str = "float32", gpu: str | None = None,
                       gpu_memory: int | None = None, predict: bool | None = None, device: str | None = None,
                       steps: int = 20, warmup: int = 5, remeasure_peaks: bool = False,
                       fast_start: bool = False) -> list[BandwidthResult]:
    """Every (model, size) configuration of ``python -m profiler bandwidth``: measured where CUDA is (or on
    ``device``; ``remeasure_peaks`` calibrates the device again), else — or with ``predict`` — predicted for ``gpu``.
    A prediction with ``gpu_memory`` gets a note
    saying whether the memory model's fit verdict for that memory holds."""
    from profiler.device import cuda_available

    if predict and device is not None:
        raise ProfilerError("--predict and --device exclude each other: a prediction runs nothing; leave one out")
    if predict is None:
        predict = device is None and not cuda_available()
    if not predict:
        from profiler.bandwidth.runner import run_bandwidth

        if gpu or gpu_memory:
            raise ProfilerError("--gpu and --gpu-memory name the card a prediction is for; add --predict (a measured "
                                "run times the device at hand)")
        return run_bandwidth(models, sizes, batch=batch, channels=channels, classes=classes, train=train,
                             steps=steps, warmup=warmup, device=device, optimizer=optimizer, dtype=dtype,
                             remeasure_peaks=remeasure_peaks)
    if remeasure_peaks:
        raise ProfilerError("--remeasure-peaks calibrates the device a measured run times; a prediction uses the "
                            "card's datasheet: drop --remeasure-peaks, or drop --predict (--device cpu where there "
                            "is no GPU)")
    from profiler.bandwidth.predict import run_predicted

    card = gpu_spec(gpu or DEFAULT_GPU)
    results = run_predicted(models, sizes, batch=batch, channels=channels, classes=classes, train=train,
                            gpu=card.key, dtype=dtype, optimizer=optimizer, fast_start=fast_start)
    if gpu_memory is None:
        return results
    return [replace(result, notes=[*result.notes, memory_fit_note(result, spec, card.key, gpu_memory, classes)])
            for result, spec in zip(results, _specs_per_result(models, sizes), strict=True)]


def memory_fit_note(result: BandwidthResult, spec: ModelSpec, gpu: str, total_bytes: int,
                    classes: int | None) -> str:
    """Whether the step of ``result`` fits ``total_bytes`` of device memory by the memory model's fit verdict
    (:mod:`profiler.memory.verdict`), in one line."""
    from profiler.memory.runner import predict_config
    from profiler.util.units import human_bytes

    size = result.input_shape[-1]
    memory = predict_config(spec, size, result.input_shape[0], result.input_shape[1], classes,
                            train=result.mode == Mode.TRAIN, optimizer=result.optimizer or "sgd", dtype=result.dtype,
                            gpu=gpu, total_bytes=total_bytes, total_source=f"--gpu-memory: {total_bytes:,} B")
    verdict = memory.verdict
    need = human_bytes(verdict.required_bytes + verdict.device_overhead_bytes)
    return (f"memory: the step {'fits' if verdict.fits else 'does NOT fit'} --gpu-memory {human_bytes(total_bytes)}: "
            f"it needs {need} (predicted peak reserved × (1 + m) + device overhead; python -m profiler memory "
            "--predict)")


def _specs_per_result(models: Sequence[str | ModelSpec], sizes: Sequence[int] | None) -> list[ModelSpec]:
    return [spec for spec in map(resolve, models) for _ in (sizes or [spec.default_size])]


def _config(model: ModelLike, input_shape: tuple[int, ...] | None, size: int | None, batch: int,
            channels: int | None) -> tuple[ModelSpec, int, int, int | None]:
    """(spec, size, batch, channels) of one configuration of the API."""
    if isinstance(model, nn.Module):
        spec = module_spec(model, input_shape)
    elif isinstance(model, str):
        spec = resolve(model)
    else:
        raise ProfilerError(f"model must be a name (zoo, torchvision:NAME, module.path:callable) or an nn.Module, "
                            f"not {type(model).__name__}")
    if input_shape is None:
        return spec, size or spec.default_size, batch, channels
    shape = tuple(int(d) for d in input_shape)
    if spec.sample_shape is not None:
        return spec, shape[-1], shape[0], None
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ProfilerError(f"input_shape {list(shape)}: the zoo and torchvision models take (batch, channels, size, "
                            "size); pass size=, batch=, channels= or a square shape")
    return spec, shape[2], shape[0], shape[1]


def module_spec(module: nn.Module, input_shape: tuple[int, ...] | None = None) -> ModelSpec:
    """A :class:`ModelSpec` for a module handed to the API: each build is a copy on the meta device (the module
    itself is never touched). Without ``input_shape`` it takes (3, size, size) images, like a factory."""
    from profiler.models.loading import unwrap_compiled

    original = unwrap_compiled(module)

    def make(channels: int, classes: int | None) -> nn.Module:
        if classes is not None:
            raise ProfilerError("classes cannot be applied to a module: it has its own classifier; leave classes out")
        return copy.deepcopy(original).to("meta")

    cls = type(original)
    sample = tuple(int(d) for d in input_shape[1:]) if input_shape is not None and (
        len(input_shape) != 4 or input_shape[2] != input_shape[3]) else None
    return ModelSpec(name=cls.__name__, family="module", source=f"{cls.__module__}.{cls.__qualname__} (a module)",
                     default_size=224, default_channels=3, make=make, external=True, by_name=False,
                     sample_shape=sample)
