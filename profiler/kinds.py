"""The vocabulary every layer shares: str-valued enums (JSON keeps their plain values) and the names of the rows that
are not a module of the model. One home, so that no layer retypes a literal."""

from __future__ import annotations

from enum import Enum

#: The version of every JSON object's shape and meaning (CHANGELOG.md says what each version changed).
SCHEMA_VERSION = 2


class StrEnum(str, Enum):
    """An enum whose members are their string values: ``f"{Mode.TRAIN}"`` and ``json.dumps`` give ``train``."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Mode(StrEnum):
    """What one configuration runs: a forward in eval mode without autograd, or one training step."""

    INFERENCE = "inference"
    TRAIN = "train"

    @classmethod
    def of(cls, train: bool) -> Mode:
        return cls.TRAIN if train else cls.INFERENCE

    @property
    def words(self) -> str:
        """How a headline says it: "inference" or "training step"."""
        return "training step" if self is Mode.TRAIN else "inference"


class Source(StrEnum):
    """Where a figure comes from: run on a device, or computed without one."""

    MEASURED = "measured"
    PREDICTED = "predicted"


class Phase(StrEnum):
    """The parts of a step, in the order they run."""

    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


class RowKind(StrEnum):
    """What a per-layer row stands for: a leaf module, a container's own ops (functional calls in its ``forward``),
    a whole subtree folded by ``--depth``, or parameters that no layer's forward used."""

    LEAF = "leaf"
    OWN = "own"
    SUBTREE = "subtree"
    UNUSED = "unused"


class Bound(StrEnum):
    """What limits a kernel, a layer or a step: arithmetic, memory bandwidth, or the host launching kernels."""

    COMPUTE = "compute"
    MEMORY = "memory"
    HOST = "host"


class AttentionKernel(StrEnum):
    """The kernel ``scaled_dot_product_attention`` runs on a CUDA device (``torch.nn.attention.SDPBackend``)."""

    FLASH = "flash"
    EFFICIENT = "efficient"
    CUDNN = "cudnn"
    MATH = "math"

    @property
    def words(self) -> str:
        """How a note says it: "the memory-efficient kernel", "the math path (matmul + softmax)", ..."""
        return {AttentionKernel.FLASH: "the flash-attention kernel",
                AttentionKernel.EFFICIENT: "the memory-efficient kernel",
                AttentionKernel.CUDNN: "the cuDNN attention kernel",
                AttentionKernel.MATH: "the math path (matmul + softmax, scores materialized)"}[self]


class OpClass(StrEnum):
    """What a GPU kernel of the time model does (:mod:`profiler.bandwidth.kernels`); each class has its own
    efficiency in :mod:`profiler.bandwidth.timemodel`. The first four run on a compute roof, the rest on bandwidth."""

    CONV_FORWARD = "conv_forward"
    CONV_INPUT_GRAD = "conv_input_grad"
    CONV_WEIGHT_GRAD = "conv_weight_grad"
    MATMUL = "matmul"
    NORMALIZATION = "normalization"
    ELEMENTWISE = "elementwise"
    POOLING = "pooling"
    REDUCTION = "reduction"
    OPTIMIZER = "optimizer"

    @property
    def convolution(self) -> bool:
        """Whether cuDNN runs it (the TF32 choice of :meth:`profiler.catalogue.GpuSpec.roof` differs for
        convolutions)."""
        return self in (OpClass.CONV_FORWARD, OpClass.CONV_INPUT_GRAD, OpClass.CONV_WEIGHT_GRAD)

    @property
    def on_compute_roof(self) -> bool:
        """Convolutions and matrix products: their FLOPs meet a compute roof; the others only move bytes."""
        return self.convolution or self is OpClass.MATMUL


class FvcoreReason(StrEnum):
    """Why fvcore's "flops" differ from our MACs on a row (``flops --compare fvcore``; the words are
    :data:`profiler.counting.compare.REASONS`)."""

    BATCH_NORM = "batch_norm"
    NORM = "norm"
    ADAPTIVE_POOL = "adaptive_avg_pool"
    UPSAMPLING = "upsampling"
    GRID_SAMPLER = "grid_sampler"
    UNHANDLED_OP = "unhandled_op"
    EINSUM_ROUNDING = "einsum_rounding"
    UNEXPLAINED = "unexplained"


#: Work of the top-level model outside every submodule (its own functional calls).
ROOT_ROW = "(model)"
#: Work outside every tracked module.
OUTSIDE_ROW = "(outside)"
#: The cross-entropy loss of a training step, counted as a module of its own.
LOSS_ROW = "loss"
#: The optimizer update of a training step.
OPTIMIZER_ROW = "(optimizer)"
#: Parameters of modules whose forward never ran (no row of their own holds them).
UNUSED_ROW = "(modules that did not run)"
#: GPU time or CPU time no layer's range encloses.
OTHER_ROW = "(other)"
#: The part of a step the GPU spends idle, waiting for the host to launch kernels (step time − kernel time).
HOST_WAIT_ROW = "(GPU waiting for the host)"
#: fvcore's counts in modules that have no row of ours (``flops --compare fvcore``).
FVCORE_ONLY_ROW = "(fvcore only)"
