"""Glue between the command line and the analyzers: resolve names, build models, run the counter per config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from profiler.counting import ModelStats, count_model
from profiler.models import ZOO, build, resolve
from profiler.models.loading import ForwardFailed, explain


def count_configs(names: Sequence[str], sizes: Sequence[int] | None, batch: int = 1, channels: int | None = None,
                  classes: int | None = None, train: bool = False, depth: int | None = None) -> list[ModelStats]:
    """Count every (model, size) pair, models in the given order; sizes default to each model's own."""
    results = []
    for name in names:
        spec = resolve(name)
        for size in sizes or [spec.default_size]:
            model = build(spec, size, channels, classes)
            try:
                stats = count_model(model, spec.input_shape(batch, size, channels), name=spec.name, train=train,
                                    depth=depth)
            except ForwardFailed as failure:
                raise explain(spec, size, channels, classes, failure) from None
            stats.source = spec.source
            results.append(stats)
    return results


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
