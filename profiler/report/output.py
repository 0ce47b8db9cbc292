"""Writing results: stdout, or a file replaced atomically (temporary file in the same folder, then rename)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from profiler.errors import ProfilerError

FORMATS = ("table", "markdown", "json", "csv")


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if ``path`` cannot be written: its folder must exist and be writable."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ProfilerError(f"--output {path} is a folder; give a file name")
    if not folder.is_dir():
        raise ProfilerError(f"cannot write --output {path}: folder '{folder}' does not exist; create it first")
    try:  # try for real: os.access says yes to root even where nothing can be written (/proc, read-only mounts)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ProfilerError(f"cannot write --output {path}: {err.strerror or err}; choose a writable location") \
            from None
    if target.exists() and not os.access(target, os.W_OK):
        raise ProfilerError(f"cannot write --output {path}: permission denied; choose a writable location")
    return target


def write_atomic(path: str | os.PathLike, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` in one rename, so readers never see a half-written file."""
    target = Path(path)
    data = text.encode() if isinstance(text, str) else text
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.",
                                   suffix=".tmp")
    except OSError as err:
        raise ProfilerError(f"cannot write {path}: {err.strerror or err}; choose a writable location") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise ProfilerError(f"cannot write {path}: {err.strerror or err}; choose a writable location") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
