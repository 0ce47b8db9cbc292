"""Per-op cost rules: MACs, other ops and bytes moved of one aten op call, from shapes alone.

The conventions are stated once, here, as data: :data:`CONVENTIONS` (one statement per quantity) and, registered with
each rule, :data:`OTHER_OPS_CONVENTIONS` (one line per other-ops rule). :func:`conventions` joins the statements into
the text that ``python -m profiler flops --help``, the JSON ``convention`` field and the reports print; the README
quotes both (``tests/test_cli.py`` checks that it does).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from profiler.util.tensors import tensor_leaves

aten = torch.ops.aten


@dataclass(frozen=True)
class OpCost:
    """The cost of one op call. ``counted`` is False when no rule gave its MACs/other ops (bytes are always known)."""

    macs: int = 0
    other_ops: int = 0
    bytes: int = 0
    counted: bool = True


Rule = Callable[..., int]

#: What each count means, one statement per quantity (the module docstring says who prints them).
CONVENTIONS: dict[str, str] = {
    "MAC": "one multiply-accumulate of a convolution, linear layer, matrix, matrix-vector or dot product, or one "
           "term of a triple product (nn.Bilinear); FLOPs = 2 × MACs (the "
           "convention of torch.utils.flop_counter); a bias addition is not a MAC but an other op",
    "other ops": "work that is not a multiply-accumulate, one rule per op family (the other-ops rules of python -m "
                 "profiler flops --help), reported beside MACs and never folded into FLOPs",
    "bytes": "every tensor an op reads (weights included) plus every tensor it writes, at the tensor's dtype; views "
             "and reshapes move nothing, allocations without a fill write nothing, and a broadcast (stride-0) "
             "dimension is read once",
    "uncounted": "an op with no MAC or other-ops rule is still counted in bytes, and listed as uncounted with its "
                 "call count",
}

#: op packet → rule(arg, out) returning MACs; ``arg(name)`` reads an argument by its schema name.
MAC_RULES: dict[Any, Rule] = {}
#: op packet → rule(arg, out) returning other ops.
OTHER_OPS_RULES: dict[Any, Rule] = {}
#: One-line statement of each other-ops rule, for --help and the README.
OTHER_OPS_CONVENTIONS: dict[str, str] = {}


def _register(table: dict[Any, Rule], *ops: Any) -> Callable[[Rule], Rule]:
    def register(rule: Rule) -> Rule:
        for op in ops:
            table[op] = rule
        return rule
    return register


def mac_rule(*ops: Any) -> Callable[[Rule], Rule]:
    """Register a MAC rule for the given aten op packets."""
    return _register(MAC_RULES, *ops)


def other_ops_rule(convention: str, *ops: Any) -> Callable[[Rule], Rule]:
    """Register an other-ops rule; ``convention`` is its one-line statement."""
    def register(rule: Rule) -> Rule:
        OTHER_OPS_CONVENTIONS[convention] = ", ".join(sorted(str(op).removeprefix("aten.") for op in ops))
        return _register(OTHER_OPS_RULES, *ops)(rule)
    return register


def numel(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel()


def _first_tensor(out: Any) -> torch.Tensor | None:
    return next(iter(tensor_leaves(out)), None)


def _pair_prod(kernel: int | list[int] | tuple[int, ...], dims: int) -> int:
    kernel = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    if len(kernel) == 1:
        kernel = kernel * dims
    return math.prod(kernel)


class _Args:
    """Look up an op's arguments by their schema names (positional or keyword)."""

    def __init__(self, func: Any, args: tuple, kwargs: dict) -> None:
        self.packet = func.overloadpacket
        self._names = {a.name for a in func._schema.arguments}
        self._values = dict(kwargs)
        for schema_arg, value in zip(func._schema.arguments, args, strict=False):
            self._values[schema_arg.name] = value
        self._defaults = {a.name: a.default_value for a in func._schema.arguments if a.has_default_value()}

    def __call__(self, name: str) -> Any:
        return self._values[name] if name in self._values else self._defaults.get(name)

    def has(self, name: str) -> bool:
        """Whether the op's schema has an argument called ``name``."""
        return name in self._names


# ---------------------------------------------------------------------------------------------------- MAC rules

def conv_macs(x_shape: torch.Size, w_shape: torch.Size, out_shape: torch.Size, transposed: bool) -> int:
    """N × (weight elements) × (output positions), or input positions for a transposed convolution.

    The weight holds C_out × C_in/groups × k_h × k_w values and each one multiplies once per output position of each
    sample: e.g. AlexNet conv1 at 224, 1 channel: 96·1·11·11 weights × 54·54 positions = 33,872,256 MACs."""
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return x_shape[0] * math.prod(w_shape) * math.prod(spatial)


@mac_rule(aten.convolution, aten._convolution)
def _conv(arg: _Args, out: Any) -> int:
    return conv_macs(arg("input").shape, arg("weight").shape, out.shape, bool(arg("transposed")))


@mac_rule(aten.convolution_backward)
def _conv_backward(arg: _Args, out: Any) -> int:
    grad_out, x, w = arg("grad_output"), arg("input"), arg("weight")
    forward = conv_macs(x.shape, w.shape, grad_out.shape, bool(arg("transposed")))
    mask = arg("output_mask")
    return forward * (int(mask[0]) + int(mask[1]))  # input gradient and weight gradient each cost one forward


@mac_rule(aten.mm)
def _mm(arg: _Args, out: Any) -> int:
    a, b = arg("self"), arg("mat2")
    return a.shape[0] * a.shape[1] * b.shape[1]


@mac_rule(aten.addmm)
def _addmm(arg: _Args, out: Any) -> int:
    a, b = arg("mat1"), arg("mat2")
    return a.shape[0] * a.shape[1] * b.shape[1]


@mac_rule(aten.bmm)
def _bmm(arg: _Args, out: Any) -> int:
    a, b = arg("self"), arg("mat2")
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


@mac_rule(aten.baddbmm, aten.addbmm)
def _baddbmm(arg: _Args, out: Any) -> int:
    a, b = arg("batch1"), arg("batch2")
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


@mac_rule(aten.mv)
def _mv(arg: _Args, out: Any) -> int:
    return math.prod(arg("self").shape)


@mac_rule(aten.addmv)
def _addmv(arg: _Args, out: Any) -> int:
    return math.prod(arg("mat").shape)


@mac_rule(aten.dot, aten.vdot)
def _dot(arg: _Args, out: Any) -> int:
    return numel(arg("self"))


def trilinear_terms(shapes: list[tuple[int, ...]], expands: list[list[int]]) -> int:
    """Terms of ``aten._trilinear``'s sum: each input gets size-1 dimensions inserted at its ``expand`` positions,
    and every element of the three inputs' broadcast shape is one product (nn.Bilinear: N × out × in1 × in2)."""
    expanded = []
    for shape, expand in zip(shapes, expands, strict=True):
        dims = list(shape)
        for position in sorted(expand):
            dims.insert(position, 1)
        expanded.append(dims)
    return math.prod(max(sizes) for sizes in zip(*expanded, strict=True))


@mac_rule(aten._trilinear)
def _trilinear(arg: _Args, out: Any) -> int:
    shapes = [tuple(arg(name).shape) for name in ("i1", "i2", "i3")]
    return trilinear_terms(shapes, [list(arg(name)) for name in ("expand1", "expand2", "expand3")])


# ---------------------------------------------------------------------------------------------- other-ops rules

@other_ops_rule("bias add of a convolution or addmm/addmv/baddbmm/addbmm: 1 per output element (when a bias is given)",
                aten.convolution, aten._convolution, aten.addmm, aten.addmv, aten.baddbmm, aten.addbmm)
def _bias_add(arg: _Args, out: Any) -> int:
    bias = arg("bias") if arg.has("bias") else arg("self")  # addmm and its kind call their bias "self"
    return numel(out) if bias is not None else 0


@other_ops_rule("convolution backward bias gradient: 1 per grad_output element (a sum over N, H, W)",
                aten.convolution_backward)
def _conv_backward_bias(arg: _Args, out: Any) -> int:
    return numel(arg("grad_output")) if arg("output_mask")[2] else 0


@other_ops_rule("max/avg pooling: kernel_h × kernel_w per output element",
                aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d, aten.max_pool1d, aten.avg_pool1d,
                aten.max_pool3d_with_indices, aten.avg_pool3d)
def _pool(arg: _Args, out: Any) -> int:
    first = _first_tensor(out)
    return _pair_prod(arg("kernel_size"), first.dim() - 2) * numel(first)


@other_ops_rule("max pooling backward: 1 per grad_output element (each gradient routed to its argmax)",
                aten.max_pool2d_with_indices_backward, aten.max_pool3d_with_indices_backward)
def _max_pool_backward(arg: _Args, out: Any) -> int:
    return numel(arg("grad_output"))


@other_ops_rule("avg pooling backward: kernel_h × kernel_w per grad_output element",
                aten.avg_pool2d_backward, aten.avg_pool3d_backward)
def _avg_pool_backward(arg: _Args, out: Any) -> int:
    grad = arg("grad_output")
    return _pair_prod(arg("kernel_size"), grad.dim() - 2) * numel(grad)


def adaptive_pool_window_total(in_sizes: list[int], out_sizes: list[int]) -> int:
    """Sum over output positions of the adaptive window size; torch's window along a dim of length In for output
    index i is [floor(i·In/Out), ceil((i+1)·In/Out)), so the total is exact, not an estimate."""
    total = 1
    for size_in, size_out in zip(in_sizes, out_sizes, strict=True):
        total *= sum(-(-(i + 1) * size_in // size_out) - (i * size_in // size_out) for i in range(size_out))
    return total


@other_ops_rule("adaptive avg/max pooling (and backward): the exact sum of window sizes per channel",
                aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d, aten._adaptive_avg_pool2d_backward,
                aten.adaptive_max_pool2d_backward)
def _adaptive_pool(arg: _Args, out: Any) -> int:
    x = arg("self")
    pooled = arg("grad_output") if arg.has("grad_output") else _first_tensor(out)
    planes = math.prod(x.shape[:-2])
    return planes * adaptive_pool_window_total(list(x.shape[-2:]), list(pooled.shape[-2:]))


@other_ops_rule("batch norm: 2 per element (scale, shift) with running statistics, 4 when it computes batch "
                "statistics (training: + mean, + variance); backward: the same as its forward",
                aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_no_training,
                aten._batch_norm_with_update, aten._batch_norm_no_update, aten.cudnn_batch_norm,
                aten.native_batch_norm_backward, aten.cudnn_batch_norm_backward, aten.batch_norm_backward)
def _batch_norm(arg: _Args, out: Any) -> int:
    if arg.packet in _BN_ALWAYS_TRAINING:
        training = True
    else:
        flag = next((name for name in ("training", "train", "update") if arg.has(name)), None)
        training = bool(arg(flag)) if flag else False  # _no_training / _no_update variants
    return (4 if training else 2) * numel(arg("input"))


_BN_ALWAYS_TRAINING = {aten._batch_norm_with_update, aten.cudnn_batch_norm_backward}


@other_ops_rule("layer/group norm (and backward): 4 per element (mean, variance, scale, shift)",
                aten.native_layer_norm, aten.native_group_norm, aten.native_layer_norm_backward,
                aten.native_group_norm_backward)
def _norm(arg: _Args, out: Any) -> int:
    return 4 * numel(arg("input"))


@other_ops_rule("softmax/log-softmax: 3 per element (exp, sum, divide or log); backward: 2 per element",
                aten._softmax, aten._safe_softmax, aten._log_softmax, aten._softmax_backward_data,
                aten._log_softmax_backward_data)
def _softmax(arg: _Args, out: Any) -> int:
    return (2 if arg.has("grad_output") else 3) * numel(_first_tensor(out))


@other_ops_rule("negative log-likelihood loss (and backward): 1 per target element",
                aten.nll_loss_forward, aten.nll_loss_backward, aten.nll_loss2d_forward, aten.nll_loss2d_backward)
def _nll(arg: _Args, out: Any) -> int:
    return numel(arg("target"))


@other_ops_rule("reductions (sum, mean, max…): 1 per input element",
                aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.var, aten.std, aten.var_mean,
                aten.prod, aten.norm, aten.linalg_vector_norm)
def _reduction(arg: _Args, out: Any) -> int:
    return numel(arg("self") if arg.has("self") else arg("input"))


@other_ops_rule("dropout (and backward): 1 per output element",
                aten.native_dropout, aten.native_dropout_backward, aten.dropout, aten.bernoulli, aten.bernoulli_)
def _dropout(arg: _Args, out: Any) -> int:
    return numel(_first_tensor(out))


@other_ops_rule("elementwise ops torch does not tag pointwise (hardswish, hardsigmoid, their backward): 1 per "
                "output element", aten.hardswish, aten.hardswish_, aten.hardswish_backward, aten.hardsigmoid,
                aten.hardsigmoid_, aten.hardsigmoid_backward, aten.silu_backward, aten.gelu_backward)
def _untagged_elementwise(arg: _Args, out: Any) -> int:
    return numel(_first_tensor(out))


@other_ops_rule("upsampling (and backward): 1 per output element for nearest, 4 (a weighted sum of 4 inputs) for "
                "bilinear", aten.upsample_nearest2d, aten.upsample_nearest2d_backward, aten._upsample_nearest_exact2d,
                aten.upsample_bilinear2d, aten.upsample_bilinear2d_backward, aten._upsample_bilinear2d_aa)
def _upsample(arg: _Args, out: Any) -> int:
    per_element = 4 if "bilinear" in str(arg.packet) else 1
    return per_element * numel(_first_tensor(out))


#: Ops that only move or create data: bytes counted, no MACs, no other ops.
DATA_MOVEMENT = {
    aten.cat, aten.stack, aten.clone, aten.copy_, aten._to_copy, aten.copy, aten.fill_, aten.zero_, aten.zeros,
    aten.ones, aten.full, aten.zeros_like, aten.ones_like, aten.full_like, aten.new_zeros, aten.new_ones,
    aten.new_full, aten.scalar_tensor, aten.index_select, aten.constant_pad_nd, aten.slice_scatter,
    aten.select_scatter, aten.contiguous, aten.arange, aten.lift_fresh_copy, aten.gather, aten.scatter,
    aten.index, aten._unsafe_index, aten.repeat, aten.roll, aten.flip, aten.select_backward,
    aten.slice_backward, aten.index_put, aten.index_put_,
}

#: Ops that allocate without writing: no bytes, no ops.
ALLOCATION_ONLY = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided,
                   aten.resize_, aten._local_scalar_dense, aten.set_}

OTHER_OPS_CONVENTIONS["elementwise ops (activations, add, mul, their backward): 1 per output element"] = \
    "every op torch tags `pointwise`"
OTHER_OPS_CONVENTIONS["data movement (cat, copy, clone, fill, pad…): 0 ops, bytes only"] = \
    ", ".join(sorted(str(op).removeprefix("aten.") for op in DATA_MOVEMENT))


def conventions() -> str:
    """The conventions of every count in one paragraph: "MAC: …. other ops: …. bytes: …. uncounted: …" (no final
    full stop, so that it ends a sentence or a footer line alike)."""
    return ". ".join(f"{name}: {statement}" for name, statement in CONVENTIONS.items())


def other_ops_conventions() -> list[str]:
    """One line per other-ops rule, sorted: what it charges, for which ops (``flops --help``, the README)."""
    return sorted(OTHER_OPS_CONVENTIONS)


# ------------------------------------------------------------------------------------------------------- bytes

def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches reading or writing ``t``: the elements it addresses (a stride-0, broadcast dimension
    counts once) × element size."""
    if t.layout != torch.strided:
        return t.numel() * t.element_size()
    count = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            count *= size
    return count * t.element_size() if t.numel() else 0


#: Ops that reinterpret their input's storage although their schema does not say so.
UNANNOTATED_VIEWS = {aten._unsafe_view, aten.alias, aten.lift_fresh, aten.as_strided_, aten.transpose_,
                     aten.t_, aten.unsafe_split, aten.unsafe_split_with_sizes, aten.unsafe_chunk}


def _is_view(func: Any) -> bool:
    """True for ops whose outputs alias an input without writing it (view, reshape, t, expand, detach…)."""
    if func.overloadpacket in UNANNOTATED_VIEWS:
        return True
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def bytes_moved(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """Inputs read plus outputs written, each distinct tensor once per direction; 0 for views and bare allocations."""
    if _is_view(func) or func.overloadpacket in ALLOCATION_ONLY:
        return 0
    read = {id(t): t for t in tensor_leaves((args, kwargs))}
    written = {id(t): t for t in tensor_leaves(out)}
    return sum(map(tensor_bytes, read.values())) + sum(map(tensor_bytes, written.values()))


# ------------------------------------------------------------------------------------------------------ lookup

_TORCH_FLOP_REGISTRY: dict[Any, Any] | None = None


def _torch_flop_formula(packet: Any) -> Any:
    """Fallback for matrix-like ops we have no rule for (attention kernels): torch's own flop formula, halved."""
    global _TORCH_FLOP_REGISTRY
    if _TORCH_FLOP_REGISTRY is None:
        from torch.utils.flop_counter import flop_registry
        _TORCH_FLOP_REGISTRY = flop_registry
    return _TORCH_FLOP_REGISTRY.get(packet)


def op_cost(func: Any, args: tuple, kwargs: dict, out: Any) -> OpCost:
    """MACs, other ops and bytes of one call of ``func`` (an aten OpOverload) that returned ``out``."""
    packet = func.overloadpacket
    moved = bytes_moved(func, args, kwargs, out)
    if _is_view(func) or packet in ALLOCATION_ONLY or packet in DATA_MOVEMENT:
        return OpCost(bytes=moved)
    arg = _Args(func, args, kwargs)
    macs = MAC_RULES[packet](arg, out) if packet in MAC_RULES else None
    if packet in OTHER_OPS_RULES:
        other = OTHER_OPS_RULES[packet](arg, out)
    elif torch.Tag.pointwise in func.tags:
        other = numel(_first_tensor(out))
    else:
        other = None
    if macs is None and other is None:
        formula = _torch_flop_formula(packet)
        if formula is None:
            return OpCost(bytes=moved, counted=False)
        macs = formula(*args, **kwargs, out_val=out) // 2
    return OpCost(macs=macs or 0, other_ops=other or 0, bytes=moved)
