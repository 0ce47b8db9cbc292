"""The GPUs a prediction can target, and what their libraries allocate beyond PyTorch's own tensors.

Each :class:`GpuSpec` says how much memory the card has and how large the workspaces are that cuBLAS and cuDNN take
from PyTorch's caching allocator (and so count in ``torch.cuda.max_memory_allocated``):

* **cuBLAS**: one workspace per (handle, stream), kept for the life of the process. Handles are per thread, and
  autograd runs CUDA backward on its own device thread, so a training step that multiplies matrices in forward and in
  backward holds two. PyTorch's default size on compute capability 9.0 (H100, H200) is 32 MiB
  (``CUBLAS_WORKSPACE_CONFIG=:4096:8``; ``aten/src/ATen/cuda/CublasHandlePool.cpp``).
* **cuDNN** convolution workspaces depend on the algorithm cuDNN's heuristics pick, per convolution shape. They are
  modelled per pass from the shapes of the convolution, with coefficients calibrated against measurements
  (``calibration.json`` beside this file, whose ``provenance`` says which).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from profiler.errors import ProfilerError

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class GpuSpec:
    """A GPU model: ``name`` as torch reports it, ``total_bytes`` as torch's ``total_memory`` reports it, the cuBLAS
    workspace per handle, and the bytes the CUDA context and driver keep outside the caching allocator."""

    key: str
    name: str
    total_bytes: int
    compute_capability: tuple[int, int]
    cublas_workspace_bytes: int = 32 * MiB
    context_bytes: int = 600 * MiB

    @property
    def usable_bytes(self) -> int:
        """Memory the caching allocator can reserve: total minus the CUDA context."""
        return self.total_bytes - self.context_bytes


GPUS: dict[str, GpuSpec] = {
    # total_bytes: torch.cuda.get_device_properties(0).total_memory. H200: 150,109,880,320 (the reference
    # measurement's provenance). H100 80GB HBM3: nvidia-smi shows 81,559 MiB; torch reports the same less the
    # ~614 MiB the driver keeps, as on the H200 (143,771 MiB in nvidia-smi vs 143,157 MiB in torch).
    "h100": GpuSpec("h100", "NVIDIA H100 80GB HBM3", (81559 - 614) * MiB, (9, 0)),
    "h200": GpuSpec("h200", "NVIDIA H200", 150_109_880_320, (9, 0)),
}


def gpu_spec(key: str) -> GpuSpec:
    """The :class:`GpuSpec` for ``key`` ("h100", "h200")."""
    try:
        return GPUS[key]
    except KeyError:
        raise ProfilerError(f"no GPU model '{key}': choose one of {', '.join(GPUS)}") from None


def parse_bytes(text: str) -> int:
    """'80GiB', '80 GB', '81920MiB', '85899345920' → bytes (GB/MB are decimal, GiB/MiB binary)."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0:
        raise ProfilerError(f"--gpu-memory '{text}' is not a size; write e.g. 80GiB, 40GB or 81920MiB")
    return int(value * units[unit])


@cache
def calibration() -> dict:
    """The cuDNN workspace coefficients and their provenance (``calibration.json``)."""
    return json.loads(CALIBRATION_FILE.read_text())
