"""Device peaks: measured once per device by a short calibration, cached by device name, shown beside the datasheet
(the catalogue's, :mod:`profiler.catalogue`).

Calibration (fp32 throughout):

* **bandwidth**: copy a large buffer into another (device-to-device on a GPU, host memory on the CPU); bytes/s count
  the read *and* the write (2 × buffer size per copy). The best of several timed batches of copies is kept.
* **FP32 FLOP/s**: on a GPU a large square matmul with TF32 off (``torch.set_float32_matmul_precision("highest")``),
  2·n³ FLOPs. On the CPU the best of the convolutions and matmuls of :data:`CPU_KERNELS` (the kernels the zoo's layers
  run, at sizes they run fast), each the best of a few timed batches at torch's thread count: CPU libraries reach
  very different rates on the two (oneDNN's convolutions twice the BLAS matmul's on an AVX-512 EPYC), and a roof
  that a layer beats is no roof.
* **TF32 FLOP/s** (CUDA only): the same matmul with TF32 on (precision "high"), and a large convolution with cuDNN's
  default settings (``torch.backends.cudnn.allow_tf32`` is True by default, so cuDNN uses TF32 tensor cores);
  2 × MACs FLOPs, as the static counter counts.

The user cache is ``$PROFILER_CACHE_DIR/peaks.json`` (default ``~/.cache/profiler/peaks.json``; ``XDG_CACHE_HOME``
is honoured), keyed by device name (on the CPU the name carries the thread count) and tagged with
:data:`CALIBRATION_VERSION`; every output says when its peaks were reused from it, and ``--remeasure-peaks``
measures them again. ``benchmarks/gpu_bandwidth.py`` commits a copy per GPU as ``reports/data/peaks_<device>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from profiler.bandwidth.records import DevicePeaks, LayerTiming
from profiler.errors import ProfilerError
from profiler.kinds import OpClass
from profiler.util.files import write_atomic
from profiler.util.units import human_bytes

CACHE_ENV = "PROFILER_CACHE_DIR"


def cache_file() -> Path:
    """Where measured peaks are cached: ``$PROFILER_CACHE_DIR/peaks.json``, else the XDG cache folder."""
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        folder = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "profiler")
    return Path(folder) / "peaks.json"


def device_slug(device_name: str) -> str:
    """A file-name-safe form of a device name: "NVIDIA H100 80GB HBM3" → "nvidia_h100_80gb_hbm3"."""
    return re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")


def peaks_from_json(obj: dict[str, Any]) -> DevicePeaks:
    """A :class:`DevicePeaks` from its JSON object (as written by :func:`peaks_json`)."""
    return DevicePeaks(**obj)


def peaks_json(peaks: DevicePeaks) -> dict[str, Any]:
    """The JSON object of measured peaks."""
    return asdict(peaks)


#: The calibration's version, stored with each cached entry: an entry made by another calibration (the CPU's was a
#: 1024² matmul alone before version 2) is measured again rather than reused.
CALIBRATION_VERSION = 2
VERSION_KEY = "calibration_version"


def load_cached(device_name: str, path: Path | None = None) -> DevicePeaks | None:
    """The cached peaks of ``device_name``, or None when there are none or they come from another calibration
    (:data:`CALIBRATION_VERSION`); a damaged cache counts as none."""
    path = path or cache_file()
    try:
        entry = dict(json.loads(path.read_text()).get(device_name) or {})
        if entry.pop(VERSION_KEY, None) != CALIBRATION_VERSION:
            return None
        return peaks_from_json(entry)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def save_cached(peaks: DevicePeaks, path: Path | None = None) -> str | None:
    """Add ``peaks`` to the cache under its device name; returns None, or why the cache could not be written."""
    path = path or cache_file()
    try:
        existing = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(existing, dict):
            existing = {}
    except (OSError, ValueError):
        existing = {}
    existing[peaks.device] = {**peaks_json(peaks), VERSION_KEY: CALIBRATION_VERSION}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(dict(sorted(existing.items())), indent=2) + "\n")
    except (OSError, ProfilerError) as err:
        return f"peaks not cached ({path}: {err})"
    return None


def device_peaks(device: torch.device, device_name: str, provenance: dict[str, Any],
                 path: Path | None = None, remeasure: bool = False) -> tuple[DevicePeaks, str]:
    """The device's peaks and where they came from, in words: the cache if it has this device (and ``remeasure``
    is False), else a calibration now (then cached)."""
    path = path or cache_file()
    cached = None if remeasure else load_cached(device_name, path)
    if cached is not None:
        date = cached.provenance.get("date", "at an unknown date")
        return cached, (f"reused from the cache {path}, measured {date} by an earlier run (--remeasure-peaks "
                        "measures them again)")
    measure = measure_cuda_peaks if device.type == "cuda" else measure_cpu_peaks
    peaks = measure(device, device_name, provenance)
    problem = save_cached(peaks, path)
    return peaks, f"measured now{' (--remeasure-peaks)' if remeasure else ''}; {problem or f'cached in {path}'}"


def _best_rate(work: Callable[[], None], amount: float, sync: Callable[[], None], repeats: int, batches: int,
               timer: Callable[[Callable[[], None], int], float]) -> float:
    """The best ``amount`` per second over ``batches`` timed batches of ``repeats`` calls (after one warm-up)."""
    work()
    sync()
    return max(amount * repeats / timer(work, repeats) for _ in range(batches))


def _cuda_timer(work: Callable[[], None], repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        work()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def _cpu_timer(work: Callable[[], None], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return time.perf_counter() - start


def _copy_rate(device: torch.device, nbytes: int, sync: Callable[[], None], timer: Callable[..., float],
               repeats: int, batches: int) -> float:
    """Bytes/s of copying an ``nbytes`` buffer into another on ``device``, read + write counted."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return _best_rate(lambda: dst.copy_(src), 2.0 * nbytes, sync, repeats, batches, timer)


def _matmul_rate(device: torch.device, n: int, precision: str, sync: Callable[[], None],
                 timer: Callable[..., float], repeats: int, batches: int) -> float:
    """FLOP/s of an n×n fp32 matmul (2·n³ FLOPs) at float32 matmul ``precision`` ("highest": no TF32)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        return _best_rate(lambda: torch.mm(a, b, out=out), 2.0 * n**3, sync, repeats, batches, timer)
    finally:
        torch.set_float32_matmul_precision(previous)


#: The calibration convolution: batch, channels in = out, height = width (3×3, padding 1, no bias).
CONV_SHAPE = (128, 256, 56)


def _conv_rate(device: torch.device, sync: Callable[[], None], timer: Callable[..., float]) -> float:
    """FLOP/s (2 × MACs) of a 3×3 convolution of :data:`CONV_SHAPE` with cuDNN's current settings."""
    batch, channels, size = CONV_SHAPE
    x = torch.randn(batch, channels, size, size, device=device)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False, device=device)
    flops = 2.0 * batch * channels * channels * 9 * size * size
    with torch.no_grad():
        return _best_rate(lambda: conv(x), flops, sync, repeats=10, batches=3, timer=timer)


def measure_cuda_peaks(device: torch.device, device_name: str, provenance: dict[str, Any]) -> DevicePeaks:
    """Calibrate a CUDA device (module docstring): a few seconds."""
    sync = torch.cuda.synchronize
    free, _total = torch.cuda.mem_get_info(device)
    nbytes = min(1 << 30, free // 8) // 4 * 4
    n = 8192
    copy = _copy_rate(device, nbytes, sync, _cuda_timer, repeats=20, batches=5)
    fp32 = _matmul_rate(device, n, "highest", sync, _cuda_timer, repeats=5, batches=3)
    tf32 = _matmul_rate(device, n, "high", sync, _cuda_timer, repeats=20, batches=3)
    conv = _conv_rate(device, sync, _cuda_timer)
    torch.cuda.empty_cache()
    batch, channels, size = CONV_SHAPE
    method = (f"device-to-device copy of {nbytes / 2**20:.0f} MiB (read + write counted), best of 5 batches of 20; "
              f"{n}×{n} fp32 matmul with TF32 off (precision 'highest') and on ('high'); 3×3 convolution "
              f"{batch}×{channels}×{size}×{size} → {channels} channels with cuDNN's settings "
              f"(allow_tf32={torch.backends.cudnn.allow_tf32}, benchmark={torch.backends.cudnn.benchmark})")
    return DevicePeaks(device=device_name, kind="cuda", copy_bytes_per_s=copy, fp32_flops_per_s=fp32,
                       tf32_flops_per_s=tf32, conv_flops_per_s=conv, method=method, provenance=provenance)


@dataclass(frozen=True)
class CpuKernel:
    """One compute kernel of the CPU calibration: a matmul (m, k, n) or a forward convolution (batch, channels in,
    channels out, kernel, height = width; stride 1, "same" padding, no bias), fp32, as the zoo's layers run them."""

    op: OpClass                 # OpClass.MATMUL or OpClass.CONV_FORWARD
    shape: tuple[int, ...]

    @property
    def flops(self) -> float:
        """2 × MACs, as the static counter counts."""
        if self.op is OpClass.MATMUL:
            m, k, n = self.shape
            return 2.0 * m * k * n
        batch, c_in, c_out, kernel, size = self.shape
        return 2.0 * batch * c_in * c_out * kernel * kernel * size * size

    @property
    def label(self) -> str:
        if self.op is OpClass.MATMUL:
            m, k, n = self.shape
            return f"matmul {m}×{k} @ {k}×{n}"
        batch, c_in, c_out, kernel, size = self.shape
        return f"{kernel}×{kernel} conv {batch}×{c_in}×{size}×{size} → {c_out}"

    def work(self) -> Callable[[], Any]:
        """One call of the kernel on fresh random fp32 operands (no autograd)."""
        if self.op is OpClass.MATMUL:
            m, k, n = self.shape
            a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
            return lambda: torch.mm(a, b, out=out)
        batch, c_in, c_out, kernel, size = self.shape
        x = torch.randn(batch, c_in, size, size)
        weight = torch.randn(c_out, c_in, kernel, kernel)
        return lambda: torch.nn.functional.conv2d(x, weight, padding=kernel // 2)


#: The CPU calibration's compute kernels: the matrix products and convolutions of the zoo's layers at the sizes
#: where a CPU runs them fastest. A CPU library runs convolutions and matmuls at very different fractions of the
#: core's peak (here oneDNN's convolutions reach twice the FP32 rate of the BLAS matmul), so the FP32 roof is the
#: best of them all: a roof that a layer beats is no roof.
CPU_KERNELS = (
    CpuKernel(OpClass.MATMUL, (1024, 1024, 1024)),
    CpuKernel(OpClass.MATMUL, (128, 4096, 1024)),      # a classifier layer (AlexNet, VGG) at batch 128
    CpuKernel(OpClass.CONV_FORWARD, (8, 96, 256, 5, 12)),      # NiN's and AlexNet's second convolution
    CpuKernel(OpClass.CONV_FORWARD, (8, 128, 128, 3, 28)),     # VGG, ResNet, DenseNet 3×3 convolutions
    CpuKernel(OpClass.CONV_FORWARD, (8, 256, 256, 3, 14)),
    CpuKernel(OpClass.CONV_FORWARD, (8, 256, 256, 1, 28)),     # NiN, GoogLeNet, DenseNet 1×1 convolutions
)
#: Seconds one timed batch of calls of a CPU kernel lasts (about): long enough to time, short enough that several
#: batches catch a quiet moment on a busy machine, and the calibration takes about a second.
CPU_BATCH_S = 0.025


#: Timed batches per CPU kernel, taken in rounds over all the kernels, so that each kernel's batches spread over the
#: whole calibration: a busy moment on a shared machine slows one batch of each kernel, not every batch of one.
CPU_ROUNDS = 5


def _cpu_kernel_rates(kernels: tuple[CpuKernel, ...], rounds: int = CPU_ROUNDS) -> dict[str, float]:
    """FLOP/s of each kernel by its label: the best of ``rounds`` timed batches of calls, each about
    :data:`CPU_BATCH_S` long, one batch of every kernel per round."""
    prepared = []
    with torch.no_grad():
        for kernel in kernels:
            work = kernel.work()
            started = time.perf_counter()
            work()  # warm-up; also times one call, to size the batches
            prepared.append((kernel, work, max(1, round(CPU_BATCH_S / (time.perf_counter() - started)))))
        best = dict.fromkeys((kernel.label for kernel in kernels), 0.0)
        for _ in range(rounds):
            for kernel, work, repeats in prepared:
                best[kernel.label] = max(best[kernel.label], kernel.flops * repeats / _cpu_timer(work, repeats))
    return best


def measure_cpu_peaks(device: torch.device, device_name: str, provenance: dict[str, Any]) -> DevicePeaks:
    """Calibrate the CPU with torch at its current thread count (about a second): a 64 MiB copy, and the FP32 roof
    as the best FLOP/s of :data:`CPU_KERNELS`, each named with its rate in ``method``. These are CPU peaks,
    labelled so; no GPU figure comes from them."""
    nbytes = 64 << 20
    copy = _copy_rate(device, nbytes, lambda: None, _cpu_timer, repeats=4, batches=3)
    rates = _cpu_kernel_rates(CPU_KERNELS)
    best = max(rates, key=rates.__getitem__)
    measured = ", ".join(f"{label} {rate / 1e9:.0f}" for label, rate in rates.items())
    method = (f"host-memory copy of {nbytes >> 20} MiB (read + write counted); FP32 roof = the best of "
              f"{len(rates)} convolutions and matmuls, {best} (GFLOP/s: {measured}); torch at "
              f"{torch.get_num_threads()} thread(s) ({platform.machine()})")
    return DevicePeaks(device=device_name, kind="cpu", copy_bytes_per_s=copy, fp32_flops_per_s=rates[best],
                       method=method, provenance=provenance)


#: How far above a measured roof a layer may land before the output says so (timing noise of a short run).
ROOF_TOLERANCE = 1.05


def _above(rows: list[LayerTiming], fraction: Callable[[LayerTiming], float | None]) -> tuple[list[LayerTiming], str]:
    """The rows whose ``fraction`` of a roof exceeds :data:`ROOF_TOLERANCE`, highest first, and the first four of
    them in words ("2.0 Conv2d 131 %, ...")."""
    above = sorted((r for r in rows if (fraction(r) or 0.0) > ROOF_TOLERANCE), key=lambda r: -(fraction(r) or 0.0))
    shown = ", ".join(f"{r.name} {r.type} {100 * (fraction(r) or 0.0):.0f} %" for r in above[:4])
    return above, shown + (f" and {len(above) - 4} more" if len(above) > 4 else "")


def beyond_roof_notes(rows: list[LayerTiming], cuda: bool) -> list[str]:
    """Notes naming the rows whose achieved rate lies more than :data:`ROOF_TOLERANCE` above a measured roof, and
    why: a compute roof beaten means the calibration ran slower than the layer (a busy machine, most likely: the
    note says to measure again); a copy bandwidth beaten means the layer's tensors stayed in the caches, since
    counted bytes assume every tensor crosses DRAM."""
    notes = []
    compute, shown = _above(rows, lambda r: r.compute_peak_fraction)
    if compute:
        notes.append(f"{len(compute)} layer(s) ran above the measured compute roof ({shown} of it): the calibration "
                     "ran slower than these layers did, most likely because the machine was busy while it ran; "
                     "measure the peaks again on a quiet machine (--remeasure-peaks)")
    cached, shown = _above(rows, lambda r: r.bandwidth_peak_fraction)
    if cached:
        caches = "the GPU's L2 cache" if cuda else "the CPU's caches"
        notes.append(f"{len(cached)} layer(s) moved their counted bytes faster than the measured copy bandwidth "
                     f"({shown} of it; at most {human_bytes(max(r.bytes or 0 for r in cached))} counted): their "
                     f"tensors stayed in {caches}, while counted bytes assume every tensor crosses DRAM, so their "
                     "% peak B/s is not a DRAM figure")
    return notes
