"""Peak GPU memory: predicted anywhere from a meta-device trace (:mod:`.trace`) replayed through a model of the CUDA
caching allocator (:mod:`.allocator`, :mod:`.predict`), and measured on CUDA or the CPU (:mod:`.measure`)."""

from profiler.memory.records import MemoryResult

__all__ = ["MemoryResult"]
