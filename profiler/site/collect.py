"""Everything the reports show, computed before a single file is written: counts, memory and time predictions on meta
tensors (no GPU), the memory prediction's errors against the committed measurements, and the measurements from the
committed JSON. The renderers only format these records."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from profiler.bandwidth.predict import count_and_predict_step
from profiler.bandwidth.records import BandwidthResult
from profiler.counting import LayerStats, ModelStats, count_configs, count_layer
from profiler.counting.counter import fold
from profiler.memory.records import MemoryResult
from profiler.memory.runner import predict_config
from profiler.memory.validation import (
    REFERENCE_GPU,
    RunErrors,
    Sensitivity,
    reference_prediction,
    reference_runs,
    validate,
    workspace_sensitivity,
)
from profiler.models import ZOO, build, resolve, smallest_input_size
from profiler.models.zoo import CHAPTER7
from profiler.site.measured import DATA_DIR, Measurements, load_measurements
from profiler.site.measured_gpu import GpuBandwidthSet, load_gpu_bandwidth
from profiler.util.parallel import frozen_heap, run_all

#: Input sizes every report compares (d2l trains chapter 7 at 224; exercise 7.2.3 asks for 96).
SIZES = (96, 224)
#: The batch of the memory predictions and of the committed measurements.
BATCH = 128
#: The GPU predictions are for: the one the committed reference was measured on, so the two compare.
GPU = "h200"
#: The training step the time predictions assume: the committed measurements' (SGD without momentum, float32).
OPTIMIZER, DTYPE = "sgd", "float32"
#: Models whose full per-layer table would run to hundreds of rows: fold to this ``--depth`` (one row per block).
FOLD_DEPTH = {"resnet50": 2, "densenet121": 3, "densenet169": 3, "densenet201": 3}
#: Exercise 7.1.3: AlexNet's training batches.
ALEXNET_BATCHES = (64, 128, 512)
#: Exercise 7.7.3: DenseNet's memory at the notes' small input, and the memory savers predicted at 224.
DENSENET_SMALL_SIZE = 32
DENSENET_SAVERS = {"checkpoint": dict(checkpoint=True), "bfloat16": dict(dtype="bfloat16"),
                   "checkpoint + bfloat16": dict(checkpoint=True, dtype="bfloat16")}


@dataclass
class SizeData:
    """One model at one input size. Counts at batch 1 are per image; batch-128 ones match the memory runs. Memory
    and time are predicted for :data:`GPU` at batch :data:`BATCH` (time: float32, SGD, every layer)."""

    size: int
    table: ModelStats            # inference, batch 1, folded to the model's FOLD_DEPTH: the per-layer table
    layers: ModelStats           # inference, batch 1, every layer
    inference: ModelStats        # inference, batch BATCH
    train: ModelStats            # one training step, batch BATCH
    memory_inference: MemoryResult
    memory_train: MemoryResult
    time_inference: BandwidthResult
    time_train: BandwidthResult


@dataclass
class ModelData:
    """A zoo model at its report sizes (:data:`SIZES`, and its own default size if different)."""

    name: str
    family: str
    source: str
    depth: int | None
    sizes: dict[int, SizeData]
    book_size: int               # the input the book trains it at (LeNet 28, the others 224): its roofline's


@dataclass
class ReportData:
    """The inputs of every report page."""

    models: dict[str, ModelData]               # the whole zoo, in zoo order
    measured: Measurements
    memory_errors: tuple[RunErrors, ...]       # the memory prediction against each committed run, fitted and LOMO
    memory_sensitivity: tuple[Sensitivity, ...]  # each run's predicted peaks when the workspaces move (same order)
    measured_times: tuple[GpuBandwidthSet, ...]  # committed per-layer kernel times (gpu_bandwidth_<gpu>.json)
    alexnet_batches: dict[int, MemoryResult]   # training at 224, predicted, per batch of ALEXNET_BATCHES
    densenet_small: MemoryResult               # training at DENSENET_SMALL_SIZE, batch BATCH, predicted
    densenet_savers: dict[str, MemoryResult]   # training at 224, batch BATCH, predicted, per DENSENET_SAVERS
    nin_three_channels: ModelStats             # 224, batch 1, 3 input channels: the notes' hand count
    smallest_sizes: dict[str, int | None]      # the six, 1 channel
    googlenet_smallest: ModelStats             # GoogLeNet at its smallest input, batch 1
    pointwise_params: dict[str, int]           # the six at 224: parameters of 1×1 convolutions
    torchvision_alexnet: ModelStats            # the paper's AlexNet as torchvision builds it, 224, batch 1
    googlenet_avoided: dict[str, LayerStats]   # the layers GoogLeNet's savings avoid (see _googlenet_avoided)


def report_sizes(name: str) -> tuple[int, ...]:
    """:data:`SIZES`, plus the model's own default size (LeNet: 28) where that is another."""
    return tuple(sorted({*SIZES, ZOO[name].default_size}))


def _count(name: str, size: int, **kwargs: object) -> ModelStats:
    return count_configs([name], [size], **kwargs)[0]


def _size_fields(name: str, size: int, memory: bool = True) -> dict[str, object]:
    """The fields of the model's :class:`SizeData` at ``size``; with ``memory=False``, all but the memory
    predictions (the validation task predicts those configurations already, see :func:`_memory_errors`)."""
    layers = _count(name, size)
    depth = FOLD_DEPTH.get(name)
    # counted and timed in one meta pass per step
    inference, time_inference = count_and_predict_step(name, size, BATCH, gpu=GPU, dtype=DTYPE)
    train, time_train = count_and_predict_step(name, size, BATCH, train=True, gpu=GPU, dtype=DTYPE,
                                               optimizer=OPTIMIZER)
    fields = dict(size=size, table=fold(layers, depth) if depth else layers, layers=layers, inference=inference,
                  train=train, time_inference=time_inference, time_train=time_train)
    if memory:
        fields.update(memory_inference=predict_config(name, size, BATCH, gpu=GPU),
                      memory_train=predict_config(name, size, BATCH, train=True, gpu=GPU))
    return fields


def _validated_configs() -> set[tuple[str, int]]:
    """The (model, size) pairs whose inference and training step at :data:`BATCH` on :data:`GPU` the committed
    reference measured: the validation traces them, and its predictions are the reports'."""
    if GPU != REFERENCE_GPU:
        return set()
    runs = {(r.model, r.size, r.train) for r in reference_runs() if r.batch == BATCH}
    return {(model, size) for model, size, train in runs if train and (model, size, False) in runs}


Predictions = dict[tuple[str, int, bool], MemoryResult]


def _memory_errors() -> tuple[tuple[RunErrors, ...], tuple[Sensitivity, ...], Predictions]:
    """The memory prediction against every committed run, each run's workspace sensitivity, and the prediction of
    each run's configuration: one task, so that all three replay the step traces this process recorded once."""
    runs = reference_runs()
    return (validate(), tuple(workspace_sensitivity(run) for run in runs),
            {(run.model, run.size, run.train): reference_prediction(run) for run in runs if run.batch == BATCH})


def _pointwise_params(name: str, size: int) -> int:
    """Parameters (weights and biases) of the model's 1×1 convolutions."""
    model = build(resolve(name), size)
    return sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
               for p in m.parameters())


def _smallest(name: str) -> int | None:
    return smallest_input_size(resolve(name))


def _googlenet_avoided(google: ModelStats, alexnet: ModelStats) -> dict[str, LayerStats]:
    """Exercise 7.4.3, at 224: the layers GoogLeNet does without, counted where it would have them — "flattened
    head", AlexNet's first fully connected layer (its width) on GoogLeNet's flattened last map (the output of
    ``b5.1``); "direct 3×3", the 3×3 convolution of the first Inception block's second path (``b3.0.p2_2``) applied
    straight to the block's input (the output of ``b2.4``) instead of after its 1×1 reduction."""
    shapes = {layer.name: layer.output_shape for layer in google.layers}
    width = next(layer for layer in alexnet.layers if layer.type == "Linear").output_shape[1]
    flat = math.prod(shapes["b5.1"][1:])
    block_input = shapes["b2.4"]
    conv = nn.Conv2d(block_input[1], shapes["b3.0.p2_2"][1], 3, padding=1, device="meta")
    return {"flattened head": count_layer(nn.Linear(flat, width, device="meta"), (1, flat)),
            "direct 3×3": count_layer(conv, block_input)}


def _preload() -> None:
    """Import here what torch's meta kernels import on their first call (``torch._check`` → symbolic shapes, sympy;
    ``torch._dynamo`` too, unless the CLI put its stand-in in place, see
    :func:`~profiler.counting.dynamo_import_skipped`), so that the forked workers inherit it instead of each
    importing it again."""
    import torch._dynamo  # noqa: F401
    import torch.fx.experimental.symbolic_shapes  # noqa: F401


def collect() -> ReportData:
    """Count and predict every configuration the reports show, and read the committed measurements. The pieces are
    independent and deterministic; they are computed on every core (:func:`~profiler.util.parallel.run_all`)."""
    _preload()
    sizes = [(entry.name, size) for entry in ZOO.values() for size in report_sizes(entry.name)]
    validated = _validated_configs()
    # the longest pieces first (validation traces 24 steps; torchvision's AlexNet imports torchvision, and with it
    # torch._dynamo; the zoo ends with its largest models), so that no worker is left with one of them at the end
    tasks: dict[object, tuple] = {
        "memory_errors": (_memory_errors, (), {}),
        "torchvision_alexnet": (_count, ("torchvision:alexnet", 224), {}),
        **{pair: (_size_fields, pair, dict(memory=pair not in validated)) for pair in reversed(sizes)},
        **{f"alexnet_batch_{b}": (predict_config, ("alexnet", 224, b), dict(train=True, gpu=GPU))
           for b in ALEXNET_BATCHES},
        "densenet_small": (predict_config, ("densenet", DENSENET_SMALL_SIZE, BATCH), dict(train=True, gpu=GPU)),
        **{f"densenet_saver_{label}": (predict_config, ("densenet", 224, BATCH), dict(train=True, gpu=GPU, **options))
           for label, options in DENSENET_SAVERS.items()},
        "nin_three_channels": (_count, ("nin", 224), dict(channels=3)),
        **{f"smallest_{name}": (_smallest, (name,), {}) for name in CHAPTER7},
        **{f"pointwise_{name}": (_pointwise_params, (name, 224), {}) for name in CHAPTER7},
    }
    with frozen_heap():
        extra = dict(zip(tasks, run_all(list(tasks.values())), strict=True))
    predicted = extra["memory_errors"][2]
    for name, size in validated:
        extra[name, size].update(memory_inference=predicted[name, size, False],
                                 memory_train=predicted[name, size, True])
    for pair in sizes:
        extra[pair] = SizeData(**extra[pair])
    models = {entry.name: ModelData(entry.name, entry.family, entry.source, FOLD_DEPTH.get(entry.name),
                                    {size: extra[entry.name, size] for size in report_sizes(entry.name)},
                                    entry.default_size)
              for entry in ZOO.values()}
    smallest = {name: extra[f"smallest_{name}"] for name in CHAPTER7}
    return ReportData(
        models=models,
        measured=load_measurements(DATA_DIR),
        memory_errors=extra["memory_errors"][0],
        memory_sensitivity=extra["memory_errors"][1],
        measured_times=load_gpu_bandwidth(DATA_DIR),
        alexnet_batches={b: extra[f"alexnet_batch_{b}"] for b in ALEXNET_BATCHES},
        densenet_small=extra["densenet_small"],
        densenet_savers={label: extra[f"densenet_saver_{label}"] for label in DENSENET_SAVERS},
        nin_three_channels=extra["nin_three_channels"],
        smallest_sizes=smallest,
        googlenet_smallest=_count("googlenet", smallest["googlenet"] or 1),
        pointwise_params={name: extra[f"pointwise_{name}"] for name in CHAPTER7},
        torchvision_alexnet=extra["torchvision_alexnet"],
        googlenet_avoided=_googlenet_avoided(models["googlenet"].sizes[224].layers,
                                             models["alexnet"].sizes[224].layers),
    )
