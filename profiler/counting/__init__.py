"""Static cost analysis on meta tensors: per-op rules (:mod:`.rules`), per-layer attribution (:mod:`.counter`), every
configuration of a command (:func:`count_configs`)."""

from profiler.counting.configs import count_configs
from profiler.counting.counter import count_model, dynamo_import_skipped
from profiler.counting.layers import count_layer
from profiler.counting.records import Counts, LayerStats, ModelStats
from profiler.counting.rules import (
    CONVENTIONS,
    OTHER_OPS_CONVENTIONS,
    OpCost,
    conventions,
    op_cost,
    other_ops_conventions,
)

__all__ = ["CONVENTIONS", "OTHER_OPS_CONVENTIONS", "Counts", "LayerStats", "ModelStats", "OpCost", "conventions",
           "count_configs", "count_layer", "count_model", "dynamo_import_skipped", "op_cost", "other_ops_conventions"]
