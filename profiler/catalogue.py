"""The catalogue of GPUs a prediction can target: memory, bandwidth, compute roofs, compute capability, the cuBLAS
workspace PyTorch gives each handle, and where every figure comes from.

Conventions of the figures:

* **compute roofs** are dense (no 2:4 sparsity): NVIDIA's datasheets print tensor-core rates "with sparsity", and the
  dense rate is half of that. ``fp32`` is FP32 on CUDA cores (no tensor cores), ``tf32`` TF32 on tensor cores,
  ``bf16``/``fp16`` tensor-core rates with FP32 accumulation (what PyTorch uses). A roof the card does not have is
  None: TF32 and bfloat16 tensor cores need compute capability 8.0 (Ampere) or newer.
* **bandwidth** is the datasheet's DRAM (HBM/GDDR) bandwidth in bytes/s (decimal: 3.35 TB/s = 3.35·10¹² B/s).
* **sm_count** is the number of streaming multiprocessors: the datasheet's CUDA cores ÷ FP32 cores per SM of the
  architecture (64 on Volta and Turing and the A100, 128 on GA10x, Ada and Hopper), or as torch read it where it was.
* **total_bytes** is the memory ``torch.cuda.get_device_properties().total_memory`` reports where that was read,
  else the datasheet's (decimal GB, which the card's own figure exceeds a little); ``sources["total_bytes"]`` says
  which.
* **cublas_workspace_bytes** is the workspace PyTorch allocates per cuBLAS handle and stream from its caching
  allocator (``aten/src/ATen/cuda/CublasHandlePool.cpp``, ``parseChosenWorkspaceSize``): 32 MiB (``:4096:8``) on
  compute capability 9.x, ``:4096:2:16:8`` = 8 MiB + 128 KiB on earlier cards.

Which roof a kernel runs on under PyTorch's defaults is :meth:`GpuSpec.roof`; :func:`gpu_for_device` finds the entry
of a CUDA device by the name torch gives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from profiler.errors import ProfilerError

MiB = 1 << 20
GB = 10**9

#: PyTorch's default cuBLAS workspace per handle (CublasHandlePool.cpp, parseChosenWorkspaceSize).
CUBLAS_WORKSPACE_HOPPER = 4096 * 8 * 1024
CUBLAS_WORKSPACE_DEFAULT = 4096 * 1024 * 2 + 16 * 1024 * 8
CUBLAS_SOURCE = ("PyTorch's default per cuBLAS handle (aten/src/ATen/cuda/CublasHandlePool.cpp, "
                 "parseChosenWorkspaceSize): :4096:8 = 32 MiB on compute capability 9.x, :4096:2:16:8 = 8.125 MiB "
                 "before")

#: nvidia-smi's total memory of the H200 of ``reports/data/reference_h200_batch128.json`` (143,771 MiB), of which
#: torch's ``total_memory`` (150,109,880,320 B = 143,155.9 MiB) leaves out 615.1 MiB that the driver keeps; NVML's
#: "used" counts them, torch's total does not.
H200_NVIDIA_SMI_TOTAL_BYTES = 143_771 * MiB
NVML_OUTSIDE_TORCH_TOTAL_BYTES = H200_NVIDIA_SMI_TOTAL_BYTES - 150_109_880_320

#: Device memory outside the caching allocator (CUDA context, cuBLAS/cuDNN handles and the library code they load),
#: the largest over the 24 runs of ``reports/data/reference_h200_batch128.json`` of NVML used − peak reserved −
#: :data:`NVML_OUTSIDE_TORCH_TOTAL_BYTES` (VGG-11 at 224, inference: 5,714,149,376 − 644,939,776 B = 4,834.4 MiB;
#: 3,202–3,342 MiB in every training run). ``tests/test_memory_verdict.py`` recomputes it.
DEVICE_OVERHEAD_BYTES = 5_069_209_600
DEVICE_OVERHEAD_SOURCE = (
    "measured on the H200 of reports/data/reference_h200_batch128.json: the largest NVML used - peak reserved - "
    "615.1 MiB (the driver's share that torch's total_memory leaves out) over its 24 runs, 4,834.4 MiB (VGG-11 at 224, "
    "inference; 3,202-3,342 MiB in every training run, where the allocator's reserved memory had stopped growing). "
    "Assumed equal on every card: it was measured on one card, one torch/CUDA/cuDNN version")


class Precision(str, Enum):
    """The arithmetic a kernel runs on: FP32 CUDA cores, or TF32/BF16/FP16 tensor cores."""

    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"
    FP16 = "fp16"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class GpuSpec:
    """One card. Rates in FLOP/s and bytes/s, memory in bytes; ``sources`` cites each figure (by field name)."""

    key: str
    name: str                                   # as torch.cuda.get_device_name() reports it
    total_bytes: int
    compute_capability: tuple[int, int]
    bandwidth_bytes_per_s: float
    fp32_flops_per_s: float
    tf32_flops_per_s: float | None
    bf16_flops_per_s: float | None
    fp16_flops_per_s: float | None
    sm_count: int
    sources: dict[str, str]
    match: tuple[tuple[str, ...], ...] = ()     # word sets of device names that are this card
    device_overhead_bytes: int = DEVICE_OVERHEAD_BYTES

    @property
    def cublas_workspace_bytes(self) -> int:
        """What one cuBLAS handle takes from PyTorch's caching allocator on this card."""
        return CUBLAS_WORKSPACE_HOPPER if self.compute_capability[0] == 9 else CUBLAS_WORKSPACE_DEFAULT

    @property
    def has_tf32(self) -> bool:
        """TF32 tensor cores exist from compute capability 8.0 (Ampere) on."""
        return self.tf32_flops_per_s is not None

    def peak(self, precision: Precision) -> float | None:
        """The dense compute roof of ``precision`` (None where the card has no such units)."""
        return {Precision.FP32: self.fp32_flops_per_s, Precision.TF32: self.tf32_flops_per_s,
                Precision.BF16: self.bf16_flops_per_s, Precision.FP16: self.fp16_flops_per_s}[precision]

    def roof(self, dtype: str, convolution: bool, allow_tf32_matmul: bool = False,
             allow_tf32_cudnn: bool = True) -> Precision:
        """The units a convolution (``convolution``) or matrix product runs on for ``dtype`` under PyTorch's defaults:
        float32 convolutions on TF32 tensor cores (``torch.backends.cudnn.allow_tf32`` is True by default) where the
        card has them, float32 matmuls on FP32 CUDA cores (``torch.backends.cuda.matmul.allow_tf32`` is False by
        default); bfloat16/float16 on the tensor cores of that type, FP32 where the card has none."""
        if dtype == "float32":
            tf32 = allow_tf32_cudnn if convolution else allow_tf32_matmul
            return Precision.TF32 if tf32 and self.has_tf32 else Precision.FP32
        wanted = {"bfloat16": Precision.BF16, "float16": Precision.FP16}[dtype]
        return wanted if self.peak(wanted) is not None else Precision.FP32

    def ridge(self, precision: Precision) -> float:
        """FLOP/B where the ``precision`` roof meets the bandwidth roof (below it a kernel is memory-bound)."""
        peak = self.peak(precision)
        if peak is None:
            raise ValueError(f"{self.name} has no {precision} units")
        return peak / self.bandwidth_bytes_per_s

    def to_dict(self) -> dict[str, object]:
        """The JSON object ``python -m profiler gpus`` prints for this card (``schema_version``: CHANGELOG.md)."""
        from profiler.kinds import SCHEMA_VERSION

        return {"schema_version": SCHEMA_VERSION, "key": self.key, "name": self.name, "total_bytes": self.total_bytes,
                "compute_capability": list(self.compute_capability),
                "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s, "fp32_flops_per_s": self.fp32_flops_per_s,
                "tf32_flops_per_s": self.tf32_flops_per_s, "bf16_flops_per_s": self.bf16_flops_per_s,
                "fp16_flops_per_s": self.fp16_flops_per_s, "cublas_workspace_bytes": self.cublas_workspace_bytes,
                "device_overhead_bytes": self.device_overhead_bytes, "sources": dict(self.sources)}

    @property
    def usable_bytes(self) -> int:
        """Memory the caching allocator can reserve: total minus what the context and libraries hold."""
        return self.total_bytes - self.device_overhead_bytes


def _sheet(document: str, sparse_note: bool = True) -> dict[str, str]:
    """The same citation for every datasheet figure of a card."""
    dense = "; tensor-core rates dense (half the with-sparsity figure)" if sparse_note else ""
    return {field_: f"{document}{dense if field_.endswith('flops_per_s') and field_ != 'fp32_flops_per_s' else ''}"
            for field_ in ("bandwidth_bytes_per_s", "fp32_flops_per_s", "tf32_flops_per_s", "bf16_flops_per_s",
                           "fp16_flops_per_s", "total_bytes")}


def _card(key: str, name: str, document: str, memory_gb: float, cc: tuple[int, int], bandwidth_tb: float,
          fp32: float, tf32: float | None, bf16: float | None, fp16: float | None, cuda_cores: int,
          match: tuple[tuple[str, ...], ...], total_bytes: int | None = None, total_source: str | None = None,
          sparse_note: bool = True, sm_source: str | None = None) -> GpuSpec:
    sources = _sheet(document, sparse_note)
    cores_per_sm = 64 if cc in ((7, 0), (7, 5), (8, 0)) else 128
    sources["sm_count"] = sm_source or (f"{document}: {cuda_cores:,} CUDA cores ÷ {cores_per_sm} FP32 cores per SM "
                                        f"(compute capability {cc[0]}.{cc[1]})")
    sources["total_bytes"] = total_source or f"{document}: {memory_gb:g} GB (decimal; not read from torch on this card)"
    sources["compute_capability"] = "CUDA C++ Programming Guide, compute capabilities table"
    sources["cublas_workspace_bytes"] = CUBLAS_SOURCE
    sources["device_overhead_bytes"] = DEVICE_OVERHEAD_SOURCE
    for field_, value in (("tf32_flops_per_s", tf32), ("bf16_flops_per_s", bf16), ("fp16_flops_per_s", fp16)):
        if value is None:
            sources[field_] = f"none: no such tensor cores at compute capability {cc[0]}.{cc[1]}"
    return GpuSpec(key=key, name=name, total_bytes=total_bytes or int(memory_gb * GB), compute_capability=cc,
                   bandwidth_bytes_per_s=_e12(bandwidth_tb), fp32_flops_per_s=_e12(fp32), tf32_flops_per_s=_e12(tf32),
                   bf16_flops_per_s=_e12(bf16), fp16_flops_per_s=_e12(fp16), sm_count=cuda_cores // cores_per_sm,
                   sources=sources, match=match)


def _e12(value: float | None) -> float | None:
    """A datasheet figure in units of 10¹² as the float nearest its decimal value (2.039 → 2.039e12 exactly as
    written, not 2.039 × 10¹² with a rounding error)."""
    return None if value is None else float(f"{value}e12")


H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet"
HOPPER_PAPER = "NVIDIA H100 Tensor Core GPU Architecture whitepaper"
AMPERE_PAPER = "NVIDIA A100 Tensor Core GPU Architecture whitepaper: 108 SMs"
H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet"
A100_SHEET = "NVIDIA A100 Tensor Core GPU datasheet"

#: Every card, by the key ``--gpu`` takes. Device-name matching tries the entries in this order.
GPUS: dict[str, GpuSpec] = {spec.key: spec for spec in (
    _card("h200-nvl", "NVIDIA H200 NVL", H200_SHEET, 141, (9, 0), 4.8, 60, 417.5, 835.5, 835.5, 16896,
          (("h200", "nvl"),), sm_source=f"{HOPPER_PAPER}: 132 SMs of GH100, as on the H200 (not read on this card)"),
    _card("h200", "NVIDIA H200", H200_SHEET, 141, (9, 0), 4.8, 67, 494.5, 989.5, 989.5, 16896, (("h200",),),
          total_bytes=150_109_880_320,
          total_source="measured: torch.cuda.get_device_properties(0).total_memory on the H200 of "
                       "reports/data/reference_h200_batch128.json",
          sm_source="measured: torch.cuda.get_device_properties(0).multi_processor_count = 132 on the H200 of "
                    "reports/data/reference_h200_batch128.json (provenance.sm_count)"),
    _card("h100-nvl", "NVIDIA H100 NVL", H100_SHEET, 94, (9, 0), 3.9, 60, 417.5, 835.5, 835.5, 16896,
          (("h100", "nvl"),), sm_source=f"{HOPPER_PAPER}: 132 SMs of GH100 (the SXM5 configuration)"),
    _card("h100-pcie", "NVIDIA H100 PCIe", H100_SHEET, 80, (9, 0), 2.0, 51, 378, 756.5, 756.5, 14592,
          (("h100", "pcie"),), sm_source=f"{HOPPER_PAPER}: 114 SMs on H100 PCIe"),
    _card("h100", "NVIDIA H100 80GB HBM3", H100_SHEET, 80, (9, 0), 3.35, 67, 494.5, 989.5, 989.5, 16896,
          (("h100",),),
          total_bytes=(81559 - 614) * MiB,
          total_source="estimated: nvidia-smi's 81,559 MiB for an H100 80GB HBM3 less the 614 MiB the driver keeps "
                       "out of torch's total_memory on the H200 (torch has not been read on an H100 here)",
          sm_source=f"{HOPPER_PAPER}: 132 SMs on H100 SXM5"),
    _card("a100-80gb-pcie", "NVIDIA A100 80GB PCIe", A100_SHEET, 80, (8, 0), 1.935, 19.5, 156, 312, 312,
          6912, (("a100", "80gb", "pcie"),), sm_source=AMPERE_PAPER),
    _card("a100-80gb", "NVIDIA A100-SXM4-80GB", A100_SHEET, 80, (8, 0), 2.039, 19.5, 156, 312, 312,
          6912, (("a100", "80gb"),), sm_source=AMPERE_PAPER),
    _card("a100-40gb", "NVIDIA A100-SXM4-40GB", A100_SHEET, 40, (8, 0), 1.555, 19.5, 156, 312, 312, 6912,
          (("a100",),), sm_source=AMPERE_PAPER),
    _card("l40s", "NVIDIA L40S", "NVIDIA L40S GPU datasheet", 48, (8, 9), 0.864, 91.6, 183, 362.05, 362.05,
          18176, (("l40s",),)),
    _card("l4", "NVIDIA L4", "NVIDIA L4 Tensor Core GPU datasheet", 24, (8, 9), 0.300, 30.3, 60, 121, 121,
          7424, (("l4",),)),
    _card("a10", "NVIDIA A10", "NVIDIA A10 Tensor Core GPU datasheet", 24, (8, 6), 0.600, 31.2, 62.5, 125, 125,
          9216, (("a10",),)),
    _card("t4", "Tesla T4", "NVIDIA T4 Tensor Core GPU datasheet (FP16 figure: mixed precision FP16/FP32)", 16,
          (7, 5), 0.320, 8.1, None, None, 65, 2560, (("t4",),), sparse_note=False),
    _card("v100-32gb", "Tesla V100-SXM2-32GB", "NVIDIA V100 Tensor Core GPU datasheet, SXM2 (FP16 figure: tensor "
          "performance)", 32, (7, 0), 0.900, 15.7, None, None, 125, 5120, (("v100", "32gb"),), sparse_note=False),
    _card("v100-16gb", "Tesla V100-SXM2-16GB", "NVIDIA V100 Tensor Core GPU datasheet, SXM2 (FP16 figure: tensor "
          "performance)", 16, (7, 0), 0.900, 15.7, None, None, 125, 5120, (("v100",),), sparse_note=False),
    _card("rtx4090", "NVIDIA GeForce RTX 4090", "NVIDIA Ada Lovelace GPU architecture whitepaper, RTX 4090 (tensor "
          "rates with FP32 accumulation)", 24, (8, 9), 1.008, 82.6, 82.6, 165.2, 165.2, 16384, (("rtx", "4090"),)),
    _card("rtx3090", "NVIDIA GeForce RTX 3090", "NVIDIA Ampere GA102 GPU architecture whitepaper, RTX 3090 (tensor "
          "rates with FP32 accumulation)", 24, (8, 6), 0.936, 35.6, 35.6, 71, 71, 10496, (("rtx", "3090"),)),
)}

#: The card predictions are for when none is named.
DEFAULT_GPU = "h100"


def gpu_spec(key: str) -> GpuSpec:
    """The catalogue entry for ``key`` (``--gpu``); a user error naming the choices for an unknown one."""
    try:
        return GPUS[key.lower()]
    except KeyError:
        raise ProfilerError(f"no GPU '{key}' in the catalogue: choose one of {', '.join(sorted(GPUS))} "
                            "(python -m profiler gpus lists them)") from None


def _words(name: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", name.lower()))


def gpu_for_device(device_name: str) -> GpuSpec | None:
    """The catalogue entry of a CUDA device by the name torch gives it ("NVIDIA A100-SXM4-40GB" → a100-40gb), or
    None for a card the catalogue does not have. Names are compared word by word, so "A10" is not "A100"."""
    words = _words(device_name)
    for spec in GPUS.values():
        if any(set(pattern) <= words for pattern in spec.match):
            return spec
    return None


def parse_bytes(text: str, flag: str = "--gpu-memory") -> int:
    """'80GiB', '80 GB', '81920MiB', '85899345920' → bytes (GB/MB are decimal, GiB/MiB binary); a user error
    naming ``flag`` for anything else."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or not value > 0 or value * units[unit] >= 1 << 60:
        raise ProfilerError(f"{flag} '{text}' is not a size; write e.g. 80GiB, 40GB or 81920MiB")
    return int(value * units[unit])


@dataclass(frozen=True)
class Datasheet:
    """The published peaks of a card, as a measured bandwidth run shows them beside its own. Never measured."""

    name: str
    fp32_flops_per_s: float
    tf32_flops_per_s: float | None
    bytes_per_s: float
    source: str
    extra: dict[str, float | None] = field(default_factory=dict)


def datasheet_for(device_name: str) -> Datasheet | None:
    """The published peaks of a CUDA device by its name, or None (CPUs, cards not in the catalogue)."""
    spec = gpu_for_device(device_name)
    if spec is None:
        return None
    return Datasheet(spec.name, spec.fp32_flops_per_s, spec.tf32_flops_per_s, spec.bandwidth_bytes_per_s,
                     spec.sources["bandwidth_bytes_per_s"],
                     {"bf16_flops_per_s": spec.bf16_flops_per_s, "fp16_flops_per_s": spec.fp16_flops_per_s})
