"""The tensors inside an op's or a module's arguments and results: a hot path of every meta pass."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten

#: Leaves that are never tensors (checked before handing a value to ``tree_flatten``).
_NOT_TENSORS = frozenset({type(None), bool, int, float, complex, str, torch.dtype, torch.device, torch.layout,
                          torch.memory_format})


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    """The tensors among ``tree``'s pytree leaves, in :func:`torch.utils._pytree.tree_flatten`'s order. Tensors,
    plain tuples, lists and dicts (what ops and most modules take and return) are walked here, four times faster;
    anything else (named tuples, registered containers) by ``tree_flatten`` itself."""
    found: list[torch.Tensor] = []
    _collect(tree, found)
    return found


def _collect(value: Any, found: list[torch.Tensor]) -> None:
    kind = type(value)
    if kind is tuple or kind is list:
        for item in value:
            _collect(item, found)
    elif isinstance(value, torch.Tensor):
        found.append(value)
    elif kind is dict:
        for item in value.values():
            _collect(item, found)
    elif kind not in _NOT_TENSORS:
        leaves, _ = tree_flatten(value)
        found.extend(t for t in leaves if isinstance(t, torch.Tensor))
