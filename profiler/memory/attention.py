"""Attention as a CUDA device runs it, for the meta-device trace of :mod:`profiler.memory.trace`.

On meta tensors ``torch.nn.functional.scaled_dot_product_attention`` (SDPA) always takes the math path (matmul +
softmax: the ``L×S`` scores are materialized and saved for backward), and ``nn.MultiheadAttention`` never takes its
inference fast path (its device check fails). On a CUDA device PyTorch picks a fused kernel that never materializes
the scores. This module

* re-implements PyTorch's kernel choice as a pure function of the target card, the call's dtype, shapes, strides,
  mask, dropout and flags (:func:`select_kernel`), following ``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``
  (``select_sdp_backend``, ``can_use_flash_attention``, ``can_use_mem_efficient_attention``,
  ``can_use_cudnn_attention``, ``check_prefer_cudnn_attention``) and ``sdp_utils_cpp.h`` (the shared checks), as built
  into torch 2.14 (the warning texts of every check quoted here are in its ``libtorch_cuda.so``);
* traces the chosen fused kernel with what CUDA allocates on the device (:class:`CudaAttention`): the shapes come from
  the fused ops' own meta kernels (``aten._scaled_dot_product_{flash,efficient,cudnn}_attention``), the allocation
  order, layouts and temporaries from their CUDA implementations (``attention.cu``, ``attention_backward.cu``,
  ``flash_attn/flash_api.cpp``, ``mem_eff_attention/kernel_{forward,backward}.h``);
* takes ``nn.MultiheadAttention``'s inference fast path where its conditions hold, as
  ``native_multi_head_attention_cuda`` (``attention.cu``) runs it.

What is modelled and what is not (each a transient inside one kernel call unless said otherwise):

* flash forward: output, logsumexp (``B×H×L`` float32), RNG state (two device scalars). Its split-KV accumulators
  (inference with fewer query blocks than the card has SMs) are not modelled: their number depends on the SM count,
  which the catalogue does not hold.
  Backward: ``dq, dk, dv``, copies of ``grad_out``/``out`` if not contiguous, ``softmax_d`` (``B×H×⌈L⌉₁₂₈`` float32)
  and ``dq_accum`` (``B×⌈L⌉₁₂₈×H×⌈D⌉₃₂`` float32; ``⌈D⌉₆₄`` above 128); deterministic mode's split accumulators are not.
* memory-efficient forward: output, logsumexp (``B×H×⌈L⌉₃₂`` float32, training only), a float32 output accumulator
  for fp16/bf16 with head dim > 128. Its philox seed/offset are host tensors (no device memory). Backward:
  ``grad_out`` made contiguous, the gradients (one ``B×L×3×H×D`` chunk when q, k, v share a storage), ``delta``
  (fp32: computed with tensor ops, their temporaries included), and the gradQ workspace of the cutlassB kernel:
  ``⌈L/64⌉·⌈D/64⌉`` tiles of ``64×64`` float32 plus a 16-byte header per batch and head. The tile size is an
  assumption (the kernel torch picks depends on the card's shared memory; a ``128×128`` kernel pads more); the
  gradK/gradV accumulators of fp16/bf16 with head dim > 128 are not modelled.
* cuDNN forward: RNG seed/offset (device scalars), output, logsumexp (``B×H×L×1`` float32, training only). cuDNN's
  own plan workspace is not published: backward is modelled like flash's (gradients, a float32 dQ accumulator of
  ``B×H×L×D`` and a float32 row statistic of ``B×H×L``), an assumption stated in the trace's notes.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import _disable_current_modes

from profiler.catalogue import GpuSpec
from profiler.errors import ProfilerError
from profiler.kinds import AttentionKernel
from profiler.scopes import in_backward

aten = torch.ops.aten
K = AttentionKernel

HALF_DTYPES = (torch.float16, torch.bfloat16)
#: ``F.scaled_dot_product_attention`` itself (the builtin), whatever the attribute is patched to during a trace.
SDPA = torch._C._nn.scaled_dot_product_attention

#: ``at::globalContext().sDPPriorityOrder()`` as torch initializes it (``[1, 2, 0, 3, 4]``: flash, efficient, math,
#: cuDNN, overrideable); ``torch._C._get_sdp_priority_order()`` reads it, ``sdpa_kernel(..., set_priority=True)``
#: changes it.
TORCH_DEFAULT_PRIORITY = (K.FLASH, K.EFFICIENT, K.MATH, K.CUDNN)
#: The order ``priority_order()`` (sdp_utils.cpp) sets on first use where ``check_prefer_cudnn_attention()`` holds.
CUDNN_FIRST_PRIORITY = (K.CUDNN, K.FLASH, K.EFFICIENT, K.MATH)
_BACKEND_NUMBERS = {0: K.MATH, 1: K.FLASH, 2: K.EFFICIENT, 3: K.CUDNN}   # torch._C._SDPBackend values

#: The tile of the memory-efficient backward's gradQ accumulator (kBlockSizeI × kBlockSizeJ), assumed.
EFFICIENT_BACKWARD_TILE = 64
#: Head dims up to this keep the memory-efficient forward's output in registers (cutlassF kernels of kMaxK 64 and
#: 128 with kKeysPerBlock ≥ kMaxK); above it the fp16/bf16 kernels accumulate in a float32 buffer.
EFFICIENT_RF_MAX_HEAD_DIM = 128


# ------------------------------------------------------------------------------------------------ the kernel choice

@dataclass(frozen=True)
class SdpaFlags:
    """The global settings torch's choice reads: the ``torch.backends.cuda.enable_*_sdp`` flags (``sdpa_kernel``
    sets them), the priority order, deterministic algorithms, and the cuDNN/CUDA of the torch build (the cuDNN that
    ships with the installed torch is the one the target card would run). ``cudnn_frontend_d256`` is whether torch
    was built with cuDNN frontend ≥ 1.24 (head dims 129–256 for cuDNN on sm90/sm10x): not readable from Python,
    assumed False."""

    flash: bool = True
    efficient: bool = True
    math: bool = True
    cudnn: bool = True
    priority: tuple[AttentionKernel, ...] = TORCH_DEFAULT_PRIORITY
    deterministic: bool = False
    deterministic_warn_only: bool = False
    cudnn_version: int | None = None
    cuda_version: tuple[int, int] = (13, 0)
    cudnn_deprioritized: bool = False
    cudnn_frontend_d256: bool = False

    @classmethod
    def current(cls) -> SdpaFlags:
        """The flags as torch holds them now (inside ``sdpa_kernel`` they are the context's)."""
        order = tuple(_BACKEND_NUMBERS[n] for n in torch._C._get_sdp_priority_order() if n in _BACKEND_NUMBERS)
        cuda = torch.version.cuda or "13.0"
        return cls(flash=torch.backends.cuda.flash_sdp_enabled(),
                   efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
                   math=torch.backends.cuda.math_sdp_enabled(), cudnn=torch.backends.cuda.cudnn_sdp_enabled(),
                   priority=order, deterministic=torch.are_deterministic_algorithms_enabled(),
                   deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
                   cudnn_version=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                   cuda_version=tuple(int(part) for part in cuda.split(".")[:2]),
                   cudnn_deprioritized=os.environ.get("TORCH_CUDNN_SDPA_DEPRIORITIZED", "").lower()
                   in ("1", "true", "on", "yes"))


@dataclass(frozen=True)
class Operand:
    """Shape, strides and storage offset of one SDPA input (all the checks look at)."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int = 0

    @classmethod
    def of(cls, t: torch.Tensor) -> Operand:
        return cls(tuple(t.shape), tuple(t.stride()), t.storage_offset())

    @classmethod
    def contiguous(cls, *shape: int) -> Operand:
        """A contiguous tensor of ``shape`` (for tests and hand-built calls)."""
        stride, step = [], 1
        for size in reversed(shape):
            stride.append(step)
            step *= size
        return cls(tuple(shape), tuple(reversed(stride)))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Mask:
    """The ``attn_mask`` facts the checks read."""

    shape: tuple[int, ...]
    last_stride: int = 1
    requires_grad: bool = False


@dataclass(frozen=True)
class SdpaCall:
    """One SDPA call as the kernel choice sees it. ``requires_grad``: an input requires grad and grad mode is on."""

    dtype: torch.dtype
    query: Operand
    key: Operand
    value: Operand
    mask: Mask | None = None
    dropout_p: float = 0.0
    is_causal: bool = False
    enable_gqa: bool = False
    requires_grad: bool = False

    @classmethod
    def of(cls, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
           dropout_p: float = 0.0, is_causal: bool = False, enable_gqa: bool = False) -> SdpaCall:
        """The facts of a call with these tensors, under the current grad mode."""
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        mask = None if attn_mask is None else Mask(tuple(attn_mask.shape), attn_mask.stride(-1) if attn_mask.dim()
                                                   else 1, attn_mask.requires_grad)
        return cls(query.dtype, Operand.of(query), Operand.of(key), Operand.of(value), mask, float(dropout_p),
                   bool(is_causal), bool(enable_gqa), grad)

    @property
    def head_dims(self) -> tuple[int, int, int]:
        return self.query.shape[-1], self.key.shape[-1], self.value.shape[-1]

    @property
    def is_half(self) -> bool:
        return self.dtype in HALF_DTYPES


@dataclass(frozen=True)
class KernelChoice:
    """The kernel torch would run, and why each kernel before it in the priority order was not."""

    kernel: AttentionKernel
    rejected: tuple[tuple[AttentionKernel, str], ...] = ()
    cudnn_preferred: bool = False

    def reason(self) -> str:
        """``flash: needs fp16/bf16; ...`` or why the kernel came first."""
        if self.rejected:
            return "; ".join(f"{kernel}: {why}" for kernel, why in self.rejected)
        if self.cudnn_preferred:
            return "torch puts cuDNN first on compute capability 9.x/10.x with cuDNN > 9.15"
        return "first in torch's priority order"


def _sm_in(gpu: GpuSpec, low: tuple[int, int], high: tuple[int, int]) -> bool:
    return low <= gpu.compute_capability <= high


def _cc(gpu: GpuSpec) -> str:
    return f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"


def gemm_alignment(gpu: GpuSpec, dtype: torch.dtype) -> int:
    """``minimum_gemm_alignment`` (sdp_utils.cpp): elements the head dim (and, on sm80+, storage offsets) must be a
    multiple of for the memory-efficient kernel: 8 for fp16/bf16 and 4 for fp32 on sm80+, 8/1 on sm7x, 1 before."""
    half = dtype in HALF_DTYPES
    major = gpu.compute_capability[0]
    tensor_cores = major >= 8 or (major >= 7 and half)
    alignment = 4 if major >= 8 else 1
    if tensor_cores:
        alignment = max(alignment, 128 // (16 if half else 32))
    return alignment


def _four_dimensional(call: SdpaCall) -> str | None:
    """check_tensor_shapes."""
    if not len(call.query.shape) == len(call.key.shape) == len(call.value.shape) == 4:
        return f"needs 4-D query, key and value (got {len(call.query.shape)}-D)"
    return None


def _dense_shapes(call: SdpaCall, ignore_singleton_dim: bool) -> str | None:
    """check_nonzero_sequence_lengths_dense, check_last_dim_stride_equals_1_dense, check_batch_size_and_num_heads_dense
    (grouped-query attention only with ``enable_gqa``, key/value heads dividing the query's)."""
    q, k, v = call.query, call.key, call.value
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return "zero sequence length"
    unit = q.stride[-1] == 1 and k.stride[-1] == 1 and v.stride[-1] == 1
    if ignore_singleton_dim:
        unit = unit or q.shape[-1] == 1
    if not unit or (call.mask is not None and call.mask.last_stride != 1):
        return "needs the last dimension of query, key, value (and mask) to have stride 1"
    if not q.shape[0] == k.shape[0] == v.shape[0]:
        return "needs equal batch sizes"
    heads = (q.shape[-3], k.shape[-3], v.shape[-3])
    if call.enable_gqa:
        if heads[1] != heads[2] or heads[0] % heads[1]:
            return "grouped-query attention needs key/value heads equal and dividing the query heads"
    elif len(set(heads)) != 1:
        return "needs equal head counts (or enable_gqa)"
    return None


def flash_rejection(gpu: GpuSpec, call: SdpaCall, flags: SdpaFlags) -> str | None:
    """Why ``can_use_flash_attention`` (sdp_utils.cpp, FlashAttention-2) is false for ``call`` on ``gpu``, or None.
    Checks in torch's order: runtime flag; 4-D inputs; no ``attn_mask``; q, k, v head dims equal and ≤ 256; compute
    capability 8.0–12.1; on sm86–89/sm120–121 training needs head dim ≤ 192 (or > 224 without dropout); ``is_causal``
    needs equal query/key lengths; fp16/bf16; then the dense-input checks."""
    if not flags.flash:
        return "disabled (torch.backends.cuda.enable_flash_sdp / sdpa_kernel)"
    if (why := _four_dimensional(call)) is not None:
        return why
    if call.mask is not None:
        return "does not take an attn_mask"
    dq, dk, dv = call.head_dims
    if not (dq == dk == dv and dq <= 256):
        return f"needs equal head dims ≤ 256 (got {dq}, {dk}, {dv})"
    if not _sm_in(gpu, (8, 0), (12, 1)):
        return f"needs compute capability 8.0–12.1 (the card has {_cc(gpu)})"
    if call.requires_grad and (_sm_in(gpu, (8, 6), (8, 9)) or _sm_in(gpu, (12, 0), (12, 1))):
        if not (dq <= 192 or (call.dropout_p == 0.0 and dq > 224)):
            return f"cannot train with head dim {dq} on compute capability {_cc(gpu)}"
    if call.is_causal and call.query.shape[-2] != call.key.shape[-2]:
        return "is_causal needs equal query and key lengths"
    if not call.is_half:
        return "needs fp16/bf16"
    return _dense_shapes(call, ignore_singleton_dim=True)


def efficient_rejection(gpu: GpuSpec, call: SdpaCall, flags: SdpaFlags) -> str | None:
    """Why ``can_use_mem_efficient_attention`` (sdp_utils.cpp, the cutlass kernels from xFormers) is false, or None.
    In torch's order: runtime flag; compute capability 5.0–12.1; 4-D inputs; query/key head dims equal and q/v head
    dims multiples of :func:`gemm_alignment`; on sm80+ storage offsets × element size aligned to alignment × element
    size; the dense-input checks; dtype fp16/fp32 (and bf16 on sm80+)."""
    if not flags.efficient:
        return "disabled (torch.backends.cuda.enable_mem_efficient_sdp / sdpa_kernel)"
    if not _sm_in(gpu, (5, 0), (12, 1)):
        return f"needs compute capability 5.0–12.1 (the card has {_cc(gpu)})"
    if (why := _four_dimensional(call)) is not None:
        return why
    dq, dk, dv = call.head_dims
    alignment = gemm_alignment(gpu, call.dtype)
    if dq != dk or dq % alignment or dv % alignment or dq <= 0 or dv <= 0:
        return f"needs query/key head dims equal and head dims divisible by {alignment} (got {dq}, {dk}, {dv})"
    if gpu.compute_capability[0] >= 8:
        element = call.dtype.itemsize
        alignment_bytes = alignment * element
        for operand in (call.query, call.key, call.value):
            if operand.numel and (operand.storage_offset * element) % alignment_bytes:
                return f"needs storage offsets aligned to {alignment_bytes} bytes"
    if (why := _dense_shapes(call, ignore_singleton_dim=False)) is not None:
        return why
    allowed = (torch.float16, torch.float32, torch.bfloat16) if gpu.compute_capability[0] >= 8 else (
        torch.float16, torch.float32)
    if call.dtype not in allowed:
        return f"needs {'fp16/fp32/bf16' if gpu.compute_capability[0] >= 8 else 'fp16/fp32'} on compute " \
               f"capability {_cc(gpu)}"
    return None


def _mask_shape_rejection(call: SdpaCall) -> str | None:
    """check_attn_mask_shape: a mask that does not require grad, broadcastable as (L|1, S|1) in 2-D or
    (B|1, H|1, L|1, S|1) in 4-D."""
    mask = call.mask
    if mask is None:
        return None
    if mask.requires_grad:
        return "attn_mask must not require grad"
    batch, heads, length = call.query.shape[0], call.query.shape[1], call.query.shape[2]
    if mask.shape[-2] not in (length, 1) or mask.shape[-1] not in (call.key.shape[2], 1):
        return "attn_mask shape not broadcastable to (L, S)"
    if len(mask.shape) == 2 or (len(mask.shape) == 4 and mask.shape[0] in (1, batch) and mask.shape[1] in (1, heads)):
        return None
    return "attn_mask must be 2-D (L, S) or 4-D (B, H, L, S)"


def cudnn_rejection(gpu: GpuSpec, call: SdpaCall, flags: SdpaFlags) -> str | None:
    """Why ``can_use_cudnn_attention`` (sdp_utils.cpp) is false, or None. In torch's order: cuDNN ≥ 9.0 present;
    no dropout with cuDNN 9.11–9.13; runtime flag; 4-D inputs; not in strict deterministic mode; fp16/bf16 (fp16
    before sm80); mask shape; compute capability 8.0–12.1; dropout a multiple of 1/16; the dense-input checks; batch
    and heads ≤ 65535, head dims ≤ 128 (256 on sm90/sm10x with cuDNN > 9.22 and frontend ≥ 1.24; 192/128 on sm90/sm10x
    with cuDNN ≥ 9.11) and multiples of 8, key length ≠ 1, no query length 1 with dropout; and with the 256 limit,
    training head dims ≤ 128, (192, 128) or (256, 256)."""
    version = flags.cudnn_version
    if version is None or version < 90000:
        return "needs cuDNN ≥ 9.0 in the torch build"
    if call.dropout_p > 0.0 and 91100 < version < 91400:
        return "cuDNN 9.11–9.13 has no dropout in SDPA"
    if not flags.cudnn:
        return "disabled (torch.backends.cuda.enable_cudnn_sdp / sdpa_kernel)"
    if (why := _four_dimensional(call)) is not None:
        return why
    if flags.deterministic and not flags.deterministic_warn_only:
        return "not deterministic (torch.use_deterministic_algorithms)"
    major, minor = gpu.compute_capability
    if call.dtype not in ((torch.float16, torch.bfloat16) if major >= 8 else (torch.float16,)):
        return "needs fp16/bf16"
    if (why := _mask_shape_rejection(call)) is not None:
        return why
    if not _sm_in(gpu, (8, 0), (12, 1)):
        return f"needs compute capability 8.0–12.1 (the card has {_cc(gpu)})"
    if call.dropout_p * 16.0 != math.floor(call.dropout_p * 16.0):
        return "dropout must be a multiple of 1/16"
    if (why := _dense_shapes(call, ignore_singleton_dim=True)) is not None:
        return why
    return _cudnn_shape_rejection(gpu, call, flags)


def _cudnn_shape_rejection(gpu: GpuSpec, call: SdpaCall, flags: SdpaFlags) -> str | None:
    """check_cudnn_tensor_shapes and check_cudnn_d256_bprop_head_dim."""
    version = flags.cudnn_version or 0
    major, minor = gpu.compute_capability
    batch, heads, s_q, d_qk = call.query.shape
    s_k, d_v = call.key.shape[2], call.value.shape[3]
    if batch > 65535 or heads > 65535:
        return "batch and heads must be ≤ 65535"
    if version < 8903 or (version < 8906 and call.dropout_p != 0.0):
        return "cuDNN too old"
    sm90_or_10x = (major == 9 and minor == 0) or major == 10
    d256 = sm90_or_10x and not (major == 10 and minor == 7 and version <= 92500) and version > 92200 \
        and flags.cudnn_frontend_d256
    limit = 256 if d256 else 192 if sm90_or_10x and version >= 91100 and (d_qk, d_v) == (192, 128) else 128
    if d_qk > limit or d_v > limit:
        return f"head dim must be ≤ {limit} (got {d_qk}, {d_v})"
    if d_qk % 8 or d_v % 8:
        return "head dims must be multiples of 8"
    if version < 8906 and s_k % 64:
        return "cuDNN < 8.9.6 needs key lengths in multiples of 64"
    if version < 90000 and (s_q < 64 or (call.dropout_p != 0.0 and (s_q % 64 or s_k % 64))):
        return "cuDNN < 9.0 needs query lengths ≥ 64"
    if s_k == 1:
        return "key length 1"
    if call.dropout_p != 0.0 and s_q == 1:
        return "query length 1 with dropout"
    if call.requires_grad and d256 and not (
            (d_qk <= 128 and d_v <= 128) or (d_qk, d_v) in ((192, 128), (256, 256))):
        return f"no backward for head dims ({d_qk}, {d_v})"
    return None


def prefers_cudnn(gpu: GpuSpec, flags: SdpaFlags) -> bool:
    """``check_prefer_cudnn_attention`` (sdp_utils.cpp): cuDNN goes first on compute capability 9.x/10.x when the
    runtime cuDNN is newer than 9.15.0 (on CUDA builds before 13, only on x.0/x.3), unless
    ``TORCH_CUDNN_SDPA_DEPRIORITIZED`` is set."""
    if flags.cudnn_deprioritized or flags.cudnn_version is None or flags.cudnn_version <= 91500:
        return False
    major, minor = gpu.compute_capability
    if major not in (9, 10):
        return False
    return flags.cuda_version >= (13, 0) or minor in (0, 3)


def select_kernel(gpu: GpuSpec, call: SdpaCall, flags: SdpaFlags | None = None) -> KernelChoice:
    """The kernel ``select_sdp_backend`` (sdp_utils.cpp) returns for ``call`` on ``gpu``: the first in the priority
    order whose checks pass (math whenever it is enabled). The order is torch's default (flash, efficient, math,
    cuDNN), or cuDNN first where :func:`prefers_cudnn` holds and the order was not changed by the user. Raises
    :class:`ProfilerError` where no kernel can run (torch raises "No available kernel" there)."""
    flags = flags or SdpaFlags.current()
    if not (flags.flash or flags.efficient or flags.math or flags.cudnn):
        raise ProfilerError("scaled_dot_product_attention: every SDPA backend is disabled, so no kernel can run")
    preferred = flags.priority == TORCH_DEFAULT_PRIORITY and prefers_cudnn(gpu, flags)
    order = CUDNN_FIRST_PRIORITY if preferred else flags.priority
    checks = {K.FLASH: flash_rejection, K.EFFICIENT: efficient_rejection, K.CUDNN: cudnn_rejection}
    rejected = []
    for kernel in order:
        why = ("disabled (torch.backends.cuda.enable_math_sdp / sdpa_kernel)" if not flags.math else None) \
            if kernel is K.MATH else checks[kernel](gpu, call, flags)
        if why is None:
            return KernelChoice(kernel, tuple(rejected), cudnn_preferred=preferred and kernel is K.CUDNN)
        rejected.append((kernel, why))
    raise ProfilerError(f"scaled_dot_product_attention: no kernel can run this call on {gpu.name} "
                        f"({'; '.join(f'{k}: {w}' for k, w in rejected)}); enable another backend")


# ------------------------------------------------------------------------------------- the fused kernels' memory

def _probe(op: Any, *args: Any, **kwargs: Any) -> tuple:
    """Run a fused op's meta kernel outside the trace: its outputs give shapes and dtypes, not allocations (some
    of them are host tensors or conditional on CUDA)."""
    with _disable_current_modes():
        return op(*args, **kwargs)


def _like(probe: torch.Tensor) -> torch.Tensor:
    """A traced device allocation with the probe's shape, strides and dtype."""
    return torch.empty_strided(probe.shape, probe.stride(), dtype=probe.dtype, device="meta")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _contiguous_bmhk(t: torch.Tensor) -> torch.Tensor:
    """``t`` (B, H, M, K) as the CUDA kernels want it: the (B, M, H, K) view made contiguous (a copy if needed)."""
    return t.transpose(1, 2).contiguous()


class _FusedAttention(torch.autograd.Function):
    """One fused SDPA call: the forward allocates what the CUDA kernel allocates, autograd saves what the fused op's
    derivative saves (query, key, value, bias, output, logsumexp; the RNG state is small or on the host), and the
    backward allocates what the CUDA backward allocates."""

    @staticmethod
    def forward(ctx: Any, kernel: AttentionKernel, settings: dict, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        lse = _FORWARDS[kernel](query, key, value, bias, settings)
        out, rng_state = settings.pop("out"), settings.pop("rng", ())
        ctx.kernel, ctx.settings = kernel, settings
        ctx.bias_requires_grad = bias is not None and bias.requires_grad
        ctx.save_for_backward(query, key, value, bias, out, lse, *rng_state)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        query, key, value, bias, out, lse = ctx.saved_tensors[:6]
        ctx.settings["tracer"].backward_calls[ctx.kernel] += 1
        grads = _BACKWARDS[ctx.kernel](grad_out, query, key, value, bias, out, ctx)
        return (None, None, *grads)


def _flash_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: None, s: dict) -> torch.Tensor:
    """``_scaled_dot_product_flash_attention_cuda`` → ``mha_fwd`` (flash_api.cpp): ``out = empty_like(q_t)`` in the
    (B, L, H, D) view, logsumexp, then the RNG state (a 2-element and a 0-d uint64 device tensor)."""
    probe = _probe(aten._scaled_dot_product_flash_attention, query, key, value, s["dropout_p"], s["is_causal"],
                   False, scale=s["scale"])
    s["out"] = torch.empty_like(query.transpose(1, 2)).transpose(1, 2)
    lse = _like(probe[1])
    s["rng"] = (_like(probe[6]), _like(probe[7]))   # saved for backward, as the derivative saves them
    return lse


def _flash_backward(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    bias: None, out: torch.Tensor, ctx: Any) -> tuple:
    """``_flash_attention_backward`` + ``mha_bwd``: contiguous ``grad_out`` and ``out`` in (B, L, H, D), ``dq, dk,
    dv = empty_like`` (those views), ``softmax_d`` and the float32 ``dq_accum`` (freed on return)."""
    grad_t, out_t = grad_out.transpose(1, 2).contiguous(), out.transpose(1, 2).contiguous()
    q_t, k_t, v_t = (t.transpose(1, 2) for t in (query, key, value))
    dq, dk, dv = torch.empty_like(q_t), torch.empty_like(k_t), torch.empty_like(v_t)
    batch, length, heads, head_dim = q_t.shape
    rounded_dim = _round_up(head_dim, 32 if head_dim <= 128 else 64)
    softmax_d = q_t.new_empty((batch, heads, _round_up(length, 128)), dtype=torch.float32)
    dq_accum = q_t.new_empty((batch, _round_up(length, 128), heads, rounded_dim), dtype=torch.float32)
    del grad_t, out_t, softmax_d, dq_accum
    return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None


def _efficient_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None,
                       s: dict) -> torch.Tensor:
    """``_efficient_attention_forward`` (attention.cu): philox seed/offset on the host (no dropout or no graph
    capture), ``res`` (B, L, H, Dv), logsumexp (B, H, ⌈L⌉₃₂ with grad, else empty), and for fp16/bf16 with head dims
    above the register-resident kernels a float32 output accumulator, freed on return."""
    probe = _probe(aten._scaled_dot_product_efficient_attention, query, key, value, bias, s["compute_lse"],
                   s["dropout_p"], s["is_causal"], scale=s["scale"])
    s["out"] = _like(probe[0])
    lse = _like(probe[1])
    if query.dtype in HALF_DTYPES and max(query.shape[-1], value.shape[-1]) > EFFICIENT_RF_MAX_HEAD_DIM:
        accumulator = torch.empty(probe[0].transpose(1, 2).shape, dtype=torch.float32, device="meta")
        del accumulator
    return lse


def _efficient_backward(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        bias: torch.Tensor | None, out: torch.Tensor, ctx: Any) -> tuple:
    """``_efficient_attention_backward`` (attention_backward.cu), on the (B, L, H, D) views: ``grad_out`` made
    contiguous; the gradients as one (B, L, 3, H, D) chunk when q, k, v share a storage (and L = S, D = Dv), else
    three contiguous tensors; the bias gradient (last dim padded to 16); ``delta`` (kernel-computed (B, H, L) float32
    for fp16/bf16, else ``(grad_out.float() * out.float()).sum(-1).transpose(-2, -1).contiguous()``); the gradQ
    workspace (see the module docstring). Temporaries are freed on return."""
    grad_t = _contiguous_bmhk(grad_out)
    q_t, k_t, v_t, out_t = (t.transpose(1, 2) for t in (query, key, value, out))
    batch, length, heads, head_dim = q_t.shape
    shared = q_t.untyped_storage() is k_t.untyped_storage() is v_t.untyped_storage()
    if shared and length == k_t.shape[1] and head_dim == v_t.shape[3]:
        chunk = torch.empty((batch, length, 3, heads, head_dim), dtype=q_t.dtype, device="meta")
        grad_q, grad_k, grad_v = chunk.select(2, 0), chunk.select(2, 1), chunk.select(2, 2)
        del chunk
    else:
        grad_q, grad_k, grad_v = (torch.empty(t.shape, dtype=t.dtype, device="meta") for t in (q_t, k_t, v_t))
    grad_bias = None
    if ctx.bias_requires_grad:
        padded = [*bias.shape[:-1], _round_up(bias.shape[-1], 16)]
        grad_bias = torch.empty(padded, dtype=bias.dtype, device="meta")[..., :bias.shape[-1]]
    if query.dtype in HALF_DTYPES and not (ctx.settings["cc"] == (7, 0) and head_dim > EFFICIENT_BACKWARD_TILE):
        delta = torch.empty((batch, heads, length), dtype=torch.float32, device="meta")
    else:
        delta = (grad_t.to(torch.float32) * out_t.to(torch.float32)).sum(-1).transpose(-2, -1).contiguous()
    workspace = torch.empty(efficient_backward_workspace_bytes(ctx.settings["cc"], query.dtype, batch, heads, length,
                                                               head_dim), dtype=torch.uint8, device="meta")
    del grad_t, delta, workspace
    return grad_q.transpose(1, 2), grad_k.transpose(1, 2), grad_v.transpose(1, 2), grad_bias


def efficient_backward_workspace_bytes(cc: tuple[int, int], dtype: torch.dtype, batch: int, heads: int, length: int,
                                       head_dim: int) -> int:
    """Bytes of the memory-efficient backward's workspace (``Params::workspace_size`` in kernel_backward.h) for its
    gradQ accumulator: needed where split keys are on (sm70+) or the output is not float32; per batch and head,
    ⌈L/T⌉·⌈D/T⌉ tiles of T×T float32 plus a 16-byte lock/counter header, T = :data:`EFFICIENT_BACKWARD_TILE`
    (assumed), rounded to 16 bytes."""
    if cc < (7, 0) and dtype not in HALF_DTYPES:
        return 0
    tile = EFFICIENT_BACKWARD_TILE
    tiles = -(-length // tile) * -(-head_dim // tile)
    elements = _round_up(tiles * (4 + tile * tile), 4)
    return batch * heads * elements * 4


def _cudnn_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None,
                   s: dict) -> torch.Tensor:
    """``_cudnn_attention_forward`` (attention.cu): seed and offset (0-d int64 device tensors), then the output in
    the query's layout (``alloc_with_matching_layout``) and, when training, logsumexp (B, H, L, 1) float32."""
    probe = _probe(aten._scaled_dot_product_cudnn_attention, query, key, value, bias, s["compute_lse"],
                   s["dropout_p"], s["is_causal"], False, scale=s["scale"])
    s["rng"] = (_like(probe[6]), _like(probe[7]))
    s["out"] = _like(probe[0])
    return _like(probe[1]) if s["compute_lse"] else probe[1].new_empty(0, device="meta")


def _cudnn_backward(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    bias: torch.Tensor | None, out: torch.Tensor, ctx: Any) -> tuple:
    """``_scaled_dot_product_cudnn_attention_backward``: gradients in the inputs' layouts; cuDNN's plan workspace,
    not published, assumed like flash's backward: a float32 dQ accumulator (B, H, L, D) and a float32 row
    statistic (B, H, L)."""
    grads = tuple(torch.empty_like(t) for t in (query, key, value))
    batch, heads, length, head_dim = query.shape
    accumulator = torch.empty((batch, heads, length, head_dim), dtype=torch.float32, device="meta")
    statistic = torch.empty((batch, heads, length), dtype=torch.float32, device="meta")
    del accumulator, statistic
    return (*grads, None)


_FORWARDS = {K.FLASH: _flash_forward, K.EFFICIENT: _efficient_forward, K.CUDNN: _cudnn_forward}
_BACKWARDS = {K.FLASH: _flash_backward, K.EFFICIENT: _efficient_backward, K.CUDNN: _cudnn_backward}


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``convert_boolean_attn_mask`` (attention.cpp): a bool mask becomes ``zeros_like(mask, dtype)`` filled with
    −inf where it is False; a float mask is used as is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    additive = torch.zeros_like(mask, dtype=dtype)
    additive.masked_fill_(mask.logical_not(), float("-inf"))
    return additive


def _efficient_mask(mask: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``preprocess_mask`` (attention.cpp): pad the bias to a multiple of 8 elements in its last dim unless every
    other stride already is one (then slice back), and expand it to (B, H, L, S)."""
    aligned = mask.stride(-1) == 1 and all(mask.stride(i) % 8 == 0 for i in range(mask.dim() - 1))
    if not aligned:
        length = mask.shape[-1]
        mask = F.pad(mask, (0, 8 - length % 8))[..., :length]
    return mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])


def _math(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
          dropout_p: float, is_causal: bool, scale: float | None, enable_gqa: bool) -> torch.Tensor:
    """The meta run's own SDPA, which is CUDA's math path (``_scaled_dot_product_attention_math``); function modes
    off, so that the trace's redirection does not see this call again."""
    with torch._C.DisableTorchFunction():
        return SDPA(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)


# ------------------------------------------------------------------------------ nn.MultiheadAttention's fast path

def mha_fast_path_blocker(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> str:
    """Why ``nn.MultiheadAttention.forward`` would not call ``torch._native_multi_head_attention`` on a CUDA device
    ("" when it would): its own conditions, in its order, without the two that only fail because the trace runs on
    meta tensors under a function mode (``has_torch_function``, the device check)."""
    if (attn_mask is not None and torch.is_floating_point(attn_mask)) or (
            key_padding_mask is not None and torch.is_floating_point(key_padding_mask)):
        return "floating-point masks"
    if not torch.backends.mha.get_fastpath_enabled():
        return "torch.backends.mha.get_fastpath_enabled() is False"
    if query.dim() != 3:
        return "input not batched"
    if query is not key or key is not value:
        return "not self-attention (query, key and value are not the same tensor)"
    weight, bias = module.in_proj_weight, module.in_proj_bias
    if bias is not None and query.dtype != bias.dtype:
        return "query and in_proj_bias dtypes differ"
    if weight is None:
        return "in_proj_weight is None"
    if query.dtype != weight.dtype:
        return "query and in_proj_weight dtypes differ"
    reasons = ((module.training, "training"), (module.num_heads % 2 != 0, "num_heads is odd"),
               (not module.batch_first, "batch_first is False"), (module.bias_k is not None, "bias_k is set"),
               (module.bias_v is not None, "bias_v is set"), (module.add_zero_attn, "add_zero_attn"),
               (not module._qkv_same_embed_dim, "kdim/vdim differ from embed_dim"),
               (query.is_nested and (key_padding_mask is not None or attn_mask is not None), "nested with masks"),
               (torch.is_autocast_enabled(), "autocast"))
    for blocked, why in reasons:
        if blocked:
            return why
    tensors = (query, weight, bias, module.out_proj.weight, module.out_proj.bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return "grad is enabled and an input or weight requires grad"
    if bias is None:
        return "in_proj_bias is None"
    return ""


# ----------------------------------------------------------------------------------------------- the tracer

class CudaAttention:
    """Traces attention as ``gpu`` runs it: :meth:`sdpa` stands in for ``F.scaled_dot_product_attention``,
    :meth:`multihead_fast_path` patches each ``nn.MultiheadAttention`` of a model for the inference fast path, and
    :meth:`notes` says which kernel each call was traced as."""

    def __init__(self, gpu: GpuSpec, flags: SdpaFlags | None = None) -> None:
        self.gpu = gpu
        self.flags = flags
        self.sdpa_calls: Counter[tuple[AttentionKernel, str, str]] = Counter()
        self.backward_calls: Counter[AttentionKernel] = Counter()
        self.mha_calls: Counter[str] = Counter()

    def sdpa(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
             dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
             enable_gqa: bool = False) -> torch.Tensor:
        """What ``scaled_dot_product_attention`` (attention.cpp) runs on the card: the kernel of
        :func:`select_kernel`, with the composite's own preprocessing (boolean masks made additive; the
        memory-efficient kernel's mask padded and expanded; flash's head dim padded to a multiple of 8)."""
        call = SdpaCall.of(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)
        if query.is_nested or key.is_nested or value.is_nested:
            return _math(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        choice = select_kernel(self.gpu, call, self.flags or SdpaFlags.current())
        heads_differ = len({query.shape[-3], key.shape[-3], value.shape[-3]}) > 1 if query.dim() == 4 else False
        kernel = K.MATH if heads_differ else choice.kernel   # grouped-query attention: traced on the math path
        if not in_backward():   # not a checkpoint's recomputation during backward
            self.sdpa_calls[(kernel, str(query.dtype).removeprefix("torch."),
                             choice.reason() if kernel is choice.kernel else "grouped-query heads: not modelled")] += 1
        if kernel is K.MATH:
            return _math(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        settings = dict(dropout_p=float(dropout_p), is_causal=bool(is_causal), scale=scale,
                        compute_lse=call.requires_grad, cc=self.gpu.compute_capability, tracer=self)
        if kernel is K.FLASH:
            head_dim = query.shape[-1]
            if head_dim % 8:   # pad_last_dim<8, false>: the kernel sees padded copies, the output is sliced back
                query, key, value = (F.pad(t, (0, 8 - head_dim % 8)) for t in (query, key, value))
                settings["scale"] = scale if scale is not None else 1.0 / math.sqrt(head_dim)
            return _FusedAttention.apply(kernel, settings, query, key, value, None)[..., :head_dim]
        bias = _additive_mask(attn_mask, query.dtype)
        if kernel is K.EFFICIENT and bias is not None:
            bias = _efficient_mask(bias, query, key)
        return _FusedAttention.apply(kernel, settings, query, key, value, bias)

    def native_multi_head_attention(self, module: nn.MultiheadAttention, query: torch.Tensor,
                                    mask: torch.Tensor | None, need_weights: bool, average_attn_weights: bool,
                                    mask_type: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``native_multi_head_attention_cuda`` (attention.cu) for self-attention: without weights or mask, when
        a fused kernel would run, ``linear`` → chunks → :meth:`sdpa` → ``linear``; otherwise its own math: the QKV
        projection, ``_transform_bias_rescale_qkv`` into a (3, B, H, T, Dh) buffer, the (B, H, T, T) scores and
        their (masked) softmax, the context written over q's storage, the output projection, and the head-averaged
        weights when asked for."""
        batch, length, embed = query.shape
        heads = module.num_heads
        head_dim = embed // heads
        weight, bias = module.in_proj_weight, module.in_proj_bias
        proj_weight, proj_bias = module.out_proj.weight, module.out_proj.bias
        route = "need_weights=True"
        if not need_weights:
            view = query.view(batch, -1, heads, head_dim).transpose(1, 2)
            kernel = select_kernel(self.gpu, SdpaCall.of(view, view, view, mask), self.flags).kernel
            route = "a mask" if mask is not None else "the math kernel would be chosen" if kernel is K.MATH else ""
            if not route:
                self.mha_calls["took the inference fast path (torch._native_multi_head_attention): fused SDPA"] += 1
                chunks = [c.view(batch, -1, heads, head_dim).transpose(1, 2)
                          for c in F.linear(query, weight, bias).chunk(3, -1)]
                attended = self.sdpa(*chunks)
                del chunks
                return F.linear(attended.transpose(1, 2).reshape(batch, -1, embed), proj_weight, proj_bias), None
        self.mha_calls["took the inference fast path (torch._native_multi_head_attention): its own matmul + "
                       f"softmax, scores materialized ({route})"] += 1
        qkv = torch.matmul(query, weight.t())
        q_k_v = torch.empty((3, batch, heads, length, head_dim), dtype=bias.dtype, device="meta")
        del qkv
        q, k, v = q_k_v.view(3 * batch, heads, length, head_dim).split(batch, 0)
        scores = torch.bmm(q.reshape(batch * heads, length, head_dim),
                           k.reshape(batch * heads, length, head_dim).transpose(2, 1)).view(batch, heads, length,
                                                                                             length)
        if mask is None:
            aten._softmax.out(scores, -1, False, out=scores)
        else:
            boolean = mask if mask.dtype == torch.bool else mask.to(torch.bool)
            del boolean
            scores = torch.empty_like(scores)   # _masked_softmax writes a new tensor (no meta kernel to run)
        context = q.reshape(batch * heads, length, head_dim)
        torch.bmm(scores.view(batch * heads, length, length), v.reshape(batch * heads, length, head_dim),
                  out=context)
        if not need_weights:
            scores = None
        merged = context.view(batch, heads, length, head_dim).permute(0, 2, 1, 3).contiguous()
        out = F.linear(merged.view(batch * length, embed), proj_weight, proj_bias).view(batch, length, embed)
        del merged, q, k, v, q_k_v, context
        if need_weights and average_attn_weights:
            scores = scores.sum(1)
            scores /= heads
        return out, scores

    def _mha_forward(self, module: nn.MultiheadAttention, original: Any, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                     attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                     is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        why_not = mha_fast_path_blocker(module, query, key, value, key_padding_mask, attn_mask)
        if why_not:
            if not module.training:
                self.mha_calls[f"did not take the inference fast path ({why_not})"] += 1
            return original(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        key_padding_mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                             other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                             target_type=query.dtype)
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                      target_type=query.dtype, check_other=False)
        merged, mask_type = module.merge_masks(attn_mask, key_padding_mask, query)
        return self.native_multi_head_attention(module, query, merged, need_weights, average_attn_weights, mask_type)

    @contextmanager
    def redirected(self, model: nn.Module) -> Iterator[None]:
        """Within the block, ``F.scaled_dot_product_attention`` is :meth:`sdpa` (the attribute: the calls inside
        other functions, e.g. ``F.multi_head_attention_forward``, which a function mode does not see; direct
        references to the builtin are the trace's function mode's to redirect), and every
        ``nn.MultiheadAttention`` of ``model`` takes the inference fast path where ``nn.MultiheadAttention.forward``
        would on a CUDA device (:func:`mha_fast_path_blocker`)."""
        patched = []
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.forward = partial(self._mha_forward, module, module.forward)
                patched.append((module, module.forward))
        previous, F.scaled_dot_product_attention = F.scaled_dot_product_attention, self.sdpa
        try:
            yield
        finally:
            F.scaled_dot_product_attention = previous
            for module, forward in patched:
                if module.__dict__.get("forward") is forward:
                    del module.forward

    def notes(self, steps: int = 1) -> list[str]:
        """One line per (kernel, dtype, reason) of the traced SDPA calls and per outcome of the MHA fast path, with
        the calls of one step (the trace ran ``steps`` identical steps)."""
        def calls(count: int) -> str:
            count //= steps
            return f"{count} call{'s' * (count != 1)}"

        lines = []
        for (kernel, dtype, reason), count in sorted(self.sdpa_calls.items()):
            lines.append(f"scaled_dot_product_attention: {calls(count)} traced as {kernel.words} "
                         f"({dtype} on {self.gpu.name}: {reason})")
        if self.backward_calls[K.CUDNN]:
            lines.append("cuDNN attention backward: cuDNN's plan workspace is not published; modelled as flash's "
                         "(a float32 dQ accumulator and row statistic)")
        for outcome, count in sorted(self.mha_calls.items()):
            lines.append(f"nn.MultiheadAttention: {calls(count)} {outcome}")
        return lines
