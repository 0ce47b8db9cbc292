"""Units: the formatter picks one unit per column (from its largest value) and says which in the header; and the one
conversion of a count done in milliseconds into a rate per second."""

from __future__ import annotations

from collections.abc import Iterable

DECIMAL = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
BINARY = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def decimal_unit(values: Iterable[float]) -> tuple[float, str]:
    """(divisor, prefix) for counts such as MACs: the largest prefix that keeps the largest value ≥ 1."""
    top = max((abs(v) for v in values), default=0)
    return next(((d, p) for d, p in DECIMAL if top >= d), (1, ""))


def binary_unit(values: Iterable[float]) -> tuple[float, str]:
    """(divisor, unit) for bytes: KiB/MiB/GiB/TiB by the largest value, B below 1 KiB."""
    top = max((abs(v) for v in values), default=0)
    return next(((d, u) for d, u in BINARY if top >= d), (1, "B"))


def fmt_scaled(value: float, divisor: float, digits: int = 2) -> str:
    """``value / divisor`` with fixed decimals (integers as they are when the divisor is 1)."""
    if divisor == 1 and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value / divisor:,.{digits}f}"


def human_count(value: float, digits: int = 2) -> str:
    """A count with its own SI prefix: 762.30 M."""
    divisor, prefix = decimal_unit([value])
    return f"{fmt_scaled(value, divisor, digits)} {prefix}".rstrip()


def human_bytes(value: float) -> str:
    """Bytes with their own binary unit: 25.2 MiB, 4.08 GiB (two decimals from GiB up), 512 B."""
    divisor, unit = binary_unit([value])
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value / divisor:,.{2 if unit in ('GiB', 'TiB') else 1}f} {unit}"


def shape_str(shape: Iterable[int] | None) -> str:
    """(1, 96, 54, 54) → 1×96×54×54; None → -."""
    return "×".join(str(d) for d in shape) if shape is not None else "-"


def rate_per_s(amount: float, milliseconds: float) -> float:
    """``amount`` (FLOPs, bytes, examples) done in ``milliseconds``, per second: amount ÷ (ms / 1000). The one place
    a count over a measured time becomes a rate (achieved FLOP/s, effective bandwidth, examples/s)."""
    return amount / (milliseconds / 1e3)
