"""Count a model's cost per layer by running it on meta tensors under a dispatch mode that sees every aten op.

Nothing is computed: meta tensors carry shapes and dtypes only, so batch 128 at 224 costs what batch 1 does. Each op
is priced by :mod:`profiler.counting.rules` and charged to the module running it (:mod:`profiler.scopes`), so
functional calls (``F.relu``, ``torch.cat``) inside a module's ``forward`` are charged to that module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from profiler.counting.records import Counts, LayerStats, ModelStats
from profiler.counting.rules import OpCost, op_cost
from profiler.kinds import LOSS_ROW, ROOT_ROW, UNUSED_ROW, Mode, Phase, RowKind
from profiler.meta import MetaDispatchMode, meta_call
from profiler.models.loading import tracked_forward
from profiler.scopes import ModuleScopes, in_backward, named_modules
from profiler.step import Step, StepConfig, in_dtype, make_batch

#: Called with every op of a counted step, after the counter: (op, args, kwargs, outputs, the running layer's name,
#: the op's cost as the counter counted it).
OpObserver = Callable[[Any, tuple, dict, Any, str, OpCost], None]


class _CostMode(MetaDispatchMode):
    """Adds each op's cost to the row of the module running it and to the current phase."""

    def __init__(self, scopes: ModuleScopes, observe: OpObserver | None = None) -> None:
        super().__init__()
        self.scopes = scopes
        self.observe = observe
        self.rows: dict[str, Counts] = {}
        self.phases: dict[str, Counts] = {}
        self.uncounted: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = meta_call(func, args, kwargs)
        cost = op_cost(func, args, kwargs, out)
        if not cost.counted:
            self.uncounted[str(func.overloadpacket)] += 1
        row = Counts(cost.macs, cost.other_ops, cost.bytes)
        layer = self.scopes.current()
        self.rows.setdefault(layer, Counts()).add(row)
        phase = Phase.BACKWARD if in_backward() else Phase.FORWARD
        self.phases.setdefault(phase, Counts()).add(row)
        if self.observe is not None:
            self.observe(func, args, kwargs, out, layer, cost)
        return out


class _DynamoStandIn(types.ModuleType):
    """``torch._dynamo`` for a process that compiles nothing: ``disable(fn)`` is ``fn`` and ``graph_break()`` does
    nothing (what torch's meta kernels and optimizers call); ``config`` is dynamo's own config module, imported alone
    (activation checkpointing reads a flag of it on every call); any other attribute imports the real module, which
    then replaces this one."""

    def __init__(self, config_file: str) -> None:
        super().__init__("torch._dynamo")
        self._config_file = config_file

    def _config(self) -> types.ModuleType:
        """``torch._dynamo.config``, loaded from its file alone (its imports are light) and registered under its
        name, so that the real package reuses it if it is imported later. (The stand-in has no ``__path__``: any
        other submodule import asks for it, which hands over to the real package.)"""
        module = sys.modules.get("torch._dynamo.config")
        if module is None:
            spec = importlib.util.spec_from_file_location("torch._dynamo.config", self._config_file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[spec.name]
                raise
        return module

    @staticmethod
    def disable(fn: Any, recursive: bool = True, wrapping: bool = False) -> Any:
        return fn

    @staticmethod
    def graph_break() -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        if name == "config":
            return self._config()
        _drop_stand_in(self)
        return getattr(importlib.import_module("torch._dynamo"), name)


def _drop_stand_in(stand_in: types.ModuleType) -> None:
    if sys.modules.get("torch._dynamo") is stand_in:
        del sys.modules["torch._dynamo"]
    if vars(torch).get("_dynamo") is stand_in:  # getattr would import the real one
        delattr(torch, "_dynamo")


@contextmanager
def dynamo_import_skipped() -> Iterator[None]:
    """Save the ~1 s import of ``torch._dynamo`` in a short-lived process that compiles nothing.

    Several of torch's meta kernels are Python functions wrapped by ``torch._compile._disable_dynamo``, which imports
    ``torch._dynamo`` on their first call only to mark them "never trace" (and caches the marked function); an
    optimizer step calls ``torch._dynamo.graph_break()``. In a process that never compiles, neither changes anything,
    so while this block runs — and only if dynamo is not loaded yet — a stand-in module answers both, and hands out
    dynamo's config module (activation checkpointing reads it); code that needs more of dynamo gets the real module,
    imported then. The CLI uses it; library callers who may compile later in the same process should not.
    """
    if "torch._dynamo" in sys.modules:
        yield
        return
    package = importlib.util.find_spec("torch._dynamo")
    config_file = os.path.join(package.submodule_search_locations[0], "config.py") if package else ""
    if not os.path.isfile(config_file):
        yield
        return
    stand_in = _DynamoStandIn(config_file)
    sys.modules["torch._dynamo"] = stand_in
    try:
        yield
    finally:
        _drop_stand_in(stand_in)


def count_model(model: nn.Module, input_shape: tuple[int, ...], name: str = "", train: bool = False,
                depth: int | None = None, dtype: torch.dtype = torch.float32, model_source: str = "",
                observe: OpObserver | None = None) -> ModelStats:
    """Per-layer MACs, other ops and bytes of ``model`` (on the meta device, lazy layers already sized).

    One step of the protocol (:mod:`profiler.step`): inference, or a training step's forward, cross-entropy loss (row
    ``loss``) and backward with weight and input gradients — the optimizer update is not counted. Rows are leaf
    modules plus containers that run ops of their own, in execution order; ``depth`` folds deeper rows into their
    ancestors (``--depth``). The model is left as it was (mode, gradients). A failing forward raises
    :class:`~profiler.models.loading.ForwardFailed` naming the layer. ``observe`` sees every op of the pass too (the
    time model collects its kernels so, without a second pass).
    """
    modules = named_modules(model)
    model = in_dtype(model, dtype)
    x, y = make_batch(tuple(input_shape), 1, dtype, "meta")
    was_training = model.training
    # a fresh step: gradients left by an earlier count would add accumulation work, so set them aside
    saved_grads = [(p, p.grad) for p in model.parameters()]
    for p, _ in saved_grads:
        p.grad = None
    step = Step(model, x, y, StepConfig(Mode.of(train)), optimizer=False)
    if train:
        modules[LOSS_ROW] = step.loss_fn
    scopes = ModuleScopes(modules, track_backward=train, outside=LOSS_ROW if train else ROOT_ROW)
    try:
        with scopes.attached(), _CostMode(scopes, observe) as mode, tracked_forward(scopes, model):
            step.run()
    finally:
        model.train(was_training)
        for p, grad in saved_grads:
            p.grad = grad
    params = sum(p.numel() for p in model.parameters())
    layers = _rows(modules, scopes, mode)
    unused, notes = _unused_parameters(model, modules, scopes, layers)
    stats = ModelStats(model=name or type(model).__name__, input_shape=tuple(input_shape), mode=Mode.of(train),
                       params=params, param_bytes=_storage_bytes(model.parameters()), layers=layers + unused,
                       notes=notes,
                       uncounted_ops=dict(sorted(mode.uncounted.items())), phases=mode.phases if train else {},
                       dtype=str(dtype).removeprefix("torch."), model_source=model_source,
                       modules={key: (type(module).__name__, scopes.output_shapes.get(key))
                                for key, module in modules.items() if key})
    return fold(stats, depth) if depth is not None else stats


def _rows(modules: dict[str, nn.Module], scopes: ModuleScopes, mode: _CostMode) -> list[LayerStats]:
    """Leaf modules, and containers with ops of their own, in the order their forward first returned (a block's own
    ops — its residual add, its concatenation — come after its children)."""
    rows: dict[str, LayerStats] = {}
    for name in [*scopes.exit_order, *(n for n in mode.rows if n not in modules)]:
        module = modules.get(name)
        is_leaf = module is None or next(module.children(), None) is None
        if not is_leaf and name not in mode.rows:
            continue
        rows[name] = LayerStats(name=name or ROOT_ROW, type=type(module).__name__ if module is not None else "-",
                                output_shape=scopes.output_shapes.get(name),
                                kind=RowKind.LEAF if is_leaf else RowKind.OWN)
        rows[name].add(mode.rows.get(name, Counts()))
        if module is not None:
            rows[name].params += sum(p.numel() for p in module.parameters(recurse=False))
            rows[name].param_bytes += _storage_bytes(module.parameters(recurse=False))
    return list(rows.values())


def _storage_bytes(params: Iterable[nn.Parameter]) -> int:
    """Bytes the parameters occupy: elements × element size of each (their dtype, as counted)."""
    return sum(p.numel() * p.element_size() for p in params)


def _unused_parameters(model: nn.Module, modules: dict[str, nn.Module], scopes: ModuleScopes,
                       layers: list[LayerStats]) -> tuple[list[LayerStats], list[str]]:
    """A row for the parameters no row holds — those of modules whose forward never ran (left out of this mode, like
    GoogLeNet's auxiliary heads in eval mode, or used functionally by their parent, like MultiheadAttention's
    out_proj) — so that the rows add up to the total, and a note naming those modules."""
    missing = sum(p.numel() for p in model.parameters()) - sum(layer.params for layer in layers)
    if missing <= 0:
        return [], []
    missing_bytes = _storage_bytes(model.parameters()) - sum(layer.param_bytes for layer in layers)
    ran = set(scopes.exit_order)
    idle: dict[str, None] = {}
    for name, module in modules.items():
        if name in ran or not name or next(module.parameters(recurse=False), None) is None:
            continue
        while "." in name and name.rpartition(".")[0] not in ran:  # name the outermost module that did not run
            name = name.rpartition(".")[0]
        idle[name] = None
    shown = ", ".join(f"{name} ({type(modules[name]).__name__})" for name in list(idle)[:3])
    more = f" and {len(idle) - 3} more" if len(idle) > 3 else ""
    note = (f"{missing:,} parameters belong to modules whose forward did not run ({shown}{more}) — a parent may use "
            "their weights directly (MultiheadAttention its out_proj) or leave them out (GoogLeNet's auxiliary "
            f"heads in eval mode); the row {UNUSED_ROW} holds them, so that the rows add up to the total")
    if getattr(model, "aux_logits", False):
        note += ("; built without weights, torchvision's model keeps its auxiliary classifiers (aux_logits=True), "
                 "which the published parameter count of its weights leaves out")
    return [LayerStats(name=UNUSED_ROW, type="-", kind=RowKind.UNUSED, params=missing,
                       param_bytes=missing_bytes)], [note]


def fold(stats: ModelStats, depth: int) -> ModelStats:
    """``stats`` with every row deeper than ``depth`` name components merged into its ancestor at that depth
    (``--depth``): counts and parameters add up, the ancestor's type and output shape name the row."""
    rows: dict[str, LayerStats] = {}
    for layer in stats.layers:
        key, kind = layer.name, layer.kind
        if key in stats.modules and key.count(".") >= depth:
            key, kind = ".".join(key.split(".")[:depth]), RowKind.SUBTREE
        if key not in rows:
            type_name, shape = stats.modules.get(key, (layer.type, layer.output_shape))
            rows[key] = LayerStats(name=key, type=type_name, output_shape=shape, kind=kind)
        rows[key].add(layer)
        rows[key].params += layer.params
        rows[key].param_bytes += layer.param_bytes
    return replace(stats, layers=list(rows.values()))
