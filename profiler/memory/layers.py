"""What each leaf layer's forward leaves allocated — its output plus what autograd saved for backward — measured the
same way by the meta trace (live bytes of the recording) and on a real device (``memory_allocated``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from profiler.scopes import in_backward


class LayerBytes:
    """Forward hooks on every leaf module of ``model``: while ``active()`` is true, each forward adds
    ``read()`` after minus ``read()`` before to ``bytes[name]`` (summed over calls). Forwards re-run inside backward
    (activation checkpointing) are the backward's work and are not counted; use as a context manager."""

    def __init__(self, model: nn.Module, read: Callable[[], int], active: Callable[[], bool]) -> None:
        self.bytes: dict[str, int] = {}
        self._model, self._read, self._active = model, read, active
        self._handles: list[Any] = []

    def __enter__(self) -> LayerBytes:
        for name, module in self._model.named_modules():
            if next(module.children(), None) is not None:
                continue
            start: list[int] = []

            def pre(_m: nn.Module, _args: tuple, start: list[int] = start) -> None:
                if not in_backward():
                    start.append(self._read())

            def post(_m: nn.Module, _args: tuple, _out: Any, name: str = name, start: list[int] = start) -> None:
                if in_backward() or not start:
                    return
                before = start.pop()
                if self._active():
                    self.bytes[name] = self.bytes.get(name, 0) + self._read() - before

            self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
