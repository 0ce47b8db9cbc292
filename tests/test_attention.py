"""Attention traced as a CUDA device runs it: torch's SDPA kernel choice re-implemented per card, dtype and shapes;
what the fused kernels allocate (derived by hand from the CUDA sources); nn.MultiheadAttention's inference fast path;
and the effect on whole predictions."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from profiler.catalogue import GPUS
from profiler.errors import ProfilerError
from profiler.kinds import AttentionKernel as K
from profiler.memory.attention import (
    CUDNN_FIRST_PRIORITY,
    CudaAttention,
    Mask,
    Operand,
    SdpaCall,
    SdpaFlags,
    efficient_backward_workspace_bytes,
    gemm_alignment,
    mha_fast_path_blocker,
    prefers_cudnn,
    select_kernel,
)
from profiler.memory.predict import predict
from profiler.memory.runner import predict_config
from profiler.memory.trace import trace_step
from profiler.models import build, resolve
from profiler.step import StepConfig

MiB = 1 << 20
H100, A100, T4, V100, RTX3090 = (GPUS[key] for key in ("h100", "a100-80gb", "t4", "v100-16gb", "rtx3090"))
#: torch 2.14.1+cu130 as installed here: its wheel ships cuDNN 9.24.
FLAGS = SdpaFlags(cudnn_version=92400, cuda_version=(13, 0))


def call(dtype: torch.dtype = torch.bfloat16, batch: int = 8, heads: int = 8, length: int = 1024, head_dim: int = 64,
         key_length: int | None = None, **facts) -> SdpaCall:
    """An SDPA call on contiguous (B, H, L, D) query, key and value."""
    key_length = key_length or length
    query = Operand.contiguous(batch, heads, length, head_dim)
    key = Operand.contiguous(batch, heads, key_length, head_dim)
    return SdpaCall(dtype, query, key, key, **facts)


def kernel(gpu, sdpa_call: SdpaCall, flags: SdpaFlags = FLAGS) -> K:
    return select_kernel(gpu, sdpa_call, flags).kernel


# ------------------------------------------------------------------------------------------ torch's kernel choice

def test_hopper_with_cudnn_newer_than_9_15_puts_cudnn_first_for_bf16():
    # check_prefer_cudnn_attention: cuDNN > 9.15.0 on compute capability 9.x/10.x → cuDNN, flash, efficient, math.
    assert prefers_cudnn(H100, FLAGS)
    choice = select_kernel(H100, call(torch.bfloat16), FLAGS)
    assert choice.kernel is K.CUDNN and choice.cudnn_preferred


def test_bf16_goes_to_flash_where_cudnn_is_not_preferred_or_not_possible():
    assert kernel(A100, call(torch.bfloat16)) is K.FLASH                      # sm80: torch's default order
    assert kernel(H100, call(torch.bfloat16), SdpaFlags(cudnn_version=91500)) is K.FLASH   # cuDNN 9.15.0: not > 9.15
    assert kernel(H100, call(torch.bfloat16), SdpaFlags(cudnn_version=92400, cudnn_deprioritized=True)) is K.FLASH
    assert kernel(H100, call(torch.bfloat16), SdpaFlags(cudnn_version=92400, cudnn=False)) is K.FLASH
    # a priority order the user set is kept: then math (before cuDNN in torch's default) would come first
    user_order = SdpaFlags(cudnn_version=92400, priority=(K.EFFICIENT, K.FLASH, K.MATH, K.CUDNN))
    assert kernel(H100, call(torch.bfloat16), user_order) is K.EFFICIENT


def test_cuda_builds_before_13_prefer_cudnn_only_on_x0_and_x3():
    assert prefers_cudnn(H100, SdpaFlags(cudnn_version=92400, cuda_version=(12, 8)))        # 9.0
    hopper_9_1 = replace(H100, compute_capability=(9, 1))
    assert not prefers_cudnn(hopper_9_1, SdpaFlags(cudnn_version=92400, cuda_version=(12, 8)))
    assert prefers_cudnn(hopper_9_1, SdpaFlags(cudnn_version=92400, cuda_version=(13, 0)))
    assert not prefers_cudnn(A100, FLAGS)


def test_fp32_on_hopper_is_the_memory_efficient_kernel_because_flash_and_cudnn_need_half():
    choice = select_kernel(H100, call(torch.float32), FLAGS)
    assert choice.kernel is K.EFFICIENT
    assert choice.rejected == ((K.CUDNN, "needs fp16/bf16"), (K.FLASH, "needs fp16/bf16"))


def test_turing_fp16_is_memory_efficient_and_bf16_falls_to_math():
    assert kernel(T4, call(torch.float16)) is K.EFFICIENT         # flash needs sm80; mem-efficient takes fp16 on sm75
    choice = select_kernel(T4, call(torch.bfloat16), FLAGS)
    assert choice.kernel is K.MATH                                 # bf16 needs sm80 for the mem-efficient kernel too
    assert dict(choice.rejected)[K.EFFICIENT] == "needs fp16/fp32 on compute capability 7.5"


def test_head_dim_512_is_not_flash_nor_cudnn():
    choice = select_kernel(H100, call(torch.bfloat16, head_dim=512), FLAGS)
    assert choice.kernel is K.EFFICIENT
    assert dict(choice.rejected) == {K.CUDNN: "head dim must be ≤ 128 (got 512, 512)",
                                     K.FLASH: "needs equal head dims ≤ 256 (got 512, 512, 512)"}
    assert kernel(A100, call(torch.bfloat16, head_dim=256)) is K.FLASH


def test_memory_efficient_alignment_depends_on_dtype_and_card():
    assert [gemm_alignment(gpu, dtype) for gpu in (H100, T4, GPUS["v100-16gb"])
            for dtype in (torch.float32, torch.float16)] == [4, 8, 1, 8, 1, 8]
    assert kernel(H100, call(torch.float32, head_dim=30)) is K.MATH       # 30 % 4 != 0
    assert kernel(V100, call(torch.float32, head_dim=30)) is K.EFFICIENT  # fp32 on sm70: alignment 1
    shifted = Operand((8, 8, 1024, 64), (8 * 1024 * 64, 1024 * 64, 64, 1), storage_offset=2)
    misaligned = SdpaCall(torch.float32, shifted, shifted, shifted)
    assert dict(select_kernel(H100, misaligned, FLAGS).rejected)[K.EFFICIENT] == \
        "needs storage offsets aligned to 16 bytes"


def test_masks_rule_out_flash_and_need_a_2d_or_4d_shape_for_cudnn():
    square = Mask((1024, 1024))
    assert kernel(A100, call(torch.bfloat16, mask=square)) is K.EFFICIENT
    assert kernel(H100, call(torch.bfloat16, mask=square)) is K.CUDNN
    assert kernel(H100, call(torch.bfloat16, mask=Mask((8, 1, 1, 1024)))) is K.CUDNN
    three_d = select_kernel(H100, call(torch.bfloat16, mask=Mask((8, 1024, 1024))), FLAGS)
    assert three_d.kernel is K.EFFICIENT
    assert dict(three_d.rejected)[K.CUDNN] == "attn_mask must be 2-D (L, S) or 4-D (B, H, L, S)"
    assert kernel(H100, call(torch.bfloat16, mask=Mask((1024, 1024), requires_grad=True))) is K.EFFICIENT


def test_dropout_goes_to_cudnn_only_in_multiples_of_a_sixteenth():
    assert kernel(H100, call(torch.bfloat16, dropout_p=0.125)) is K.CUDNN
    choice = select_kernel(H100, call(torch.bfloat16, dropout_p=0.1), FLAGS)
    assert choice.kernel is K.FLASH and choice.rejected == ((K.CUDNN, "dropout must be a multiple of 1/16"),)
    assert kernel(H100, call(torch.bfloat16, dropout_p=0.125), SdpaFlags(cudnn_version=91200)) is K.FLASH


def test_causal_attention_needs_square_lengths_for_flash():
    assert kernel(A100, call(torch.bfloat16, is_causal=True)) is K.FLASH
    assert kernel(A100, call(torch.bfloat16, is_causal=True, key_length=512)) is K.EFFICIENT


def test_flash_cannot_train_head_dims_between_192_and_224_on_sm86_to_89():
    wide = call(torch.bfloat16, head_dim=200, requires_grad=True)
    assert kernel(RTX3090, wide) is K.EFFICIENT
    assert kernel(RTX3090, call(torch.bfloat16, head_dim=200)) is K.FLASH       # inference is fine
    assert kernel(A100, wide) is K.FLASH                                          # and sm80 trains it


def test_disabled_backends_follow_the_sdpa_kernel_context():
    with sdpa_kernel(SDPBackend.MATH):
        assert kernel(A100, call(torch.bfloat16), SdpaFlags.current()) is K.MATH
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        assert kernel(A100, call(torch.bfloat16), SdpaFlags.current()) is K.EFFICIENT
    with pytest.raises(ProfilerError, match="no kernel can run"):
        kernel(T4, call(torch.bfloat16), SdpaFlags(math=False))
    with pytest.raises(ProfilerError, match="every SDPA backend is disabled"):
        kernel(A100, call(), SdpaFlags(flash=False, efficient=False, math=False, cudnn=False))


def test_strict_determinism_rules_out_cudnn_and_three_d_inputs_need_math():
    strict = SdpaFlags(cudnn_version=92400, deterministic=True)
    assert kernel(H100, call(torch.bfloat16), strict) is K.FLASH
    flat = Operand.contiguous(64, 1024, 64)
    assert kernel(H100, SdpaCall(torch.float32, flat, flat, flat), FLAGS) is K.MATH


def test_cudnn_first_order_is_torchs():
    assert CUDNN_FIRST_PRIORITY == (K.CUDNN, K.FLASH, K.EFFICIENT, K.MATH)


# ------------------------------------------------------------------------------- what the fused kernels allocate

class Attend(nn.Module):
    """A leaf that only runs SDPA: the trace attributes the kernel's allocations to it."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


class OneAttention(nn.Module):
    """QKV projection (q, k, v are chunks of one output, as in nn.MultiheadAttention), SDPA, mean, classifier."""

    def __init__(self, dim: int = 64, heads: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn = Attend()
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        return self.head(self.attn(q, k, v).mean(2).flatten(1))


def _trace(train: bool, dtype: torch.dtype, gpu, shape=(8, 4096, 64)):
    config = StepConfig.make(train, dtype=str(dtype).removeprefix("torch."))
    return trace_step(OneAttention().to("meta"), shape, config, gpu=gpu)


def _attention_allocations(trace) -> dict[str, list[int]]:
    """Bytes of each allocation the SDPA leaf made in the measured step, by phase."""
    measuring, sizes = False, {}
    for event in trace.events:
        measuring = measuring or event.kind == "measure"
        if measuring and event.kind == "alloc" and event.layer == "attn":
            sizes.setdefault(event.phase, []).append(event.nbytes)
    return sizes


def test_fused_ops_have_meta_kernels_giving_the_shapes_the_trace_allocates():
    aten = torch.ops.aten
    q = torch.empty(2, 3, 100, 64, device="meta", dtype=torch.bfloat16)
    efficient = aten._scaled_dot_product_efficient_attention(q, q, q, None, True)
    assert [tuple(t.shape) for t in efficient] == [(2, 3, 100, 64), (2, 3, 128), (), ()]   # logsumexp: ⌈100⌉₃₂
    flash = aten._scaled_dot_product_flash_attention(q, q, q)
    assert (tuple(flash[1].shape), tuple(flash[6].shape), flash[6].dtype) == ((2, 3, 100), (2,), torch.uint64)
    cudnn = aten._scaled_dot_product_cudnn_attention(q, q, q, None, True)
    assert tuple(cudnn[1].shape) == (2, 3, 100, 1)
    grads = aten._scaled_dot_product_efficient_attention_backward(q, q, q, q, None, efficient[0], efficient[1],
                                                                  efficient[2], efficient[3], 0.0, [True] * 4)
    assert [tuple(g.shape) for g in grads[:3]] == [(2, 3, 100, 64)] * 3




SCORES_FP32 = 8 * 4096 * 4096 * 4      # one fp32 score matrix for the batch: 512 MiB


@pytest.mark.parametrize("train", [False, True])
def test_one_fp32_attention_over_4096_tokens_peaks_below_one_score_matrix(train):
    fused = predict(_trace(train, torch.float32, H100), H100, "one attention")
    assert fused.peak_allocated_bytes < SCORES_FP32
    with sdpa_kernel(SDPBackend.MATH):           # the math path materializes the scores: the bound can fail
        math_path = predict(_trace(train, torch.float32, H100), H100, "one attention")
    assert math_path.peak_allocated_bytes > SCORES_FP32


def test_memory_efficient_kernel_allocations_match_the_cuda_sources():
    # B=8, L=4096, H=1, D=64, fp32. Forward (_efficient_attention_forward): res B×L×H×D×4 = 8 MiB and logsumexp
    # B×H×⌈L⌉₃₂×4 = 128 KiB with grad (empty without); seed/offset are host tensors.
    inference, training = _trace(False, torch.float32, H100), _trace(True, torch.float32, H100)
    assert _attention_allocations(inference) == {"forward": [8 * MiB, 0]}
    assert inference.layer_activation_bytes["attn"] == 8 * MiB
    assert training.layer_activation_bytes["attn"] == 8 * MiB + 128 * 1024   # output and logsumexp, saved
    # Backward (_efficient_attention_backward): grad_out is already contiguous in (B, L, H, D) with H = 1; q, k, v
    # share the projection's storage → one B×L×3×H×D chunk (24 MiB); fp32 delta = (grad_out * out) (8 MiB), .sum(-1)
    # (128 KiB), its transpose already contiguous; gradQ workspace: 64 tiles of (4 + 64·64) floats per batch → 8 ×
    # 262,400 × 4 B.
    assert _attention_allocations(training)["backward"] == [24 * MiB, 8 * MiB, 128 * 1024, 8 * 262_400 * 4]
    assert efficient_backward_workspace_bytes((9, 0), torch.float32, 8, 1, 4096, 64) == 8_396_800


def test_flash_kernel_allocations_match_the_cuda_sources():
    # bf16 on an A100: mha_fwd allocates out (4 MiB), softmax_lse B×H×L float32 (128 KiB), rng_state (2 × uint64)
    # and a 0-d uint64; mha_bwd: dq, dk, dv (4 MiB each), softmax_d B×H×⌈L⌉₁₂₈ float32 and dq_accum
    # B×⌈L⌉₁₂₈×H×⌈D⌉₃₂ float32 (8 MiB).
    training = _trace(True, torch.bfloat16, A100)
    allocations = _attention_allocations(training)
    assert allocations["forward"] == [4 * MiB, 128 * 1024, 16, 8]
    assert allocations["backward"] == [4 * MiB, 4 * MiB, 4 * MiB, 128 * 1024, 8 * MiB]
    assert training.layer_activation_bytes["attn"] == 4 * MiB + 128 * 1024 + 512 + 512


def test_the_trace_says_which_kernel_was_assumed():
    assert _trace(True, torch.float32, H100).notes == [
        "scaled_dot_product_attention: 1 call traced as the memory-efficient kernel (float32 on NVIDIA H100 80GB "
        "HBM3: cudnn: needs fp16/bf16; flash: needs fp16/bf16)"]
    cudnn = _trace(True, torch.bfloat16, H100, shape=(2, 256, 64))
    assert cudnn.notes[0].startswith("scaled_dot_product_attention: 1 call traced as the cuDNN attention kernel")
    assert cudnn.notes[1].startswith("cuDNN attention backward: cuDNN's plan workspace is not published")


# ----------------------------------------------------------------------------- nn.MultiheadAttention's fast path

def _mha(**kwargs) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(64, kwargs.pop("heads", 4), batch_first=kwargs.pop("batch_first", True), **kwargs)


@pytest.mark.parametrize(("make", "train", "why"), [
    (lambda: _mha(), False, ""),
    (lambda: _mha(), True, "training"),
    (lambda: _mha(batch_first=False), False, "batch_first is False"),
    (lambda: _mha(heads=1), False, "num_heads is odd"),
    (lambda: _mha(bias=False), False, "in_proj_bias is None"),
    (lambda: _mha(kdim=32), False, "in_proj_weight is None"),
    (lambda: _mha(add_bias_kv=True), False, "bias_k is set"),
])
def test_mha_fast_path_conditions_agree_with_torch(monkeypatch, make, train, why):
    module = make().train(train)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert mha_fast_path_blocker(module, x, x, x) == why
    calls = []                        # torch itself, on the CPU: does MultiheadAttention call the fused op?
    native = torch._native_multi_head_attention
    monkeypatch.setattr(torch, "_native_multi_head_attention", lambda *a, **k: calls.append(1) or native(*a, **k))
    key = x if module._qkv_same_embed_dim else torch.randn(2, 5, 32)
    with torch.no_grad():
        module(x, key, key if module._qkv_same_embed_dim else x, need_weights=False)
    assert bool(calls) == (why == "")


def test_mha_fast_path_needs_self_attention_and_no_float_mask():
    module = _mha().eval()
    x, y = torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    with torch.no_grad():
        assert mha_fast_path_blocker(module, x, y, y) == \
            "not self-attention (query, key and value are not the same tensor)"
        assert mha_fast_path_blocker(module, x, x, x, attn_mask=torch.zeros(5, 5)) == "floating-point masks"
        assert mha_fast_path_blocker(module, x, x, x, attn_mask=torch.zeros(5, 5, dtype=torch.bool)) == ""
    assert mha_fast_path_blocker(module, x, x, x) == "grad is enabled and an input or weight requires grad"


class SelfAttention(nn.Module):
    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(256, 4, batch_first=batch_first)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(x, x, x, need_weights=False)[0].mean(1))


def test_mha_inference_is_traced_on_the_fast_path_where_it_applies():
    shape = (4, 1024, 256)
    fast = trace_step(SelfAttention().to("meta"), shape, StepConfig.make(), gpu=H100)
    assert fast.notes == [
        "scaled_dot_product_attention: 1 call traced as the memory-efficient kernel (float32 on NVIDIA H100 80GB "
        "HBM3: cudnn: needs fp16/bf16; flash: needs fp16/bf16)",
        "nn.MultiheadAttention: 1 call took the inference fast path (torch._native_multi_head_attention): fused "
        "SDPA"]
    slow = trace_step(SelfAttention(batch_first=False).to("meta"), shape, StepConfig.make(), gpu=H100)
    assert slow.notes[-1] == "nn.MultiheadAttention: 1 call did not take the inference fast path (batch_first is " \
                             "False)"
    # The fast path: linear → one (B, T, 3D) projection → SDPA → linear; no (B, H, T, T) scores either way.
    scores = 4 * 4 * 1024 * 1024 * 4
    assert predict(fast, H100, "mha").peak_allocated_bytes < scores
    with sdpa_kernel(SDPBackend.MATH):   # then the fast path runs its own math: scores materialized
        math_fast = trace_step(SelfAttention().to("meta"), shape, StepConfig.make(), gpu=H100)
    assert predict(math_fast, H100, "mha").peak_allocated_bytes > scores


# --------------------------------------------------------------------------------------- whole predictions

def test_vit_b16_training_is_predicted_far_below_the_math_path():
    spec = resolve("torchvision:vit_b_16")

    def peak() -> int:
        trace = trace_step(build(spec, 224), spec.input_shape(64, 224), StepConfig.make(train=True), gpu=H100)
        return predict(trace, H100, spec.name).peak_allocated_bytes

    fused = peak()
    with sdpa_kernel(SDPBackend.MATH):
        math_path = peak()
    # The math path keeps at least one fp32 (B, H, L, L) score tensor per layer for backward: 12 layers × 64 × 12 ×
    # 197 × 197 × 4 B = 1.43 GB that the fused kernel never allocates.
    assert fused <= math_path - 12 * 64 * 12 * 197 * 197 * 4
    result = predict_config("torchvision:vit_b_16", 224, 64, train=True)
    assert result.peak_allocated_bytes == fused
    assert result.notes[0] == ("scaled_dot_product_attention: 12 calls traced as the memory-efficient kernel "
                               "(float32 on NVIDIA H100 80GB HBM3: cudnn: needs fp16/bf16; flash: needs fp16/bf16)")


def test_tracing_patches_torch_only_within_the_block():
    module = _mha()
    with CudaAttention(H100).redirected(nn.Sequential(module)):
        assert F.scaled_dot_product_attention is not torch._C._nn.scaled_dot_product_attention
        assert "forward" in module.__dict__
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention
    assert "forward" not in module.__dict__
