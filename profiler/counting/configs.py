"""Counting every configuration of a command: resolve the names, build each model on meta, count it."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

from profiler.counting.counter import count_model, dynamo_import_skipped
from profiler.counting.records import ModelStats
from profiler.models import ModelSpec, build, resolve
from profiler.models.loading import ForwardFailed, explain
from profiler.step import DTYPES


def count_configs(names: Sequence[str | ModelSpec], sizes: Sequence[int] | None = None, batch: int = 1,
                  channels: int | None = None, classes: int | None = None, train: bool = False,
                  depth: int | None = None, dtype: str = "float32", fast_start: bool = False) -> list[ModelStats]:
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
        return count_model(model, spec.input_shape(batch, size, channels), name=spec.name, train=train, depth=depth,
                           dtype=DTYPES[dtype], model_source=spec.source)
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None
