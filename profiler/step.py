"""THE step every analyzer runs: inference, or one training step — so that the counted, predicted, measured and timed
steps are the same step by construction.

* **inference**: ``model.eval()``, autograd off (``torch.inference_mode()``; on meta ``torch.no_grad()``), one
  forward.
* **training step**: ``model.train()``; ``optimizer.zero_grad(set_to_none=True)``; forward; cross-entropy loss (an
  ``nn.CrossEntropyLoss`` module, the row ``loss``) against the batch's labels; ``backward()``; ``optimizer.step()``.
  The optimizer is SGD, lr 0.01, without momentum (``sgd``, the reference protocol), with momentum 0.9
  (``sgd-momentum``), or Adam, lr 1e-3 (``adam``), each with ``foreach=True`` (CUDA's default implementation, forced
  so that a meta or CPU run takes the same code path).
* **activation checkpointing** (``checkpoint``): each top-level child of the model that has parameters runs under
  non-reentrant ``torch.utils.checkpoint``.

Analyzers observe a step through :class:`StepObserver`: each phase (forward, backward, optimizer) runs inside the
observer's :meth:`~StepObserver.phase` context, which is where a counter switches its phase, a memory measurement
resets CUDA's peak statistics, a profiler opens its ranges.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from profiler.kinds import Mode, Phase, StrEnum
from profiler.models.loading import logits_of


class Optimizer(StrEnum):
    """The optimizers a training step can use (``--optimizer``)."""

    SGD = "sgd"
    SGD_MOMENTUM = "sgd-momentum"
    ADAM = "adam"


#: The ``--dtype`` choices: parameter, input and activation dtype.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SGD_LEARNING_RATE = 0.01
ADAM_LEARNING_RATE = 1e-3
MOMENTUM = 0.9


@dataclass(frozen=True)
class StepConfig:
    """What one configuration runs, besides the model and the input shape."""

    mode: Mode = Mode.INFERENCE
    optimizer: Optimizer = Optimizer.SGD
    dtype: str = "float32"
    checkpoint: bool = False

    @classmethod
    def make(cls, train: bool = False, optimizer: Optimizer | str = Optimizer.SGD, dtype: str = "float32",
             checkpoint: bool = False) -> StepConfig:
        """A configuration from the command line's terms (``--train``, ``--optimizer``, ``--dtype``,
        ``--checkpoint``)."""
        return cls(Mode.of(train), Optimizer(optimizer), dtype, checkpoint)

    @property
    def train(self) -> bool:
        return self.mode is Mode.TRAIN

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def describe(self) -> str:
        """The step in words, for notes: "training step (forward, cross-entropy, backward, SGD lr 0.01)"."""
        if not self.train:
            return "inference (eval mode, no autograd, one forward)"
        return f"training step (zero_grad, forward, cross-entropy loss, backward, {optimizer_words(self.optimizer)})"


def optimizer_words(optimizer: Optimizer | str) -> str:
    """The optimizer with its settings, in words."""
    return {Optimizer.SGD: f"SGD lr {SGD_LEARNING_RATE}, no momentum",
            Optimizer.SGD_MOMENTUM: f"SGD lr {SGD_LEARNING_RATE}, momentum {MOMENTUM}",
            Optimizer.ADAM: f"Adam lr {ADAM_LEARNING_RATE}"}[Optimizer(optimizer)]


def make_optimizer(name: Optimizer | str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of the protocol (module docstring), ``foreach`` forced on."""
    name = Optimizer(name)
    if name is Optimizer.SGD:
        return torch.optim.SGD(params, lr=SGD_LEARNING_RATE, foreach=True)
    if name is Optimizer.SGD_MOMENTUM:
        return torch.optim.SGD(params, lr=SGD_LEARNING_RATE, momentum=MOMENTUM, foreach=True)
    return torch.optim.Adam(params, lr=ADAM_LEARNING_RATE, foreach=True)


def in_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model.to(dtype)``, which casts the floating-point (and complex) parameters and buffers in place; a model
    already in ``dtype`` is returned as it is (``to`` would walk every module and tensor to change nothing)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    if all(t.dtype == dtype for t in tensors if t.is_floating_point() or t.is_complex()):
        return model
    return model.to(dtype)


def make_batch(shape: tuple[int, ...], num_classes: int, dtype: torch.dtype, device: torch.device | str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """An input batch of ``shape`` and one label per sample: random values on a real device, storage-less tensors
    on meta (labels are class 0 there)."""
    if torch.device(device).type == "meta":
        return (torch.empty(shape, device="meta", dtype=dtype),
                torch.zeros(shape[0], device="meta", dtype=torch.long))
    return (torch.randn(shape, device=device, dtype=dtype),
            torch.randint(0, num_classes, (shape[0],), device=device))


class StepObserver:
    """What an analyzer sees of a step. The default observes nothing."""

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """Wraps the work of ``phase``; ``before_backward`` runs inside the backward phase, before ``backward()``."""
        yield

    def before_backward(self) -> None:
        """Called once the loss exists, before ``backward()`` (the autograd graph is complete)."""


@contextmanager
def checkpointed_blocks(model: nn.Module, preserve_rng_state: bool = True) -> Iterator[list[str]]:
    """Activation checkpointing per top-level block: each child of the model runs under non-reentrant
    ``torch.utils.checkpoint`` (its activations are dropped after the forward and recomputed in backward).
    Children without parameters (activations, pooling) are left alone. Yields the checkpointed children's names."""
    wrapped = []
    for name, child in model.named_children():
        if next(child.parameters(), None) is None:
            continue
        original = child.forward

        def forward(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            return checkpoint(_original, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **kwargs)

        child.forward = forward
        wrapped.append((child, name))
    try:
        yield [name for _, name in wrapped]
    finally:
        for child, _ in wrapped:
            del child.forward


class Step:
    """One model, one batch and, for training, its loss module and optimizer: :meth:`run` runs the step once.

    The model must already be on the device of ``x`` in the step's dtype. Construction puts it in train or eval
    mode; ``optimizer=False`` leaves the update out (the static counts cover forward, loss and backward only)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: StepConfig,
                 optimizer: bool = True) -> None:
        self.model, self.x, self.y, self.config = model, x, y, config
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = (make_optimizer(config.optimizer, list(model.parameters()))
                          if config.train and optimizer else None)
        model.train(config.train)

    @contextmanager
    def checkpointing(self, preserve_rng_state: bool = True) -> Iterator[None]:
        """Activation checkpointing for the block, if the configuration asks for it (meta runs pass
        ``preserve_rng_state=False``: there is no RNG state to keep)."""
        with ExitStack() as stack:
            if self.config.checkpoint:
                stack.enter_context(checkpointed_blocks(self.model, preserve_rng_state))
            yield

    def _no_autograd(self) -> Any:
        """``torch.inference_mode()`` on a real device, as the measurement protocol runs; ``torch.no_grad()`` on
        meta, which allocates the same but lets composite ops (``conv2d``, ``linear``) decompose into the aten ops
        the counting rules and the trace see (under inference mode a dispatch mode sees ``aten.conv2d`` whole)."""
        return torch.no_grad() if self.x.device.type == "meta" else torch.inference_mode()

    def run(self, observer: StepObserver | None = None) -> None:
        """Run the step once (module docstring), each phase inside ``observer.phase``. The output and the loss live
        until the step returns, as in a training loop's body."""
        observer = observer or StepObserver()
        # tensors a forward creates without naming a device (torch.zeros(n, 12)) land beside the input
        with torch.device(self.x.device) if self.x.device.type == "meta" else nullcontext():
            self._run(observer)

    def _run(self, observer: StepObserver) -> None:
        if not self.config.train:
            with observer.phase(Phase.FORWARD), self._no_autograd():
                self.model(self.x)
            return
        with observer.phase(Phase.FORWARD):
            if self.optimizer is not None:
                self.optimizer.zero_grad(set_to_none=True)
            output = self.model(self.x)
            loss = self.loss_fn(logits_of(output), self.y)
        with observer.phase(Phase.BACKWARD):
            observer.before_backward()
            loss.backward()
        if self.optimizer is not None:
            with observer.phase(Phase.OPTIMIZER):
                self.optimizer.step()
