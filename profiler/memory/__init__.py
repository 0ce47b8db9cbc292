"""Peak GPU memory: predicted anywhere from a meta-device trace (:mod:`.trace`) replayed through a model of the CUDA
caching allocator (:mod:`.allocator`, :mod:`.predict`) with cuDNN workspaces (:mod:`.workspaces`, coefficients in
:mod:`.calibration`), and measured on CUDA or the CPU (:mod:`.measure`). Every prediction carries a fit verdict for
its GPU (:mod:`.verdict`); :mod:`.validation` measures the prediction against the committed runs, in-sample and
leave-one-model-out, and derives the verdict's margin."""

from profiler.memory.records import MemoryResult

__all__ = ["MemoryResult"]
