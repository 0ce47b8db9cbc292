"""Our MACs beside fvcore's "flops", per layer, with the reason for every difference (``flops --compare fvcore``).

fvcore (``fvcore.nn.FlopCountAnalysis``, see ``fvcore/nn/flop_count.py`` and ``jit_handles.py``) traces a real
forward with ``torch.jit`` and prices each traced op with a handle. It "counts one fused multiply-add as one flop",
so on convolutions and matrix products its flops are our MACs; it adds into the same number what some other ops
cost by rules of its own (batch norm, other norms, adaptive average pooling, upsampling), and leaves out every op
it has no handle for. fvcore runs on a CPU copy of the model with freshly initialized weights, at batch 1 (its
trace computes for real; every count here is proportional to the batch), in eval mode with autograd on, as its
documentation does: ``nn.MultiheadAttention`` then takes its slow path, since the inference fast path needs
autograd off. Our count is of the same model on meta tensors at the same input.

Per row, fvcore's count by operator is split: its matrix handles (:data:`MATRIX_HANDLES`) against our MACs, every
other handle a reason of :class:`~profiler.kinds.FvcoreReason`, and what is left — our MACs in ops fvcore has no
handle for, or its einsum estimate — a reason too; a difference nothing explains is reported as unexplained. The
reasons' wording (:data:`REASONS`) is quoted in ``docs/peers.md`` (a test checks it).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import torch

from profiler.counting.counter import count_model
from profiler.errors import ProfilerError
from profiler.kinds import FVCORE_ONLY_ROW, ROOT_ROW, SCHEMA_VERSION, FvcoreReason
from profiler.models import build, resolve
from profiler.models.loading import ForwardFailed, explain, to_device

#: fvcore's handles of convolutions and matrix products (by its short op names): one MAC, one fvcore flop.
MATRIX_HANDLES = frozenset({"conv", "addmm", "linear", "matmul", "mm", "bmm", "einsum"})

#: fvcore's other handles (short op names) and the reason each adds.
HANDLE_REASONS = {
    "batch_norm": FvcoreReason.BATCH_NORM,
    "group_norm": FvcoreReason.NORM,
    "layer_norm": FvcoreReason.NORM,
    "instance_norm": FvcoreReason.NORM,
    "adaptive_avg_pool2d": FvcoreReason.ADAPTIVE_POOL,
    "upsample_nearest2d": FvcoreReason.UPSAMPLING,
    "upsample_bilinear2d": FvcoreReason.UPSAMPLING,
    "grid_sampler": FvcoreReason.GRID_SAMPLER,
}

#: Traced ops with multiply-accumulates that fvcore has no handle for (it lists them as unsupported, counts 0).
UNHANDLED_MATRIX_OPS = frozenset({
    "aten::scaled_dot_product_attention", "aten::_native_multi_head_attention", "aten::baddbmm", "aten::addbmm",
    "aten::mv", "aten::addmv", "aten::dot", "aten::vdot", "aten::bilinear", "aten::_trilinear",
})

#: Relative error of fvcore's einsum count: it parses numpy's ``einsum_path`` printout, 4 significant digits.
EINSUM_ROUNDING = 5e-4

#: Each reason in words: the rule fvcore applies, and what we do with the same work. docs/peers.md quotes each.
REASONS = {
    FvcoreReason.BATCH_NORM: "batch norm: fvcore adds 2 flops per element in eval (1 without affine parameters); "
                             "we count it as other ops, not MACs",
    FvcoreReason.NORM: "layer, group and instance norm: fvcore adds 5 flops per element (4 without affine "
                       "parameters); we count them as other ops, not MACs",
    FvcoreReason.ADAPTIVE_POOL: "adaptive average pooling: fvcore adds 1 flop per input element; we count it as "
                                "other ops, not MACs",
    FvcoreReason.UPSAMPLING: "upsampling: fvcore adds 1 flop per output element for nearest, 4 for bilinear; we "
                             "count it as other ops, not MACs",
    FvcoreReason.GRID_SAMPLER: "grid sampling: fvcore adds 4 flops per output element; we count no MACs for it",
    FvcoreReason.UNHANDLED_OP: "fvcore has no handle for a matrix product here (scaled_dot_product_attention, "
                               "baddbmm, mv, bilinear...): it lists the op as unsupported and counts 0 for its MACs",
    FvcoreReason.EINSUM_ROUNDING: "einsum: fvcore reads the count from numpy's einsum_path printout, rounded to 4 "
                                  "significant digits",
    FvcoreReason.UNEXPLAINED: "unexplained: fvcore's matrix handles count differently from our MAC rules here",
}


#: How the comparison ran, and what fvcore's flops are in our terms (printed under every comparison, and in its JSON).
PROTOCOL = ("fvcore traced the real forward (torch.jit) of a CPU copy of the model: batch 1, freshly initialized "
            "weights, eval mode, autograd on (so nn.MultiheadAttention takes its slow path); ours counted the same "
            "model and input on meta tensors")
CONVENTION = ("fvcore counts one fused multiply-add as one flop: on convolutions and matrix products its flops are "
              "our MACs, so a row without a reason has the same count in both; rows where both count 0 "
              "(activations, max pooling, dropout...) are left out")


@dataclass
class Difference:
    """Part of fvcore's count minus ours on one row, and why (``flops`` may be negative: fvcore counts less)."""

    reason: FvcoreReason
    flops: int


@dataclass
class ComparedRow:
    """One of our rows (a leaf module, a container's own ops) beside the ops fvcore saw in the same place."""

    name: str
    type: str
    macs: int                           # ours
    fvcore_flops: int                   # fvcore's "flops" (1 per fused multiply-add, plus its other handles)
    differences: list[Difference] = field(default_factory=list)
    unsupported_ops: dict[str, int] = field(default_factory=dict)   # fvcore's, in this row: counted 0 there

    @property
    def difference(self) -> int:
        """fvcore's count minus our MACs: the sum of :attr:`differences`."""
        return self.fvcore_flops - self.macs


@dataclass
class FvcoreComparison:
    """Our MACs and fvcore's flops for one model and input, per row (rows where both are 0 left out), with the
    reasons for every difference and the ops fvcore did not count."""

    model: str
    model_source: str
    input_shape: tuple[int, ...]
    fvcore_version: str
    rows: list[ComparedRow]
    macs: int
    fvcore_flops: int
    unsupported_ops: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def by_reason(self) -> dict[FvcoreReason, int]:
        """The difference summed per reason, in :class:`~profiler.kinds.FvcoreReason` order."""
        totals: Counter[FvcoreReason] = Counter()
        for row in self.rows:
            for difference in row.differences:
                totals[difference.reason] += difference.flops
        return {reason: totals[reason] for reason in FvcoreReason if reason in totals}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``python -m profiler flops --compare fvcore`` prints for this comparison: every field,
        each row's difference, the difference per reason and each reason's words (``schema_version``:
        CHANGELOG.md)."""
        obj = asdict(self)
        obj["input_shape"] = list(self.input_shape)
        for row, record in zip(obj["rows"], self.rows, strict=True):
            row["difference"] = record.difference
        reasons = self.by_reason
        obj["by_reason"] = {str(reason): flops for reason, flops in reasons.items()}
        obj["reasons"] = {str(reason): REASONS[reason] for reason in reasons}
        return {"schema_version": SCHEMA_VERSION, **obj, "convention": CONVENTION, "protocol": PROTOCOL}


def _fvcore() -> Any:
    """``fvcore.nn`` and its version, imported only when a comparison runs; a missing fvcore is a user error."""
    try:
        with warnings.catch_warnings():  # its import scripts a function: torch warns that jit.script is deprecated
            warnings.simplefilter("ignore")
            import fvcore.nn
    except ImportError:
        raise ProfilerError("--compare fvcore needs fvcore, which is not installed here: pip install fvcore "
                            "(it is one of profiler's requirements)") from None
    try:
        version = metadata.version("fvcore")
    except metadata.PackageNotFoundError:
        version = "unknown version"
    return fvcore.nn, version


def _own(counts: dict[str, Counter[str]], name: str) -> Counter[str]:
    """What fvcore counted in ``name``'s own ops: its counts (which include every descendant's, fvcore's "owner"
    mode) minus its direct children's."""
    own = Counter(counts.get(name, {}))
    prefix = f"{name}." if name else ""
    for child, child_counts in counts.items():
        rest = child[len(prefix):] if child.startswith(prefix) and child != name else None
        if rest and "." not in rest:
            own.subtract(child_counts)
    return +own


def _differences(macs: int, by_handle: Counter[str], unsupported: dict[str, int]) -> list[Difference]:
    """Split fvcore's count on one row minus our MACs into reasons (module docstring)."""
    differences: Counter[FvcoreReason] = Counter()
    for handle, flops in by_handle.items():
        if handle not in MATRIX_HANDLES:
            differences[HANDLE_REASONS.get(handle, FvcoreReason.UNEXPLAINED)] += round(flops)
    rest = round(sum(flops for handle, flops in by_handle.items() if handle in MATRIX_HANDLES)) - macs
    if rest:
        einsum = by_handle.get("einsum", 0)
        if rest < 0 and UNHANDLED_MATRIX_OPS & set(unsupported):
            differences[FvcoreReason.UNHANDLED_OP] += rest
        elif einsum and abs(rest) <= EINSUM_ROUNDING * einsum + 1:
            differences[FvcoreReason.EINSUM_ROUNDING] += rest
        else:
            differences[FvcoreReason.UNEXPLAINED] += rest
    return [Difference(reason, flops) for reason, flops in differences.items() if flops]


def compare_fvcore(name: str, size: int | None = None, channels: int | None = None,
                   classes: int | None = None) -> FvcoreComparison:
    """Our MACs and fvcore's flops for ``name`` at ``size`` (default: the model's), batch 1, inference, per row
    (module docstring). Raises :class:`ProfilerError` when fvcore is missing or the input is too small."""
    fvcore_nn, version = _fvcore()
    spec = resolve(name)
    size = size or spec.default_size
    shape = spec.input_shape(1, size, channels)
    try:
        ours = count_model(build(spec, size, channels, classes), shape, name=spec.name)
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None
    model = to_device(build(spec, size, channels, classes), "cpu").eval()
    analysis = fvcore_nn.FlopCountAnalysis(model, torch.randn(shape))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with warnings.catch_warnings(), _quiet_fvcore_logger():
        warnings.simplefilter("ignore")
        counts = analysis.by_module_and_operator()
        unsupported_all = {module: analysis.unsupported_ops(module) for module in counts}
    rows = []
    for layer in ours.layers:
        key = "" if layer.name == ROOT_ROW else layer.name
        by_handle = _own(counts, key)
        unsupported = dict(sorted(_own(unsupported_all, key).items()))
        fvcore_flops = round(sum(by_handle.values()))
        if not (layer.macs or fvcore_flops):
            continue
        rows.append(ComparedRow(layer.name, layer.type, layer.macs, fvcore_flops,
                                _differences(layer.macs, by_handle, unsupported), unsupported))
    total = round(analysis.total())
    counted = sum(row.fvcore_flops for row in rows)
    if total != counted:  # fvcore counted in a module we have no row for
        rows.append(ComparedRow(FVCORE_ONLY_ROW, "-", 0, total - counted,
                                [Difference(FvcoreReason.UNEXPLAINED, total - counted)]))
    return FvcoreComparison(model=spec.name, model_source=spec.source, input_shape=tuple(shape), fvcore_version=version,
                            rows=rows, macs=ours.totals.macs, fvcore_flops=total,
                            unsupported_ops=dict(sorted(analysis.unsupported_ops().items())))


@contextmanager
def _quiet_fvcore_logger() -> Iterator[None]:
    """fvcore logs the ops it skips and the modules that did not run through ``logging``; the comparison lists
    them itself."""
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def compare_configs(names: list[str], sizes: list[int] | None, batch: int = 1, channels: int | None = None,
                    classes: int | None = None) -> list[FvcoreComparison]:
    """:func:`compare_fvcore` for every (model, size) pair, sizes defaulting to each model's own; at batch 1 whatever
    ``batch`` is (a note says so where it is not 1)."""
    results = []
    for name in names:
        for size in sizes or [None]:
            result = compare_fvcore(name, size, channels, classes)
            if batch != 1:
                result.notes.append(f"compared at batch 1, not {batch}: fvcore runs the model for real, and every "
                                    "count here is proportional to the batch")
            results.append(result)
    return results
