"""Device peaks: measured once per device by a short calibration, cached by device name, shown beside the datasheet
(the catalogue's, :mod:`profiler.catalogue`).

Calibration (fp32 throughout):

* **bandwidth**: copy a large buffer into another (device-to-device on a GPU, host memory on the CPU); bytes/s count
  the read *and* the write (2 × buffer size per copy). The best of several timed batches of copies is kept.
* **FP32 FLOP/s**: a large square matmul with TF32 off (``torch.set_float32_matmul_precision("highest")``), 2·n³ FLOPs.
* **TF32 FLOP/s** (CUDA only): the same matmul with TF32 on (precision "high"), and a large convolution with cuDNN's
  default settings (``torch.backends.cudnn.allow_tf32`` is True by default, so cuDNN uses TF32 tensor cores);
  2 × MACs FLOPs, as the static counter counts.

The user cache is ``$PROFILER_CACHE_DIR/peaks.json`` (default ``~/.cache/profiler/peaks.json``; ``XDG_CACHE_HOME``
is honoured), keyed by device name; delete it to measure again. ``benchmarks/gpu_bandwidth.py`` commits a copy per
GPU as ``reports/data/peaks_<device>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from profiler.bandwidth.records import DevicePeaks
from profiler.errors import ProfilerError
from profiler.util.files import write_atomic

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


def load_cached(device_name: str, path: Path | None = None) -> DevicePeaks | None:
    """The cached peaks of ``device_name``, or None when there are none (a damaged cache counts as none)."""
    path = path or cache_file()
    try:
        entry = json.loads(path.read_text()).get(device_name)
        return peaks_from_json(entry) if entry else None
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
    existing[peaks.device] = peaks_json(peaks)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(dict(sorted(existing.items())), indent=2) + "\n")
    except (OSError, ProfilerError) as err:
        return f"peaks not cached ({path}: {err})"
    return None


def device_peaks(device: torch.device, device_name: str, provenance: dict[str, Any],
                 path: Path | None = None) -> tuple[DevicePeaks, str]:
    """The device's peaks and where they came from: the cache if it has this device, else a calibration now
    (then cached)."""
    path = path or cache_file()
    cached = load_cached(device_name, path)
    if cached is not None:
        return cached, f"from the cache {path}, measured {cached.provenance.get('date', 'at an unknown date')}"
    measure = measure_cuda_peaks if device.type == "cuda" else measure_cpu_peaks
    peaks = measure(device, device_name, provenance)
    problem = save_cached(peaks, path)
    return peaks, f"measured now; {problem or f'cached in {path}'}"


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


def measure_cpu_peaks(device: torch.device, device_name: str, provenance: dict[str, Any]) -> DevicePeaks:
    """Calibrate the CPU with torch at its current thread count: a 64 MiB copy and a 1024² fp32 matmul (well
    under a second). These are CPU peaks, labelled so; no GPU figure comes from them."""
    nbytes, n = 64 << 20, 1024
    copy = _copy_rate(device, nbytes, lambda: None, _cpu_timer, repeats=4, batches=3)
    fp32 = _matmul_rate(device, n, "highest", lambda: None, _cpu_timer, repeats=3, batches=3)
    method = (f"host-memory copy of {nbytes >> 20} MiB (read + write counted) and {n}×{n} fp32 matmul, "
              f"torch at {torch.get_num_threads()} thread(s) ({platform.machine()})")
    return DevicePeaks(device=device_name, kind="cpu", copy_bytes_per_s=copy, fp32_flops_per_s=fp32, method=method,
                       provenance=provenance)
