"""The GPU catalogue (``python -m profiler gpus``) as table, markdown, JSON or CSV."""

from __future__ import annotations

from collections.abc import Sequence

from profiler.catalogue import DEFAULT_GPU, GpuSpec
from profiler.format.output import render_table, to_csv, to_json
from profiler.util.units import human_bytes

HEADERS = ["key", "name", "memory", "DRAM TB/s", "FP32", "TF32", "BF16", "FP16", "capability", "cuBLAS workspace"]


def _tflops(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e12:,.1f}"


def _row(spec: GpuSpec) -> list[str]:
    key = f"{spec.key} (default)" if spec.key == DEFAULT_GPU else spec.key
    return [key, spec.name, human_bytes(spec.total_bytes), f"{spec.bandwidth_bytes_per_s / 1e12:.3f}",
            _tflops(spec.fp32_flops_per_s), _tflops(spec.tf32_flops_per_s), _tflops(spec.bf16_flops_per_s),
            _tflops(spec.fp16_flops_per_s), ".".join(map(str, spec.compute_capability)),
            human_bytes(spec.cublas_workspace_bytes)]


def format_gpus(specs: Sequence[GpuSpec], fmt: str) -> str:
    """One line per card: its figures (compute roofs dense, in TFLOP/s), then where each figure comes from."""
    if fmt == "json":
        return to_json([spec.to_dict() for spec in specs])
    if fmt == "csv":
        fields = ["key", "name", "total_bytes", "bandwidth_bytes_per_s", "fp32_flops_per_s", "tf32_flops_per_s",
                  "bf16_flops_per_s", "fp16_flops_per_s", "compute_capability", "cublas_workspace_bytes"]
        return to_csv(fields, [[spec.key, spec.name, spec.total_bytes, spec.bandwidth_bytes_per_s,
                                spec.fp32_flops_per_s, spec.tf32_flops_per_s or "", spec.bf16_flops_per_s or "",
                                spec.fp16_flops_per_s or "", ".".join(map(str, spec.compute_capability)),
                                spec.cublas_workspace_bytes] for spec in specs])
    table = render_table(HEADERS, [_row(spec) for spec in specs], fmt,
                         colalign=("left", "left") + ("right",) * (len(HEADERS) - 2))
    bullet = "- " if fmt == "markdown" else ""
    sources = sorted({(field, text) for spec in specs for field, text in spec.sources.items()
                      if field in ("total_bytes", "cublas_workspace_bytes", "device_overhead_bytes")})
    sheets = sorted({spec.sources["bandwidth_bytes_per_s"] for spec in specs})
    lines = [f"{bullet}compute roofs in TFLOP/s, dense (no 2:4 sparsity): FP32 on CUDA cores; TF32, BF16 and FP16 on "
             "tensor cores with FP32 accumulation; '-': the card has no such units. PyTorch runs float32 "
             "convolutions on TF32 (cudnn.allow_tf32) and float32 matmuls on FP32 by default",
             f"{bullet}memory: what torch reports (total_memory) where it was read, else the datasheet's decimal GB "
             "(a card reports a little more): see total bytes below and python -m profiler gpus --format json",
             f"{bullet}figures from: " + "; ".join(sheets)]
    lines += [f"{bullet}{field.replace('_', ' ')}: {text}" for field, text in sources
              if not text.startswith("NVIDIA")]
    return f"{table}\n\n" + "\n".join(lines) + "\n"
