"""Which module is running: a forward stack from module hooks, and the module behind each autograd node.

Forward attribution is exact: pre/post hooks push and pop the module's qualified name. Backward attribution is exact
too, without hooks that fire late: when a module's forward returns, the autograd nodes between its outputs and its
inputs that no submodule has claimed are claimed by it; during backward, ``torch._C._current_autograd_node()`` names
the node being run, hence its module. Gradient accumulation for a tensor used twice runs inside the node whose
gradient arrives last and is attributed to that node's module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from profiler.kinds import OUTSIDE_ROW
from profiler.util.tensors import tensor_leaves


class ModuleScopes:
    """Tracks the running module of ``modules`` (qualified name → module) in forward, and in backward when
    ``track_backward`` is set. ``current()`` names it (``outside`` when none runs); ``exit_order`` lists modules in
    the order their forward first returned; ``output_shapes`` keeps each module's last output shape. When a forward
    raises, the stack is left as it was, so its top names the module that failed."""

    def __init__(self, modules: dict[str, nn.Module], track_backward: bool = False, outside: str = OUTSIDE_ROW) -> None:
        self.modules = modules
        self.track_backward = track_backward
        self.outside = outside
        self.stack: list[str] = []
        self.exit_order: list[str] = []
        self.output_shapes: dict[str, tuple[int, ...]] = {}
        self.types: dict[str, str] = {name: type(m).__name__ for name, m in modules.items()}
        self._node_owner: dict[torch.autograd.graph.Node, str] = {}
        self._input_nodes: dict[str, list[set]] = {}
        self._handles: list = []
        self._exited: set[str] = set()

    def current(self) -> str:
        """The innermost running module: the forward stack's top, else the owner of the running autograd node."""
        if self.stack:
            return self.stack[-1]
        if self.track_backward:
            node = torch._C._current_autograd_node()
            if node is not None:
                return self._node_owner.get(node, self.outside)
        return self.outside

    def _pre_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if in_backward():
                return
            self.stack.append(name)
            if self.track_backward:
                boundary = {t.grad_fn for t in tensor_leaves(args) if t.grad_fn is not None}
                self._input_nodes.setdefault(name, []).append(boundary)
        return hook

    def _post_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if in_backward():
                return
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
            if name not in self._exited:
                self._exited.add(name)
                self.exit_order.append(name)
            outs = tensor_leaves(output)
            if outs:
                self.output_shapes[name] = tuple(outs[0].shape)
            if self.track_backward and self._input_nodes.get(name):
                self._claim(name, outs, self._input_nodes[name].pop())
        return hook

    def _claim(self, name: str, outputs: list[torch.Tensor], boundary: set) -> None:
        """Claim for ``name`` every unclaimed node reachable from its outputs without crossing its inputs' nodes.
        Submodules ran (and claimed) first, so what is left is the module's own work."""
        todo = [t.grad_fn for t in outputs if t.grad_fn is not None]
        seen: set = set()
        while todo:
            node = todo.pop()
            if node in seen or node in boundary:
                continue
            seen.add(node)
            self._node_owner.setdefault(node, name)
            todo.extend(nxt for nxt, _ in node.next_functions if nxt is not None)

    @contextmanager
    def attached(self) -> Iterator[ModuleScopes]:
        """Install the hooks on every module for the duration of the block."""
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
                self._handles.append(module.register_forward_hook(self._post_hook(name)))
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()


def in_backward() -> bool:
    """True while autograd runs a backward pass. Module forwards re-run there (activation checkpointing) are not
    tracked: their work is charged to the autograd node that asked for it, and a re-run may stop early (by raising
    inside the forward), which would leave a pushed scope behind."""
    return torch._C._current_graph_task_id() != -1


def named_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name → module, the model itself as ""; a module reachable by two paths keeps its first name."""
    return dict(model.named_modules())
