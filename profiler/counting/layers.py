"""Counting one layer on its own, by the same rules as a whole model: what a layer a model does *not* have would
cost (the fully connected head it avoids, the convolution a 1×1 reduction replaces), without a hand formula."""

from __future__ import annotations

from torch import nn

from profiler.counting.counter import count_model
from profiler.counting.records import LayerStats


def count_layer(layer: nn.Module, input_shape: tuple[int, ...]) -> LayerStats:
    """The row ``layer`` would have in a model where it receives an input of ``input_shape``: its parameters and
    their bytes, MACs, other ops and bytes moved of one inference forward, under the conventions of
    :mod:`profiler.counting.rules`. The layer is counted on the meta device (moved there if built elsewhere), so
    nothing is allocated or computed. A container's rows are summed into one."""
    stats = count_model(layer.to("meta"), input_shape, name=type(layer).__name__)
    row = LayerStats(name=type(layer).__name__, type=type(layer).__name__, output_shape=stats.layers[-1].output_shape,
                     params=stats.params, param_bytes=stats.param_bytes)
    row.add(stats.totals)
    return row
