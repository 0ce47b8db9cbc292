"""Time and bandwidth per layer: torch.profiler kernels (or CPU time) attributed to layers, NVML sampling, device
peak calibration, and the records the formatters and the roofline read.

``run_bandwidth`` (:mod:`profiler.bandwidth.runner`) is the entry point; :mod:`~profiler.bandwidth.timing` says how
time is charged to layers, :mod:`~profiler.bandwidth.peaks` how peaks are measured, :mod:`~profiler.bandwidth.nvml`
what NVML samples.
"""

from profiler.bandwidth.records import BandwidthResult, DevicePeaks, LayerTiming

__all__ = ["BandwidthResult", "DevicePeaks", "LayerTiming"]
