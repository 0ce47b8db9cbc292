"""Static cost analysis on meta tensors: per-op rules (:mod:`.rules`), per-layer attribution (:mod:`.counter`)."""

from profiler.counting.counter import count_model, dynamo_import_skipped
from profiler.counting.layers import count_layer
from profiler.counting.records import Counts, LayerStats, ModelStats
from profiler.counting.rules import OTHER_OPS_CONVENTIONS, OpCost, op_cost

__all__ = ["OTHER_OPS_CONVENTIONS", "Counts", "LayerStats", "ModelStats", "OpCost", "count_layer", "count_model",
           "dynamo_import_skipped",
           "op_cost"]
