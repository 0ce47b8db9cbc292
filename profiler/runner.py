"""Glue between the command line and the analyzers: resolve names, build models, run the counter per config."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from profiler.counting import ModelStats, count_model, dynamo_import_skipped
from profiler.models import ZOO, ModelSpec, build, resolve
from profiler.models.loading import ForwardFailed, explain
from profiler.step import DTYPES


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
