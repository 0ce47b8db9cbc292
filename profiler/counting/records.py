"""Plain records the counter produces and the formatters read. Bytes stay bytes; units are the formatter's job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from profiler.kinds import SCHEMA_VERSION, Mode, RowKind


@dataclass
class Counts:
    """MACs, other ops and bytes moved, summed over ops. FLOPs = 2 × MACs."""

    macs: int = 0
    other_ops: int = 0
    bytes: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved (0 where nothing moved)."""
        return self.flops / self.bytes if self.bytes else 0.0

    def add(self, other: Counts) -> None:
        self.macs += other.macs
        self.other_ops += other.other_ops
        self.bytes += other.bytes


@dataclass
class LayerStats(Counts):
    """One row: a leaf module, a container's own ops (``kind="own"``: functional calls in its ``forward``, not its
    children's), or with ``--depth`` a whole subtree (``kind="subtree"``). ``param_bytes`` is the storage of the
    row's parameters: each one's elements × its element size, at the dtype it was counted in."""

    name: str = ""
    type: str = ""
    output_shape: tuple[int, ...] | None = None
    params: int = 0
    param_bytes: int = 0
    kind: RowKind = RowKind.LEAF


@dataclass(repr=False)
class ModelStats:
    """Counts of one model at one input shape, per layer in execution order, for inference or one training step.

    ``phases`` splits the totals into forward and backward for a training step. ``uncounted_ops`` names ops that ran
    without a MAC/other-ops rule (their bytes are counted) with their call counts. ``param_bytes`` is the storage
    of all the model's parameters (each one's elements × its element size, at ``dtype``)."""

    model: str
    input_shape: tuple[int, ...]
    mode: Mode
    params: int
    layers: list[LayerStats]
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    phases: dict[str, Counts] = field(default_factory=dict)
    dtype: str = "float32"
    model_source: str = ""
    param_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    #: Every named module of the model → (type name, last output shape): what ``--depth`` folding names rows by.
    modules: dict[str, tuple[str, tuple[int, ...] | None]] = field(default_factory=dict, repr=False)

    @property
    def totals(self) -> Counts:
        total = Counts()
        for layer in self.layers:
            total.add(layer)
        return total

    def to_dict(self, what: str = "flops") -> dict[str, Any]:
        """The JSON object ``python -m profiler flops`` (``what="flops"``) or ``params`` (``"params"``) prints for
        this result; its shape is versioned by ``schema_version`` (CHANGELOG.md)."""
        from profiler.counting.rules import conventions

        obj: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "model": self.model,
                               "model_source": self.model_source, "input_shape": list(self.input_shape),
                               "mode": self.mode, "dtype": self.dtype}
        if what == "params":
            obj["totals"] = {"params": self.params, "param_bytes": self.param_bytes}
            obj["layers"] = [{"name": layer.name, "type": layer.type, "kind": layer.kind,
                              "output_shape": _shape(layer.output_shape), "params": layer.params,
                              "param_bytes": layer.param_bytes} for layer in self.layers]
            obj["notes"] = list(self.notes)
            return obj
        totals = self.totals
        obj["convention"] = conventions()
        obj["totals"] = {"params": self.params, "macs": totals.macs, "flops": totals.flops,
                         "other_ops": totals.other_ops, "bytes": totals.bytes}
        if self.phases:
            obj["phases"] = {phase: {"macs": c.macs, "flops": c.flops, "other_ops": c.other_ops, "bytes": c.bytes}
                             for phase, c in self.phases.items()}
        obj["layers"] = [{"name": layer.name, "type": layer.type, "kind": layer.kind,
                          "output_shape": _shape(layer.output_shape), "params": layer.params, "macs": layer.macs,
                          "flops": layer.flops, "other_ops": layer.other_ops, "bytes": layer.bytes,
                          "intensity": round(layer.intensity, 4)} for layer in self.layers]
        obj["uncounted_ops"] = dict(self.uncounted_ops)
        obj["notes"] = list(self.notes)
        return obj

    def __repr__(self) -> str:
        totals = self.totals
        shape = "×".join(map(str, self.input_shape))
        return (f"ModelStats({self.model}, input {shape} {self.dtype}, {Mode(self.mode).words}: {self.params:,} "
                f"params, {totals.macs:,} MACs, {totals.flops:,} FLOPs, {totals.other_ops:,} other ops, "
                f"{totals.bytes:,} bytes moved, {len(self.layers)} layers)")


def _shape(shape: tuple[int, ...] | None) -> list[int] | None:
    return list(shape) if shape is not None else None
