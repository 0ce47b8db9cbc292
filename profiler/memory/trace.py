"""Run one inference or training step on meta tensors and record every device allocation and free, in order.

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees each aten op; every new storage its outputs hold is
an allocation, and a weak reference on the storage reports the free when Python drops the last reference — the same
moment the CUDA caching allocator gets its block back, since both follow reference counts. The result is a plain
event list (:class:`Trace`) that :mod:`profiler.memory.predict` replays through a model of the CUDA allocator.

What CUDA does differently from the meta/CPU kernels, and how the trace follows CUDA:

* dropout: CUDA runs the fused ``native_dropout`` (a 1-byte bool mask); the CPU path draws a float mask. Calls to
  ``F.dropout`` are redirected to ``native_dropout`` here.
* optimizers: CUDA's default is the ``foreach`` implementation (its temporaries differ); it is forced here.
* attention: ``F.scaled_dot_product_attention`` runs the fused kernel PyTorch would pick on the target GPU, and
  ``nn.MultiheadAttention`` its inference fast path where it applies (:mod:`profiler.memory.attention`).
* kernel workspaces (cuDNN convolutions, cuBLAS handles) do not exist on meta: the trace marks each convolution and
  matrix product with its shapes, and the replay adds the workspaces of the GPU it predicts for.
* ``convolution_backward``: its meta kernel allocates the three gradients at once; the trace records what the cuDNN
  path allocates, in its order — the input gradient, its cuDNN call, the weight gradient, its cuDNN call, the bias
  gradient — with the contiguous copy of a strided ``grad_output`` each cuDNN call makes (a channel slice from
  ``cat``'s backward, as in DenseNet), held during that call only.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from profiler.catalogue import DEFAULT_GPU, GPUS, GpuSpec
from profiler.kinds import Phase
from profiler.memory.allocator import round_size
from profiler.memory.attention import SDPA, CudaAttention
from profiler.memory.layers import LayerBytes
from profiler.meta import MetaDispatchMode, meta_call
from profiler.models.loading import tracked_forward
from profiler.scopes import ModuleScopes, in_backward, named_modules
from profiler.step import Step, StepConfig, StepObserver, in_dtype, make_batch
from profiler.util.tensors import tensor_leaves

aten = torch.ops.aten

CATEGORIES = ("weights", "gradients", "optimizer", "input", "activations", "workspace")

_CONV_OPS = {aten.convolution, aten._convolution}
_GEMM_OPS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}


@dataclass(frozen=True)
class ConvCall:
    """Shapes of one convolution (``pass_`` = "forward" or "backward") — what a cuDNN workspace depends on."""

    pass_: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    element_size: int
    output_mask: tuple[bool, bool, bool] = (True, True, True)

    @property
    def input_bytes(self) -> int:
        return _numel(self.input_shape) * self.element_size

    @property
    def output_bytes(self) -> int:
        return _numel(self.output_shape) * self.element_size

    @property
    def weight_bytes(self) -> int:
        return _numel(self.weight_shape) * self.element_size

    def signature(self) -> tuple:
        """What identifies the conv to cuDNN's plan cache (shapes, hyper-parameters, dtype), pass excluded."""
        return (self.input_shape, self.weight_shape, self.stride, self.padding, self.dilation, self.groups,
                self.element_size)

    def key(self) -> str:
        """The signature as text, e.g. ``x128x1x224x224_w64x1x7x7_s2x2_p3x3_d1x1_g1_e4`` (calibration tables)."""
        def dims(values: tuple[int, ...]) -> str:
            return "x".join(map(str, values))
        return (f"x{dims(self.input_shape)}_w{dims(self.weight_shape)}_s{dims(self.stride)}_p{dims(self.padding)}"
                f"_d{dims(self.dilation)}_g{self.groups}_e{self.element_size}")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass
class Event:
    """One step of the trace. ``kind``: "alloc"/"free" (``key``, ``nbytes``), "conv" (one cuDNN call of ``conv``:
    its forward, or one backward stage, the one its ``output_mask`` keeps), "gemm" (matrix product on ``thread``
    "main" or "autograd"), "phase" (``phase`` starts), "measure" (peak statistics restart — the protocol measures
    the last step only)."""

    kind: str
    key: int = 0
    nbytes: int = 0
    category: str = ""
    layer: str = ""
    phase: str = ""
    conv: ConvCall | None = None
    thread: str = "main"


@dataclass
class Trace:
    """The events of a run, the bytes each leaf layer's forward left allocated (last step), and run facts."""

    events: list[Event]
    layer_activation_bytes: dict[str, int]
    mode: str
    optimizer: str | None
    dtype: str
    input_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)


class _Redirect(TorchFunctionMode):
    """Make the meta run take CUDA's code paths where they allocate differently (see module docstring)."""

    def __init__(self, attention: CudaAttention) -> None:
        super().__init__()
        self.attention = attention

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is nn.functional.dropout:
            x, p = args[0], kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            if training and p > 0:
                return torch.native_dropout(x, p, True)[0]
            return x
        if func is SDPA:
            return self.attention.sdpa(*args, **kwargs)
        return func(*args, **kwargs)


class _Recorder(MetaDispatchMode):
    """Records allocations (new storages of op outputs), frees (storage finalizers), convs and matrix products."""

    def __init__(self, scopes: ModuleScopes) -> None:
        super().__init__()
        self.scopes = scopes
        self.events: list[Event] = []
        self.phase = "setup"
        self.live: dict[int, int] = {}
        self.live_bytes = 0
        self._keys: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: dict[int, weakref.ref] = {}
        self._counter = itertools.count(1)
        self.recording = True

    def track(self, t: torch.Tensor, category: str) -> None:
        """Record ``t``'s storage as allocated now (once per storage; meta tensors only — meta stands for the GPU)."""
        if not isinstance(t, torch.Tensor) or t.device.type != "meta":
            return
        storage = t.untyped_storage()
        if storage in self._keys:
            return
        key = next(self._counter)
        nbytes = storage.nbytes()
        self._keys[storage] = key
        self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._free(key))
        self.live[key] = round_size(nbytes) if nbytes else 0
        self.live_bytes += self.live[key]
        self.events.append(Event("alloc", key, nbytes, category, self.scopes.current(), self.phase))

    def key_of(self, t: torch.Tensor) -> int | None:
        return self._keys.get(t.untyped_storage())

    def _free(self, key: int) -> None:
        self._refs.pop(key, None)
        self.live_bytes -= self.live.pop(key, 0)
        if self.recording:  # frees after the run (the caller's locals dying) are not part of the step
            self.events.append(Event("free", key, phase=self.phase))

    def mark(self, kind: str, **fields: Any) -> None:
        self.events.append(Event(kind, phase=self.phase, layer=self.scopes.current(), **fields))

    @contextmanager
    def temporary(self, nbytes: int) -> Iterator[None]:
        """Record a temporary of ``nbytes`` (none if 0) that the CUDA implementation of an op allocates at the start
        of the block and frees at its end, which no tensor of the meta run stands for; counted as workspace."""
        if not nbytes:
            yield
            return
        key = next(self._counter)
        self.events.append(Event("alloc", key, nbytes, "workspace", self.scopes.current(), self.phase))
        yield
        self.events.append(Event("free", key, phase=self.phase))

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = meta_call(func, args, kwargs)
        packet = func.overloadpacket
        if packet is aten.convolution_backward:
            self._convolution_backward(args, out)
            return out
        category = "optimizer" if self.phase == "optimizer" else "activations"
        for t in tensor_leaves(out):
            self.track(t, category)
        if packet in _CONV_OPS:
            self.mark("conv", conv=_conv_call("forward", args, out))
        elif packet in _GEMM_OPS:
            self.mark("gemm", thread="autograd" if in_backward() else "main")
        return out

    def _convolution_backward(self, args: tuple, out: tuple) -> None:
        """The allocations of ``convolution_backward`` in the order its cuDNN path makes them (``Convolution.cpp``
        ``convolution_backward``; ``ConvShared.cpp`` ``cudnn_convolution_backward_input``/``_weight``): the input
        gradient, then a contiguous copy of ``grad_output`` if it is not contiguous (a channel slice handed back by
        ``cat``'s backward) held through the data-gradient cuDNN call; a second copy, the weight gradient and the
        filter-gradient cuDNN call; the bias gradient last (``grad_output.sum``, which reads the strided tensor)."""
        grad_output, x = args[0], args[1]
        grad_input, grad_weight, grad_bias = out
        conv = _conv_call("backward", args, out)
        strided = not grad_output.is_contiguous(memory_format=_suggested_memory_format(x))
        copy_bytes = grad_output.numel() * grad_output.element_size() if strided else 0
        if conv.output_mask[0]:
            self.track(grad_input, "activations")
            with self.temporary(copy_bytes):
                self.mark("conv", conv=replace(conv, output_mask=(True, False, False)))
        if conv.output_mask[1]:
            with self.temporary(copy_bytes):
                self.track(grad_weight, "activations")
                self.mark("conv", conv=replace(conv, output_mask=(False, True, False)))
        if conv.output_mask[2]:
            self.track(grad_bias, "activations")


def _suggested_memory_format(t: torch.Tensor) -> torch.memory_format:
    """``Tensor::suggest_memory_format``: channels-last for a 4-d tensor laid out so, else contiguous."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _conv_call(pass_: str, args: tuple, out: Any) -> ConvCall:
    if pass_ == "forward":
        x, w, _, stride, padding, dilation, _, _, groups = args[:9]
        y, mask = out, (True, True, True)
    else:
        y, x, w, _, stride, padding, dilation, _, _, groups, mask = args[:11]
    return ConvCall(pass_, tuple(x.shape), tuple(w.shape), tuple(y.shape), tuple(stride), tuple(padding),
                    tuple(dilation), int(groups), x.element_size(), tuple(bool(m) for m in mask))


class _TraceObserver(StepObserver):
    """Marks each phase in the trace; after backward, re-labels the storages that became ``.grad``."""

    def __init__(self, rec: _Recorder, model: nn.Module) -> None:
        self.rec, self.model = rec, model

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        self.rec.phase = phase
        self.rec.mark("phase")
        yield
        if phase is Phase.BACKWARD:
            _label_gradients(self.rec, self.model)


def trace_step(model: nn.Module, input_shape: tuple[int, ...], config: StepConfig, gpu: GpuSpec | None = None
               ) -> Trace:
    """Record the allocations of the step protocol (:mod:`profiler.step`) on the meta device.

    Setup: weights, the input batch and its labels are resident. Inference: one step. Training: two steps, and a
    "measure" event before the second restarts the peak (the measurement protocol reports the second step, once
    lazily created state — optimizer buffers, cuDNN plans, cuBLAS workspaces — exists). Attention is traced as it
    runs on ``gpu`` (default: the catalogue's default card). A failing forward raises
    :class:`~profiler.models.loading.ForwardFailed` naming the layer."""
    model = in_dtype(model, config.torch_dtype)
    attention = CudaAttention(gpu or GPUS[DEFAULT_GPU])
    modules = named_modules(model)
    scopes = ModuleScopes(modules, track_backward=config.train)
    rec = _Recorder(scopes)
    for p in model.parameters():
        rec.track(p, "weights")
    for b in model.buffers():
        rec.track(b, "weights")
    x, y = make_batch(tuple(input_shape), 1, config.torch_dtype, "meta")
    rec.track(x, "input")
    rec.track(y, "input")
    measured = {"step": False}
    layers = LayerBytes(model, lambda: rec.live_bytes, lambda: measured["step"] and rec.phase is Phase.FORWARD)
    step = Step(model, x, y, config)
    observer = _TraceObserver(rec, model)
    try:
        with (_Redirect(attention), attention.redirected(model), scopes.attached(), layers, rec,
              tracked_forward(scopes, model), step.checkpointing(preserve_rng_state=False)):
            for run in range(2 if config.train else 1):
                if run == (1 if config.train else 0):
                    rec.mark("measure")
                    measured["step"] = True
                step.run(observer)
    finally:
        rec.recording = False
    return Trace(rec.events, layers.bytes, config.mode, config.optimizer if config.train else None,
                 config.dtype, tuple(input_shape), notes=attention.notes(steps=2 if config.train else 1))


def _label_gradients(rec: _Recorder, model: nn.Module) -> None:
    """Re-label the storages that ended up as ``.grad`` of a parameter (allocated as activations in backward)."""
    keys = {rec.key_of(p.grad) for p in model.parameters() if p.grad is not None}
    for event in rec.events:
        if event.kind == "alloc" and event.key in keys:
            event.category = "gradients"
