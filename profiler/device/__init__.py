"""Facts about the device at hand: where to run (CUDA or CPU), which catalogue card it is, the provenance every
measurement carries (device, driver, torch/CUDA/cuDNN versions, date), and NVML readings (:mod:`.nvml` samples them
over time)."""

from __future__ import annotations

import datetime
import os
import platform
from enum import Enum
from types import ModuleType
from typing import Any

import torch

from profiler.catalogue import GpuSpec, gpu_for_device
from profiler.device.nvml import load_pynvml, why
from profiler.errors import ProfilerError


class DeviceKind(str, Enum):
    """Where a measurement runs."""

    CUDA = "cuda"
    CPU = "cpu"

    def __str__(self) -> str:
        return self.value


def cuda_available() -> bool:
    """Whether a CUDA device can be used here (False, without warnings, on machines without a driver)."""
    return torch.cuda.is_available()


def resolve_device(device: str | None, what: str = "measure") -> DeviceKind:
    """``device`` ("cuda", "cpu") if it can be used here, else CUDA when available and the CPU otherwise; asking for
    CUDA where there is none is a user error."""
    if device == DeviceKind.CUDA and not cuda_available():
        raise ProfilerError(f"--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is False); "
                            f"use --device cpu to {what} on the CPU")
    if device is not None:
        return DeviceKind(device)
    return DeviceKind.CUDA if cuda_available() else DeviceKind.CPU


def torch_device(kind: DeviceKind) -> torch.device:
    """The torch device of ``kind``: the current CUDA device, or the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if kind == DeviceKind.CUDA else torch.device("cpu")


def current_gpu() -> GpuSpec | None:
    """The catalogue entry of the CUDA device at hand (None without CUDA or for a card the catalogue lacks)."""
    return gpu_for_device(torch.cuda.get_device_name()) if cuda_available() else None


def nvml_driver_version(nvml: ModuleType | None = None) -> str:
    """The NVIDIA driver version from NVML, or "unknown (why)"."""
    try:
        nvml = nvml or load_pynvml()
        nvml.nvmlInit()
        try:
            version = nvml.nvmlSystemGetDriverVersion()
        finally:
            nvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception as err:  # NVML missing or failing: the driver is then simply unknown
        return f"unknown ({why(err)})"


def nvml_used_bytes(index: int) -> tuple[int | None, str | None]:
    """Used memory of the whole device from NVML (all processes, the CUDA context included), or (None, why not)."""
    try:
        nvml = load_pynvml()
    except ImportError:
        return None, "NVML unavailable: the nvidia-ml-py package is not installed"
    try:
        nvml.nvmlInit()
        try:
            return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used), None
        finally:
            nvml.nvmlShutdown()
    except Exception as err:
        return None, f"NVML unavailable: {err}"


def quiet_torch_profiler() -> None:
    """Keep the torch profiler's native library (kineto, inside libtorch_cpu) off stderr, so that a command's own
    line stays the only one there: it logs its start and stop ("USDT: ... profiler_start"), and on a CUDA build of
    torch without an NVIDIA driver an ERROR "gpuGetDeviceCount failed with code 35" (kineto's DeviceProperties.cpp
    asks the CUDA runtime for the devices to describe in the trace; 35 is cudaErrorInsufficientDriver), though
    nothing is wrong. Kineto reads ``KINETO_LOG_LEVEL`` when a profiler starts; 6 is above its highest level. A
    level the user set is kept."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")


def cpu_threads() -> str:
    """torch's CPU thread count, in words ("2 threads")."""
    count = torch.get_num_threads()
    return f"{count} thread{'s' if count != 1 else ''}"


def provenance(device: torch.device, detailed: bool = False) -> dict[str, Any]:
    """Device, driver, torch/CUDA/cuDNN versions and the date, for every committed measurement. ``detailed`` adds
    the GPU's total memory, multiprocessor count and L2 size (or the CPU thread count to the device name)."""
    info: dict[str, Any] = {"torch": torch.__version__,
                            "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    if device.type == DeviceKind.CUDA:
        info.update(device=torch.cuda.get_device_name(device), cuda=str(torch.version.cuda),
                    cudnn=str(torch.backends.cudnn.version()), driver=nvml_driver_version())
        if detailed:
            props = torch.cuda.get_device_properties(device)
            info.update(total_memory=props.total_memory, sm_count=props.multi_processor_count,
                        l2_cache_bytes=getattr(props, "L2_cache_size", None))
    else:
        name = f"CPU ({platform.processor() or platform.machine()})"
        info.update(device=f"{name}, {cpu_threads()}" if detailed else name, cuda="-", cudnn="-", driver="-")
    return info
