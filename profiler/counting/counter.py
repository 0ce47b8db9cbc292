"""Count a model's cost per layer by running it on meta tensors under a dispatch mode that sees every aten op.

Nothing is computed: meta tensors carry shapes and dtypes only, so batch 128 at 224 costs what batch 1 does. Each op
is priced by :mod:`profiler.counting.rules` and charged to the module running it (:mod:`profiler.scopes`), so
functional calls (``F.relu``, ``torch.cat``) inside a module's ``forward`` are charged to that module.
"""

from __future__ import annotations

import sys
import types
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from profiler.counting.records import Counts, LayerStats, ModelStats
from profiler.counting.rules import op_cost
from profiler.kinds import LOSS_ROW, ROOT_ROW
from profiler.models.loading import logits_of, tracked_forward
from profiler.scopes import ModuleScopes, named_modules


class _CostMode(TorchDispatchMode):
    """Adds each op's cost to the row of the module running it and to the current phase."""

    def __init__(self, scopes: ModuleScopes) -> None:
        super().__init__()
        self.scopes = scopes
        self.rows: dict[str, Counts] = {}
        self.phases: dict[str, Counts] = {}
        self.uncounted: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        cost = op_cost(func, args, kwargs, out)
        if not cost.counted:
            self.uncounted[str(func.overloadpacket)] += 1
        row = Counts(cost.macs, cost.other_ops, cost.bytes)
        self.rows.setdefault(self.scopes.current(), Counts()).add(row)
        phase = "backward" if torch._C._current_graph_task_id() != -1 else "forward"
        self.phases.setdefault(phase, Counts()).add(row)
        return out


@contextmanager
def dynamo_import_skipped() -> Iterator[None]:
    """Save the ~1 s import of ``torch._dynamo`` in a short-lived process that compiles nothing.

    Several of torch's meta kernels are Python functions wrapped by ``torch._compile._disable_dynamo``, which imports
    ``torch._dynamo`` on their first call only to mark them "never trace" (and caches the marked function). In a
    process that never compiles, that mark changes nothing, so while this block runs — and only if dynamo is not
    loaded yet — a stand-in module answers ``disable(fn) → fn``. The CLI uses it; library callers who may compile
    later in the same process should not.
    """
    if "torch._dynamo" in sys.modules:
        yield
        return
    stand_in = types.ModuleType("torch._dynamo")
    stand_in.disable = lambda fn, recursive=True, wrapping=False: fn  # type: ignore[attr-defined]
    sys.modules["torch._dynamo"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("torch._dynamo") is stand_in:
            del sys.modules["torch._dynamo"]
            if vars(torch).get("_dynamo") is stand_in:  # getattr would import the real one
                delattr(torch, "_dynamo")


def count_model(model: nn.Module, input_shape: tuple[int, ...], name: str = "", train: bool = False,
                depth: int | None = None, dtype: torch.dtype = torch.float32) -> ModelStats:
    """Per-layer MACs, other ops and bytes of ``model`` (on the meta device, lazy layers already sized).

    Inference: ``eval()`` and no autograd, one forward. Training step (``train=True``): ``train()``, forward,
    cross-entropy against class-0 labels (row ``loss``), backward with weight and input gradients — the optimizer
    update is not included. Rows are leaf modules plus containers that run ops of their own, in execution order;
    ``depth`` folds deeper rows into their ancestors (``--depth``). A failing forward raises
    :class:`~profiler.models.loading.ForwardFailed` naming the layer.
    """
    modules = named_modules(model)
    loss_fn = nn.CrossEntropyLoss()
    if train:
        modules[LOSS_ROW] = loss_fn
    scopes = ModuleScopes(modules, track_backward=train, outside=LOSS_ROW if train else ROOT_ROW)
    x = torch.empty(input_shape, device="meta", dtype=dtype)
    model = model.to(dtype)
    was_training = model.training
    # a fresh step: gradients left by an earlier count would add accumulation work, so set them aside
    saved_grads = [(p, p.grad) for p in model.parameters()]
    for p, _ in saved_grads:
        p.grad = None
    model.train(train)
    try:
        with scopes.attached(), _CostMode(scopes) as mode, tracked_forward(scopes, model):
            if train:
                out = model(x)
                logits = logits_of(out)
                target = torch.zeros(logits.shape[0], dtype=torch.long, device="meta")
                loss_fn(logits, target).backward()
            else:
                with torch.no_grad():
                    model(x)
    finally:
        model.train(was_training)
        for p, grad in saved_grads:
            p.grad = grad
    layers = _rows(modules, scopes, mode, depth)
    params = sum(p.numel() for p in model.parameters())
    return ModelStats(model=name or type(model).__name__, input_shape=tuple(input_shape),
                      mode="train" if train else "inference", params=params, layers=layers,
                      uncounted_ops=dict(sorted(mode.uncounted.items())),
                      phases=mode.phases if train else {}, dtype=str(dtype).removeprefix("torch."),
                      param_bytes=_storage_bytes(model.parameters()))


def _rows(modules: dict[str, nn.Module], scopes: ModuleScopes, mode: _CostMode, depth: int | None) -> list[LayerStats]:
    """Leaf modules, and containers with ops of their own, in the order their forward first returned (a block's own
    ops — its residual add, its concatenation — come after its children); with ``depth``, rows deeper than ``depth``
    name components are merged into their ancestor at that depth."""
    rows: dict[str, LayerStats] = {}
    for name in [*scopes.exit_order, *(n for n in mode.rows if n not in modules)]:
        module = modules.get(name)
        is_leaf = module is None or next(module.children(), None) is None
        if not is_leaf and name not in mode.rows:
            continue
        key, kind = name, "leaf" if is_leaf else "own"
        if depth is not None and module is not None and name and name.count(".") >= depth:
            key, kind = ".".join(name.split(".")[:depth]), "subtree"
        if key not in rows:
            owner = modules.get(key)
            rows[key] = LayerStats(name=key or ROOT_ROW, type=type(owner).__name__ if owner is not None else "-",
                                   output_shape=scopes.output_shapes.get(key), kind=kind)
        row = rows[key]
        row.add(mode.rows.get(name, Counts()))
        if module is not None:
            row.params += sum(p.numel() for p in module.parameters(recurse=False))
            row.param_bytes += _storage_bytes(module.parameters(recurse=False))
    return list(rows.values())


def _storage_bytes(params: Iterable[nn.Parameter]) -> int:
    """Bytes the parameters occupy: elements × element size of each (their dtype, as counted)."""
    return sum(p.numel() * p.element_size() for p in params)
