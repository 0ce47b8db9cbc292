"""Glue between the command line and the analyzers: resolve names, build models, run the counter per config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from profiler.counting import ModelStats, count_model, dynamo_import_skipped
from profiler.errors import ProfilerError
from profiler.kinds import Mode
from profiler.models import ZOO, ModelSpec, build, resolve
from profiler.models.loading import ForwardFailed, explain
from profiler.step import DTYPES

if TYPE_CHECKING:
    from profiler.bandwidth.records import BandwidthResult


def count_configs(names: Sequence[str], sizes: Sequence[int] | None, batch: int = 1, channels: int | None = None,
                  classes: int | None = None, train: bool = False, depth: int | None = None,
                  dtype: str = "float32", fast_start: bool = False) -> list[ModelStats]:
    """Count every (model, size) pair, models in the given order; sizes default to each model's own.

    ``fast_start`` (the CLI's choice) skips importing ``torch._dynamo`` when every model is from the zoo — see
    :func:`~profiler.counting.dynamo_import_skipped`; torchvision and user code may need the real one."""
    specs = [resolve(name) for name in names]
    skip = fast_start and not any(spec.external for spec in specs)
    with dynamo_import_skipped() if skip else nullcontext():
        return [_count(spec, size, batch, channels, classes, train, depth, dtype)
                for spec in specs for size in sizes or [spec.default_size]]


def _count(spec: ModelSpec, size: int, batch: int, channels: int | None, classes: int | None, train: bool,
           depth: int | None, dtype: str) -> ModelStats:
    model = build(spec, size, channels, classes)
    try:
        stats = count_model(model, spec.input_shape(batch, size, channels), name=spec.name, train=train, depth=depth,
                            dtype=DTYPES[dtype])
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None
    stats.source = spec.source
    return stats


@dataclass(frozen=True)
class ZooRow:
    """One line of ``python -m profiler models``."""

    name: str
    aliases: tuple[str, ...]
    family: str
    source: str
    default_size: int
    params: int


def zoo_listing() -> list[ZooRow]:
    """Every zoo model with its parameter count at its default size (1 channel, 10 classes)."""
    rows = []
    for entry in ZOO.values():
        model = build(resolve(entry.name), entry.default_size)
        rows.append(ZooRow(entry.name, entry.aliases, entry.family, entry.source, entry.default_size,
                           sum(p.numel() for p in model.parameters())))
    return rows


def bandwidth_results(args: argparse.Namespace) -> list[BandwidthResult]:
    """``python -m profiler bandwidth``: measured where CUDA is (or on ``--device``), else predicted for ``--gpu``
    (``--predict`` forces it; a note on stderr says when the missing GPU chose it). Measured runs take the default
    optimizer and dtype only (the measured step is being rewritten); ``--gpu``/``--gpu-memory`` are for predictions.
    With ``--gpu-memory``, each prediction gets a note saying whether the memory model's predicted peak reserved
    memory of the step fits."""
    from profiler.device import cuda_available

    predict = args.predict or (args.device is None and not cuda_available())
    if not predict:
        from profiler.bandwidth.runner import run_bandwidth

        if args.gpu or args.gpu_memory:
            raise ProfilerError("--gpu and --gpu-memory name the card a prediction is for; add --predict (a measured "
                                "run times the device at hand)")
        if args.optimizer != "sgd" or args.dtype != "float32":
            raise ProfilerError("measured bandwidth runs take --optimizer sgd and --dtype float32 only for now; add "
                                "--predict to predict other optimizers and dtypes")
        return run_bandwidth(args.models, args.size, batch=args.batch, channels=args.channels, classes=args.classes,
                             train=args.train, steps=args.steps, warmup=args.warmup, device=args.device,
                             remeasure_peaks=args.remeasure_peaks)
    if args.remeasure_peaks:
        raise ProfilerError("--remeasure-peaks calibrates the device a measured run times; a prediction uses the "
                            "card's datasheet: drop --remeasure-peaks, or --predict (and add --device cpu where "
                            "there is no GPU)")
    from profiler.bandwidth.predict import run_predicted
    from profiler.gpus import DEFAULT_GPU, gpu_spec, parse_bytes

    card = gpu_spec(args.gpu or DEFAULT_GPU)
    budget = parse_bytes(args.gpu_memory) if args.gpu_memory else None
    results = run_predicted(args.models, args.size, batch=args.batch, channels=args.channels, classes=args.classes,
                            train=args.train, gpu=card.key, dtype=args.dtype, optimizer=args.optimizer,
                            fast_start=True)
    if budget is not None:
        for result in results:
            result.notes.append(memory_fit_note(result, card.key, budget, args.channels, args.classes))
    if not args.predict:  # said once it succeeded, so that a user error stays the only line on stderr
        sys.stderr.write(f"profiler: no CUDA device here: predicted for {card.name} (--gpu; nothing ran on a GPU); "
                         "--device cpu measures the CPU instead\n")
    return results


def memory_fit_note(result: BandwidthResult, gpu: str, budget_bytes: int, channels: int | None,
                    classes: int | None) -> str:
    """Whether the predicted peak reserved memory of ``result``'s step (:mod:`profiler.memory`) fits
    ``budget_bytes``, in one line."""
    from profiler.memory.runner import predict_config
    from profiler.util.units import human_bytes

    memory = predict_config(result.model, result.input_shape[-1], result.input_shape[0], channels, classes,
                            train=result.mode == Mode.TRAIN, optimizer=result.optimizer or "sgd",
                            dtype=result.dtype, gpu=gpu)
    fits = memory.peak_reserved_bytes <= budget_bytes
    return (f"memory: predicted peak reserved {human_bytes(memory.peak_reserved_bytes)} "
            f"{'fits' if fits else 'does not fit'} --gpu-memory {human_bytes(budget_bytes)}"
            f"{'' if fits else ': this step would run out of memory'} (python -m profiler memory --predict)")
