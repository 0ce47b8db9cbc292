"""cuDNN convolution workspaces, as PyTorch takes them from the caching allocator.

What PyTorch does (``aten/src/ATen/native/cudnn/Conv_v8.cpp``, ``torch.backends.cudnn.benchmark`` off, the default):
for a shape it has not seen, it asks cuDNN's heuristics for their top engine configuration, allocates that plan's
workspace from the caching allocator, runs the convolution and frees the workspace; the plan is cached (per thread
and shape), so every later call allocates the same workspace again. There is no separate probe on the first call
in this path, which is why the measured peaks of the first and second training steps agree within 0.5 %. If the
allocation fails, PyTorch tries the heuristic's other configurations, then the fallback list: a convolution never
gets more workspace than is free (:func:`cap`).

The model of the workspace size: the engines cuDNN picks for float32 NCHW tensors on Hopper work in their own tensor
layout and copy what they read and write into the workspace. The workspace of a stage is therefore a·(input bytes) +
b·(output bytes) + c·(weight bytes), with a, b, c per stage and kernel class in ``calibration.json``:

* ``forward`` (x, w → y), 3×3 and larger kernels: x + y + w — every inference peak of the reference that falls in a
  convolution (AlexNet, NiN, GoogLeNet, ResNet at 96 and 224) is reproduced to 512 B by it. DenseNet's growth-32
  convolutions (32 output channels, output smaller than input) are the exception seen: their inference peaks say
  x + w (y written directly), which one model alone cannot turn into a rule; predicting x + y + w over-estimates them
  by their output (DenseNet's inference peaks +5 %).
* ``backward_data`` (dy, w → dx): the same three tensors, dy + w + dx.
* ``backward_filter`` (x, dy → dw): x with the convolution's zero padding + dy + k·dw, k the one coefficient fitted
  to the training peaks (k = 1: each tensor copied once). The padded copy of x is a choice made on the training
  runs' reserved peaks, which it brings closer (VGG-11 and ResNet-18 at 224: −15 % and −19 % become −7 % and −6 %).
* 1×1 (``pointwise``) kernels are plain matrix products on NCHW data for the forward and data-gradient passes: no
  workspace; their filter gradient reduces over the batch and takes x + dy + k·dw (no padding).

A measured value for an exact convolution (``measured`` in the table, written by ``benchmarks/gpu_memory.py``)
replaces the rule. Peak allocated memory needs the workspace at the peak only; peak reserved memory depends on where
every workspace and tensor lands among the cached blocks, and a rule's sizes, right to a few percent, move it by up
to tens of percent (:func:`profiler.memory.validation.workspace_sensitivity`): measured values are what makes a
reserved prediction exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiler.memory.trace import ConvCall

STAGES = ("forward", "backward_data", "backward_filter")


@dataclass(frozen=True)
class ConvWorkspaces:
    """Workspace bytes of one convolution stage: ``run`` on every call; ``probe``, only where a measurement found
    one, is allocated once more before it on the first call of a shape (0 for the fitted rule)."""

    run: int
    probe: int = 0


def kernel_class(conv: ConvCall) -> str:
    """"pointwise" for 1×1 kernels, "spatial" otherwise (the two kernel classes of the coefficient table)."""
    return "pointwise" if all(k == 1 for k in conv.weight_shape[2:]) else "spatial"


def stages(conv: ConvCall) -> list[str]:
    """The cuDNN calls of ``conv``: its forward, or the backward stages its output mask asks for."""
    if conv.pass_ == "forward":
        return ["forward"]
    return [stage for stage, wanted in (("backward_data", conv.output_mask[0]),
                                        ("backward_filter", conv.output_mask[1])) if wanted]


def conv_workspaces(conv: ConvCall, stage: str, table: dict[str, Any]) -> ConvWorkspaces:
    """Workspace bytes of ``conv`` in ``stage`` under the coefficient ``table`` (a calibration's ``workspaces``):
    the measured value for this exact convolution if the table has one, else the rule of the module docstring —
    a·input + p·padded input + b·output + c·weight bytes, the coefficients per stage and kernel class."""
    measured = table.get("measured", {}).get(f"{stage}:{conv.key()}")
    if measured is not None:
        probe = measured.get("probe", 0)
        return ConvWorkspaces(run=measured["run"], probe=probe if probe > measured["run"] else 0)
    c = table[stage][kernel_class(conv)]
    padded = c.get("padded_input", 0.0) * padded_input_bytes(conv)
    return ConvWorkspaces(run=int(c["input"] * conv.input_bytes + padded + c["output"] * conv.output_bytes
                                  + c["weight"] * conv.weight_bytes))


def padded_input_bytes(conv: ConvCall) -> int:
    """Bytes of the input with the convolution's zero padding around each spatial dimension."""
    n, channels, *spatial = conv.input_shape
    count = n * channels
    for extent, pad in zip(spatial, conv.padding, strict=True):
        count *= extent + 2 * pad
    return count * conv.element_size


def cap(requested_bytes: int, largest_free_block_bytes: int, unreserved_bytes: int) -> int:
    """The workspace a convolution gets: what it asks for, at most what the allocator could hand out — its largest
    cached free block, or a new segment from the memory not yet reserved (rounded down to the 2 MiB granularity of
    large segments). PyTorch catches the failed allocation and runs a configuration that needs less; we take the
    most it could have had."""
    segment = max(unreserved_bytes - unreserved_bytes % (2 << 20), 0)
    return min(requested_bytes, max(largest_free_block_bytes, segment))
