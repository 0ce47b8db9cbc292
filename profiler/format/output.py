"""Rendering helpers every formatter shares (tables, JSON, CSV) and the one way results leave: stdout, or a file
replaced atomically."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from profiler.util.files import write_atomic

FORMATS = ("table", "markdown", "json", "csv")


def emit(text: str, output: str | None) -> None:
    """Print ``text`` or write it to ``output`` atomically."""
    if output:
        write_atomic(output, text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str,
                 colalign: Sequence[str] | None = None) -> str:
    """A table as the terminal sees it (``fmt="table"``) or as GitHub markdown."""
    style = "github" if fmt == "markdown" else "simple"
    return tabulate(rows, headers=headers, tablefmt=style, disable_numparse=True,
                    colalign=colalign or ("left",) * 2 + ("right",) * (len(headers) - 2))


def to_json(obj: Any) -> str:
    """Stable JSON: indented, keys in insertion order, no NaN."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def to_csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV with a header row and Unix line endings."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()
