"""The GPU kernels of one step, as the time model (:mod:`profiler.bandwidth.timemodel`) sees them: which kernels each
aten op launches on CUDA, with the FLOPs and bytes of each, its op class and its layer.

The step runs on meta tensors (no compute, batch size is free) under a dispatch mode that sees every aten op; each op
is priced by :func:`profiler.counting.rules.op_cost` and charged to the layer :class:`~profiler.scopes.ModuleScopes`
names, so a kernel's layer is the row the static counter gives the same op. The step is the measured one: inference
is ``eval()`` and one forward without autograd; a training step is forward, cross-entropy, backward, and the
optimizer update, whose kernels the static counts do not include and which are derived here (:data:`OPTIMIZERS`).

Kernels per op (a convention: cuDNN and cuBLAS may launch helper kernels we do not see):

* ops that move no byte (views, reshapes, bare allocations) launch **no kernel**;
* a convolution launches **one cuDNN kernel** (FLOPs = 2 × MACs; bytes = input + weight + output) and, with a bias,
  **one bias add** (elementwise: reads the output and the bias, writes the output), as ATen's ``_convolution`` adds the
  bias after ``cudnn_convolution``;
* a convolution backward launches one kernel per gradient it computes: the **input gradient** (bytes = grad_output +
  weight + grad_input), the **weight gradient** (grad_output + input + grad_weight), each with the forward's FLOPs,
  and the **bias gradient** (a reduction: grad_output + grad_bias);
* **layout transforms** (``nhwc_convolutions``, where cuDNN runs convolutions on tensor cores): cuDNN's tensor-core
  convolution kernels read channels-last (NHWC) operands, so each channels-first operand of each cuDNN call is
  transposed first by a kernel of its own (elementwise: reads and writes the tensor), as profiles of float32 NCHW
  convolutions show (``cudnn::ops::nchwToNhwcKernel`` before ``*_nhwckrsc_*`` kernels, pytorch/pytorch#81940: A100,
  cuDNN 8; assumed for Hopper and cuDNN 9 until a per-layer GPU run shows their kernels): the forward transposes its
  input and weight, the input gradient grad_output and weight, the weight gradient input and grad_output (the two
  are separate cuDNN calls, so grad_output is transposed twice). A tensor with one channel or one position (a
  1-channel image, a 1×1 filter) or already channels-last is laid out the same either way and needs none. The
  results are taken as written channels-first directly (no transform back: fitting one in fits the reference step
  times worse);
* a matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``) launches **one cuBLAS kernel** (the bias of ``addmm``
  fused in its epilogue);
* a batch norm that computes batch statistics (training, forward and backward) launches **two kernels**: a
  statistics pass that reads the activations (in backward also the incoming gradient), then the pass that
  normalizes, with the op's counted bytes; with running statistics (inference) it is **one elementwise kernel**
  (a per-channel scale and shift);
* a pooling backward reads the gradient (and max pooling's indices) and writes the input gradient: the forward input
  it takes only gives the shape, so its bytes are not counted;
* every other op launches **one kernel** with the op's counted bytes, classed as normalization, pooling, reduction or
  elementwise (the rest: activations, adds, copies, concatenation, fills); an op torch's flop formula gives MACs to
  (attention) is a matrix product.

Matrix products and the forward and input-gradient convolutions carry the output shape of their GEMM
(:attr:`Kernel.gemm`: the implicit GEMM of a convolution has one row per output position and one column per output
channel), which the time model tiles over the card's SMs.

The host: every op call the eager step makes costs the host time, views and allocations included; a kernel waits for
the calls since the previous launch (:attr:`Kernel.host_calls`). Not calls of the eager step: the ``detach`` calls
the dispatch mode itself sees when autograd saves an op's output for backward and unpacks it there
(``TensorImpl::shallow_copy_and_detach`` goes through the mode while one is active; eagerly it is a C++ copy of the
tensor's header, no dispatcher call); only AccumulateGrad's ``detach`` of each parameter's gradient is one. A call is
``recorded`` when autograd records it (the forward of a training step), which costs the host more.

Dropout in training runs as the meta kernels decompose it (a Bernoulli draw, a scale, a multiply: three kernels where
CUDA's fused ``native_dropout`` launches one); only AlexNet and VGG use it, on their small classifier activations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from profiler.catalogue import GpuSpec, Precision
from profiler.counting import ModelStats, count_model
from profiler.counting.rules import OpCost, op_cost, tensor_bytes
from profiler.errors import ProfilerError
from profiler.kinds import OPTIMIZER_ROW, ROOT_ROW, OpClass, Phase
from profiler.scopes import in_backward

aten = torch.ops.aten
#: The autograd node that hands each parameter its gradient.
ACCUMULATE_GRAD = "torch::autograd::AccumulateGrad"


@dataclass(frozen=True)
class Kernel:
    """One GPU kernel of a step: what launched it (``op``: an aten op, or an optimizer pass), its class, its layer
    (the static counter's row name, ``(optimizer)`` for the update) and phase. ``flops`` (2 × MACs) are those of
    compute-roof classes only; ``bytes`` are what it reads plus what it writes, every tensor crossing DRAM.
    ``host_calls``: the op calls the host makes before it can launch this kernel — its own call and the calls
    without kernels (views, allocations) since the previous launch — on the first kernel of a call; 0 on the others,
    which the same call launches right after. ``recorded``: autograd recorded the call (a training step's forward).
    ``gemm``: (batches, rows, columns) of the matrix product whose output the kernel tiles (module docstring), or
    None."""

    op: str
    op_class: OpClass
    layer: str
    phase: Phase
    flops: int
    bytes: int
    host_calls: int = 1
    recorded: bool = False
    gemm: tuple[int, int, int] | None = None


def _packets(*names: str) -> frozenset[Any]:
    """The aten op packets of ``names`` that this torch has."""
    return frozenset(getattr(aten, name) for name in names if hasattr(aten, name))


MATMUL_OPS = _packets("mm", "addmm", "bmm", "baddbmm")
CONV_OPS = _packets("convolution", "_convolution")
NORMALIZATION_OPS = _packets(
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "_batch_norm_with_update", "_batch_norm_no_update", "cudnn_batch_norm",
    "native_batch_norm_backward", "batch_norm_backward", "cudnn_batch_norm_backward", "native_layer_norm",
    "native_layer_norm_backward", "native_group_norm", "native_group_norm_backward", "_fused_rms_norm",
    "_fused_rms_norm_backward")
POOLING_OPS = _packets(
    "max_pool1d", "max_pool2d", "max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d",
    "avg_pool3d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward", "avg_pool2d_backward",
    "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward")
POOLING_BACKWARD = frozenset(op for op in POOLING_OPS if str(op).endswith("_backward"))
REDUCTION_OPS = _packets(
    "sum", "mean", "amax", "amin", "max", "min", "var", "std", "var_mean", "norm", "linalg_vector_norm", "prod",
    "_softmax", "_log_softmax", "_softmax_backward_data", "_log_softmax_backward_data", "nll_loss_forward",
    "nll_loss_backward", "nll_loss2d_forward", "nll_loss2d_backward", "argmax", "argmin", "logsumexp")

#: Batch-norm ops by the index of their ``training`` argument (None: they always use batch statistics).
BATCH_STATISTICS: dict[Any, int | None] = {
    **{op: 5 for op in _packets("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
                                "cudnn_batch_norm")},
    **{op: None for op in _packets("_batch_norm_with_update")},
    **{op: 7 for op in _packets("native_batch_norm_backward", "batch_norm_backward")}}
BATCH_NORM_BACKWARD = _packets("native_batch_norm_backward", "batch_norm_backward")
#: Batch-norm ops that always use the running statistics.
RUNNING_STATISTICS = _packets("_native_batch_norm_legit_no_training", "_batch_norm_no_update")


def _batch_statistics(packet: Any, args: tuple) -> bool:
    """Whether a batch-norm op computes batch statistics (training), not the running ones."""
    flag = BATCH_STATISTICS[packet]
    return flag is None or bool(args[flag])


#: The class of the ops that launch one kernel of a class other than elementwise.
_SINGLE_KERNEL_CLASS = {**{op: OpClass.MATMUL for op in MATMUL_OPS},
                        **{op: OpClass.NORMALIZATION for op in NORMALIZATION_OPS},
                        **{op: OpClass.POOLING for op in POOLING_OPS},
                        **{op: OpClass.REDUCTION for op in REDUCTION_OPS}}


def _tensor_bytes(t: Any) -> int:
    return tensor_bytes(t) if isinstance(t, torch.Tensor) else 0


class Launch(NamedTuple):
    """One kernel an op call launches: its label, class, FLOPs, bytes and GEMM output shape (:class:`Kernel`)."""

    label: str
    op_class: OpClass
    flops: int
    bytes: int
    gemm: tuple[int, int, int] | None = None


def nhwc_convolutions(gpu: GpuSpec, dtype: str) -> bool:
    """Whether cuDNN runs ``dtype`` convolutions on ``gpu``'s tensor cores, hence channels-last (module docstring):
    wherever PyTorch's defaults put them on a tensor-core roof (:meth:`~profiler.catalogue.GpuSpec.roof`)."""
    return gpu.roof(dtype, convolution=True) is not Precision.FP32


def _channels_first(t: Any) -> bool:
    """Whether ``t`` needs a transpose to be channels-last: more than one channel, more than one position, and the
    channel dimension not the innermost."""
    return (isinstance(t, torch.Tensor) and t.dim() >= 3 and t.shape[1] > 1 and math.prod(t.shape[2:]) > 1
            and t.stride(1) != 1)


def _to_nhwc(name: str, operands: dict[str, Any]) -> list[Launch]:
    """The layout transforms before a cuDNN call: one per channels-first operand, reading and writing it."""
    return [Launch(f"{name} ({what} to channels-last)", OpClass.ELEMENTWISE, 0, 2 * _tensor_bytes(t))
            for what, t in operands.items() if _channels_first(t)]


def _conv_gemm(result: torch.Tensor, groups: int) -> tuple[int, int, int]:
    """(groups, rows, columns) of the implicit GEMM that computes ``result`` (batch × channels × positions): a row per
    sample and position, a column per channel of a group."""
    return groups, result.shape[0] * math.prod(result.shape[2:]), result.shape[1] // groups


def op_kernels(func: Any, args: tuple, kwargs: dict, out: Any, nhwc: bool = False, cost: OpCost | None = None
               ) -> list[Launch]:
    """Each kernel one call of ``func`` launches on CUDA (module docstring); ``nhwc``: cuDNN runs convolutions
    channels-last (:func:`nhwc_convolutions`), so their channels-first operands are transposed first. ``cost``: the
    call's :func:`~profiler.counting.rules.op_cost`, where the caller has it already."""
    cost = op_cost(func, args, kwargs, out) if cost is None else cost
    if cost.bytes == 0:
        return []
    packet, name = func.overloadpacket, str(func.overloadpacket).removeprefix("aten.")
    if packet in CONV_OPS:
        # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
        x, weight, bias, groups = args[0], args[1], args[2], args[8]
        kernels = _to_nhwc(name, {"input": x, "weight": weight}) if nhwc else []
        kernels.append(Launch(name, OpClass.CONV_FORWARD, 2 * cost.macs, _tensor_bytes(x) + _tensor_bytes(weight)
                              + _tensor_bytes(out), _conv_gemm(out, groups)))
        if bias is not None:
            kernels.append(Launch(f"{name} (bias add)", OpClass.ELEMENTWISE, 0,
                                  2 * _tensor_bytes(out) + _tensor_bytes(bias)))
        return kernels
    if packet is aten.convolution_backward:
        # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
        #                      output_padding, groups, output_mask) -> (grad_input, grad_weight, grad_bias)
        grad_out, x, weight, groups, mask = args[0], args[1], args[2], args[9], args[10]
        grads = list(out)
        passes = int(mask[0]) + int(mask[1])
        flops = 2 * cost.macs // passes if passes else 0
        kernels = []
        if mask[0]:
            kernels += _to_nhwc(name, {"grad_output": grad_out, "weight": weight}) if nhwc else []
            kernels.append(Launch(f"{name} (input gradient)", OpClass.CONV_INPUT_GRAD, flops,
                                  _tensor_bytes(grad_out) + _tensor_bytes(weight) + _tensor_bytes(grads[0]),
                                  _conv_gemm(grads[0], groups)))
        if mask[1]:
            kernels += _to_nhwc(name, {"input": x, "grad_output": grad_out}) if nhwc else []
            kernels.append(Launch(f"{name} (weight gradient)", OpClass.CONV_WEIGHT_GRAD, flops,
                                  _tensor_bytes(grad_out) + _tensor_bytes(x) + _tensor_bytes(grads[1])))
        if mask[2]:
            kernels.append(Launch(f"{name} (bias gradient)", OpClass.REDUCTION, 0,
                                  _tensor_bytes(grad_out) + _tensor_bytes(grads[2])))
        return kernels
    if packet in BATCH_STATISTICS and _batch_statistics(packet, args):
        # the statistics pass reads the activations (in backward also the incoming gradient: the first two
        # arguments) before the pass that normalizes
        activations = args[:2] if packet in BATCH_NORM_BACKWARD else args[:1]
        return [Launch(f"{name} (statistics)", OpClass.NORMALIZATION, 0, sum(map(_tensor_bytes, activations))),
                Launch(f"{name} (normalize)", OpClass.NORMALIZATION, 0, cost.bytes)]
    if packet in BATCH_STATISTICS or packet in RUNNING_STATISTICS:
        # running statistics: a per-channel scale and shift of every element
        return [Launch(name, OpClass.ELEMENTWISE, 0, cost.bytes)]
    if packet in POOLING_BACKWARD:
        # pool_backward(grad_output, self, ...): the forward input only gives the gradient's shape
        return [Launch(name, OpClass.POOLING, 0, cost.bytes - _tensor_bytes(args[1]))]
    op_class = _SINGLE_KERNEL_CLASS.get(packet)
    if op_class is None:
        op_class = OpClass.MATMUL if cost.macs else OpClass.ELEMENTWISE
    gemm = (math.prod(out.shape[:-2]), out.shape[-2], out.shape[-1]) if packet in MATMUL_OPS else None
    return [Launch(name, op_class, 2 * cost.macs if op_class.on_compute_roof else 0, cost.bytes, gemm)]


# ------------------------------------------------------------------------------------------------ the optimizer

@dataclass(frozen=True)
class ForeachPass:
    """One ``torch._foreach_*`` call of an optimizer's update, per parameter: the tensor lists it takes (its depth in
    ``multi_tensor_apply``: inputs and, out of place, outputs) and how many parameter-sized tensors it reads and
    writes. ``scalar_list``: it takes one scalar per tensor (smaller launch limits)."""

    call: str
    depth: int
    reads: int
    writes: int
    scalar_list: bool = False


#: The steady-state update of each ``--optimizer`` (from the second step on, with its state allocated): torch.optim's
#: foreach implementation, CUDA's default (``torch/optim/sgd.py`` ``_multi_tensor_sgd``, ``torch/optim/adam.py``
#: ``_multi_tensor_adam``): SGD lr 0.01 without momentum, SGD with momentum 0.9 (no dampening, not Nesterov), Adam
#: (lr 1e-3, no weight decay, not amsgrad; its step counters live on the CPU and launch no GPU kernel).
OPTIMIZERS: dict[str, tuple[ForeachPass, ...]] = {
    "sgd": (ForeachPass("_foreach_add_(params, grads, alpha=-lr)", depth=2, reads=2, writes=1),),
    "sgd-momentum": (
        ForeachPass("_foreach_mul_(momentum_buffers, momentum)", depth=1, reads=1, writes=1),
        ForeachPass("_foreach_add_(momentum_buffers, grads)", depth=2, reads=2, writes=1),
        ForeachPass("_foreach_add_(params, momentum_buffers, alpha=-lr)", depth=2, reads=2, writes=1)),
    "adam": (
        ForeachPass("_foreach_lerp_(exp_avgs, grads, 1 - beta1)", depth=2, reads=2, writes=1),
        ForeachPass("_foreach_mul_(exp_avg_sqs, beta2)", depth=1, reads=1, writes=1),
        ForeachPass("_foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)", depth=3, reads=2, writes=1),
        ForeachPass("_foreach_sqrt(exp_avg_sqs)", depth=2, reads=1, writes=1),
        ForeachPass("_foreach_div_(denominators, bias_correction2_sqrt)", depth=1, reads=1, writes=1,
                    scalar_list=True),
        ForeachPass("_foreach_add_(denominators, eps)", depth=1, reads=1, writes=1),
        ForeachPass("_foreach_addcdiv_(params, exp_avgs, denominators, step_size)", depth=3, reads=3, writes=1,
                    scalar_list=True)),
}

#: ``aten/src/ATen/native/cuda/MultiTensorApply.cuh`` as built with CUDA 13 (the kernel-argument space is 32 KB):
#: elements per chunk (one thread block each), the most tensors per launch by depth (plain and with a scalar list),
#: and the most blocks per launch.
CHUNK_ELEMENTS = 65536
MAX_TENSORS_PER_LAUNCH = (770, 448, 336, 252, 210)
MAX_TENSORS_PER_LAUNCH_SCALAR_LIST = (672, 448, 336, 252, 210)
MAX_BLOCKS_PER_LAUNCH = 2240


def foreach_launches(numels: Sequence[int], depth: int, scalar_list: bool = False) -> list[int]:
    """The elements each kernel launch of one foreach call covers, as ``multi_tensor_apply`` packs tensors into
    launches: tensor by tensor, one block per chunk of :data:`CHUNK_ELEMENTS`; a launch goes out when its tensor list
    or its block list is full (a tensor cut by a full block list continues in the next launch), and at the end."""
    max_tensors = (MAX_TENSORS_PER_LAUNCH_SCALAR_LIST if scalar_list else MAX_TENSORS_PER_LAUNCH)[depth - 1]
    launches: list[int] = []
    tensors = blocks = elements = 0
    for numel in (n for n in numels if n):
        tensors += 1
        chunks = math.ceil(numel / CHUNK_ELEMENTS)
        for chunk in range(chunks):
            blocks += 1
            elements += min(CHUNK_ELEMENTS, numel - chunk * CHUNK_ELEMENTS)
            last_chunk = chunk == chunks - 1
            if (tensors == max_tensors and last_chunk) or blocks == MAX_BLOCKS_PER_LAUNCH:
                launches.append(elements)
                blocks = elements = 0
                tensors = 0 if last_chunk else 1
    if blocks:
        launches.append(elements)
    return launches


def optimizer_kernels(numels: Sequence[int], element_size: int, optimizer: str) -> list[Kernel]:
    """The kernels of one steady-state update of parameters of ``numels`` elements (``element_size`` bytes each):
    every launch of every foreach pass of :data:`OPTIMIZERS`, its bytes = (reads + writes) × its elements × element
    size. SGD without momentum thus moves 3 × 4 bytes per fp32 parameter (reads the parameter and its gradient, writes
    the parameter). Each pass is one call for the host (on its first launch)."""
    if optimizer not in OPTIMIZERS:
        raise ProfilerError(f"unknown optimizer '{optimizer}': choose one of {', '.join(OPTIMIZERS)}")
    return [Kernel(op=step.call, op_class=OpClass.OPTIMIZER, layer=OPTIMIZER_ROW, phase=Phase.OPTIMIZER, flops=0,
                   bytes=(step.reads + step.writes) * elements * element_size, host_calls=int(launch == 0))
            for step in OPTIMIZERS[optimizer]
            for launch, elements in enumerate(foreach_launches(numels, step.depth, step.scalar_list))]


# ------------------------------------------------------------------------------------------------ the collector

class _KernelCollector:
    """Records the kernels of every op it is shown, charged to the running layer and phase."""

    def __init__(self, nhwc: bool) -> None:
        self.nhwc = nhwc
        self.kernels: list[Kernel] = []
        self.calls_without_kernels = 0

    def observe(self, func: Any, args: tuple, kwargs: dict, out: Any, layer: str, cost: OpCost) -> None:
        layer = layer or ROOT_ROW
        phase = Phase.BACKWARD if in_backward() else Phase.FORWARD
        launched = op_kernels(func, args, kwargs, out, self.nhwc, cost)
        if not launched and not _eager_call(func):
            return
        calls = self.calls_without_kernels + 1
        self.calls_without_kernels = 0 if launched else calls
        recorded = phase is Phase.FORWARD and torch.is_grad_enabled()
        self.kernels.extend(Kernel(k.label, k.op_class, layer, phase, k.flops, k.bytes, calls if index == 0 else 0,
                                   recorded, k.gemm)
                            for index, k in enumerate(launched))

    def step_kernels(self, model: nn.Module, train: bool, optimizer: str) -> list[Kernel]:
        """The kernels recorded, then, for a training step, the optimizer's update of ``model``'s parameters."""
        kernels = list(self.kernels)
        if train:
            params = [p for p in model.parameters() if p.requires_grad]
            update = optimizer_kernels([p.numel() for p in params], params[0].element_size() if params else 4,
                                       optimizer)
            if update:  # backward's last calls without kernels (gradients handed to parameters) precede the update
                update[0] = replace(update[0], host_calls=update[0].host_calls + self.calls_without_kernels)
            kernels += update
        return kernels


def _eager_call(func: Any) -> bool:
    """Whether the eager step makes this call too (module docstring): a ``detach`` is the dispatch mode's own unless
    AccumulateGrad makes it."""
    if func.overloadpacket is not aten.detach:
        return True
    node = torch._C._current_autograd_node()
    return node is not None and node.name() == ACCUMULATE_GRAD


def step_kernels(model: nn.Module, input_shape: tuple[int, ...], train: bool, dtype: torch.dtype = torch.float32,
                 optimizer: str = "sgd", nhwc: bool = True) -> list[Kernel]:
    """Every kernel of one step of ``model`` (on the meta device) in launch order (module docstring): inference is
    ``eval()`` and a forward without autograd; a training step is forward, cross-entropy against class-0 labels (row
    ``loss``), backward, then ``optimizer``'s update (:func:`optimizer_kernels`; gradients set to None beforehand, as
    ``zero_grad(set_to_none=True)`` leaves them, so backward accumulates nothing). ``nhwc``: cuDNN runs the
    convolutions channels-last (:func:`nhwc_convolutions` of the card and dtype), with layout transforms. Calls
    without kernels after the last launch of an inference step cost the host nothing here (there is nothing left to
    wait for). A failing forward raises :class:`~profiler.models.loading.ForwardFailed`."""
    return counted_step_kernels(model, input_shape, train, dtype, optimizer, nhwc)[1]


def counted_step_kernels(model: nn.Module, input_shape: tuple[int, ...], train: bool,
                         dtype: torch.dtype = torch.float32, optimizer: str = "sgd", nhwc: bool = True,
                         name: str = "", model_source: str = "") -> tuple[ModelStats, list[Kernel]]:
    """:func:`~profiler.counting.count_model` of the step and its :func:`step_kernels`, from one meta pass: the
    counter runs the step protocol (:mod:`profiler.step`) and shows every op to the kernel collector, charged to the
    layer it counts it in."""
    collector = _KernelCollector(nhwc)
    stats = count_model(model, input_shape, name=name, train=train, dtype=dtype, model_source=model_source,
                        observe=collector.observe)
    return stats, collector.step_kernels(model, train, optimizer)
