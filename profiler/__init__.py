"""profiler: what a CNN costs — parameters, MACs, FLOPs, bytes moved, memory and time, layer by layer.

The Python API (:mod:`profiler.api`)::

    import profiler
    profiler.count("nin", size=224)                      # ModelStats: per-layer params, MACs, FLOPs, bytes
    profiler.peak_memory("densenet", train=True)         # MemoryResult: peak memory, breakdown, fit verdict
    profiler.layer_times("alexnet", gpu="h200")          # BandwidthResult: time per layer (predicted without CUDA)
    profiler.gpus()                                      # the catalogue of cards

Each record has ``to_dict()`` (what ``--format json`` prints for it).
"""

from profiler.errors import ProfilerError

__version__ = "0.2.0"
__all__ = ["ProfilerError", "__version__", "count", "gpus", "layer_times", "peak_memory"]


def __getattr__(name: str):  # the API imports torch: only when it is asked for, so `--version` and `--help` stay fast
    if name in ("count", "peak_memory", "layer_times", "gpus"):
        from profiler import api

        return getattr(api, name)
    raise AttributeError(f"module 'profiler' has no attribute {name!r}")
