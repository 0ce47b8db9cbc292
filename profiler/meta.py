"""Running aten ops on meta tensors fast: a cache of what an op's meta kernel returns for given input metadata.

Many of torch's meta kernels are Python reference implementations (elementwise ops, batch norm) that cost hundreds of
microseconds per call, and a report runs the same op on the same shapes thousands of times (two training steps per
trace, the same layer shape in every block, the same model counted and traced). On meta tensors an op's outputs
depend only on its inputs' metadata and its other arguments, never on values, so the first call's outputs can be
described — shape, strides, dtype — and later calls answer with fresh tensors of that description.

Only ops whose outputs are fresh storages are answered from the cache: an op that returns a view of an input, or an
output whose storage is not exactly what ``empty_strided`` allocates for it, is always run for real. Inputs the
op's schema marks as written (a batch norm's running statistics) get their version counter bumped, as the kernel
would. Everything else — the dispatch modes above, autograd, the counting rules — sees exactly what the real
kernel would have returned.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from profiler.util.tensors import tensor_leaves

_MISS = object()
#: Tensor types whose metadata is all an op sees (parameters are tensors to every kernel).
_PLAIN = (torch.Tensor, torch.nn.Parameter)
#: (op, argument description) → output description, or None where the op's result cannot be replayed.
_CACHE: dict[tuple, Any] = {}
_CACHE_LIMIT = 200_000
#: op → the positions/names of its arguments the schema marks as written, or None when the op cannot be cached.
_WRITTEN: dict[Any, tuple[list[int], list[str]] | None] = {}


class MetaDispatchMode(TorchDispatchMode):
    """The base of the dispatch modes that watch a meta pass (counter, memory trace, kernel collector).

    torch wraps every ``__torch_dispatch__`` of a mode class in ``torch._disable_dynamo`` (so that ``torch.compile``
    never traces into a mode): the wrapper imports ``torch._dynamo`` on its first call (about a second, and with it
    symbolic shapes, sympy and ``torch.onnx``) and adds a frame-evaluation switch to every op. These modes never run
    under ``torch.compile``, so they opt out (the opt-out torch's ``TorchDispatchMode._should_skip_dynamo``
    documents)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


class CachedMeta(MetaDispatchMode):
    """Every op of the block answered by :func:`meta_call`: a meta forward that only needs the outputs' shapes (the
    lazy layers' dry forward, the smallest-input search) at the cache's speed."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return meta_call(func, args, kwargs or {})


def _plan(func: Any) -> tuple[list[int], list[str]] | None:
    """Which arguments ``func`` writes (to bump their versions), or None if its results cannot be replayed: outputs
    that alias inputs, ops whose output shape depends on values."""
    if func in _WRITTEN:
        return _WRITTEN[func]
    schema = func._schema
    plan: tuple[list[int], list[str]] | None = None
    dynamic = {torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output} & set(func.tags)
    if not dynamic and schema.returns and all(r.alias_info is None for r in schema.returns):
        positions, names = [], []
        for index, argument in enumerate(schema.arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                positions.append(index)
                names.append(argument.name)
        plan = (positions, names)
    _WRITTEN[func] = plan
    return plan


_SCALARS = frozenset({type(None), bool, int, float, str, torch.dtype, torch.device, torch.layout,
                      torch.memory_format})


def _describe_input(value: Any) -> Any:
    """A hashable description of an argument, or _MISS where it cannot be described (then nothing is cached).
    Each schema position holds one kind of value, so tensors (shape, strides, dtype, offset), sequences and scalars
    (with their type: 1 and 1.0 promote differently) need no markers to stay apart. Hot: written for speed."""
    kind = type(value)
    if kind in _PLAIN:
        if value.device.type != "meta" or value.layout != torch.strided:
            return _MISS
        return (value.shape, value.stride(), value.dtype, value.storage_offset())
    if kind in _SCALARS:
        return (kind, value)
    if kind is tuple or kind is list:
        parts = []
        for item in value:
            part = _describe_input(item)
            if part is _MISS:
                return _MISS
            parts.append(part)
        return (kind, *parts)
    return _MISS


def _describe_output(out: Any, inputs: set[int]) -> Any:
    """How to rebuild ``out`` (tensors as shape, strides, dtype), or _MISS if some output is not a fresh storage."""
    if isinstance(out, torch.Tensor):
        if type(out) not in _PLAIN or out.device.type != "meta" or out.layout != torch.strided:
            return _MISS
        storage = out.untyped_storage()
        if storage._cdata in inputs:
            return _MISS
        if out.storage_offset() != 0 or storage.nbytes() != _strided_nbytes(out):
            return _MISS
        return ("T", tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, (list, tuple)):
        parts = tuple(_describe_output(o, inputs) for o in out)
        return _MISS if any(p is _MISS for p in parts) else (type(out).__name__, parts)
    if out is None or isinstance(out, (bool, int, float)):
        return ("V", out)
    return _MISS


def _strided_nbytes(t: torch.Tensor) -> int:
    """The bytes ``empty_strided`` allocates for ``t``'s shape and strides."""
    if t.numel() == 0:
        return 0
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
    return extent * t.element_size()


def _rebuild(description: tuple) -> Any:
    kind, payload = description[0], description[1:]
    if kind == "T":
        shape, stride, dtype = payload
        return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    if kind == "V":
        return payload[0]
    parts = [_rebuild(part) for part in payload[0]]
    return tuple(parts) if kind == "tuple" else parts


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _batch_norm(input: torch.Tensor, weight: Any, bias: Any, running_mean: Any, running_var: Any,
                training: bool, momentum: float, eps: float) -> Any:
    """``native_batch_norm``'s meta outputs: the normalized input (its layout), and the saved mean and inverse
    standard deviation per channel in the op-math dtype (float32 for bfloat16/float16 inputs)."""
    if not _dense(input) or input.dim() < 2:
        return _MISS
    stats = torch.promote_types(input.dtype, torch.float32)
    channels = input.shape[1]
    return (torch.empty_like(input), torch.empty((channels,), dtype=stats, device="meta"),
            torch.empty((channels,), dtype=stats, device="meta"))


def _batch_norm_backward(grad_out: torch.Tensor, input: torch.Tensor, weight: Any, running_mean: Any,
                         running_var: Any, save_mean: Any, save_invstd: Any, train: bool, eps: float,
                         output_mask: list[bool]) -> Any:
    """``native_batch_norm_backward``'s meta outputs: the input gradient (the input's layout; torch's meta kernel
    returns it whatever ``output_mask`` says) and the weight and bias gradients per channel in the weight's dtype,
    each only where ``output_mask`` asks for it."""
    if not _dense(input) or input.dim() < 2 or (weight is None and (output_mask[1] or output_mask[2])):
        return _MISS
    channels = input.shape[1]

    def per_channel() -> torch.Tensor:
        return torch.empty((channels,), dtype=weight.dtype, device="meta")

    return (torch.empty_like(input), per_channel() if output_mask[1] else None,
            per_channel() if output_mask[2] else None)


#: Ops whose meta kernel is a slow Python decomposition (a batch norm costs milliseconds): a direct statement of
#: what they return, checked against the real meta kernel by tests/test_meta.py.
_FAST_KERNELS: dict[Any, Any] = {
    torch.ops.aten.native_batch_norm.default: _batch_norm,
    torch.ops.aten.native_batch_norm_backward.default: _batch_norm_backward,
}


def _run(func: Any, args: tuple, kwargs: dict) -> Any:
    fast = _FAST_KERNELS.get(func)
    if fast is not None and not kwargs:
        out = fast(*args)
        if out is not _MISS:
            return out
    return func(*args, **kwargs)


def meta_call(func: Any, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)``, answered from the cache where the same op ran on the same input metadata before
    (module docstring). For use inside a ``__torch_dispatch__`` on meta tensors."""
    plan = _plan(func)
    if plan is None:
        return _run(func, args, kwargs)
    described = _describe_input((args, tuple(sorted(kwargs.items()))))
    if described is _MISS:
        return _run(func, args, kwargs)
    key = (func, described)
    hit = _CACHE.get(key, _MISS)
    if hit is _MISS:
        out = _run(func, args, kwargs)
        inputs = {t.untyped_storage()._cdata for t in tensor_leaves((args, kwargs))}
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        description = _describe_output(out, inputs)
        _CACHE[key] = None if description is _MISS else description
        return out
    if hit is None:
        return _run(func, args, kwargs)
    positions, names = plan
    for index in positions:
        if index < len(args) and isinstance(args[index], torch.Tensor):
            torch.autograd.graph.increment_version(args[index])
    for name in names:
        if isinstance(kwargs.get(name), torch.Tensor):
            torch.autograd.graph.increment_version(kwargs[name])
    return _rebuild(hit)
