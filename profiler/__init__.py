"""profiler: what a CNN costs — parameters, MACs, FLOPs, bytes moved, memory and time, layer by layer."""

from profiler.errors import ProfilerError

__version__ = "0.1.0"
__all__ = ["ProfilerError", "__version__"]
