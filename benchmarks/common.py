"""What every benchmark shares: the section it returns, the machine it ran on, a repeat timer, tables, safe writes."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from tabulate import tabulate

from profiler.util.parallel import usable_cores

#: Packages whose versions the report header names: what the benchmarks run on and the peers they compare with.
PACKAGES = ("torch", "torchvision", "fvcore", "torchinfo", "thop", "calflops", "tabulate")
#: What a timed ``python -m profiler`` command does at its end that the bare ``import torch`` does not.
EXIT_NOTE = ("A `profiler` command exits without the interpreter's teardown of torch (`profiler.cli.run`: its files "
             "are written and closed before); the bare import pays it, 0.4–1 s.")


@dataclass(frozen=True)
class Section:
    """What one benchmark returns: a ``title``, a markdown ``body`` for reports/benchmarks.md (no heading of its
    own; the runner adds the title and a provenance line) and a plain-text ``summary`` for the terminal."""

    title: str
    body: str
    summary: str


def progress(message: str) -> None:
    """One line on stderr while a long benchmark runs, so a reader of the terminal sees it move."""
    print(message, file=sys.stderr, flush=True)


# --- the machine ---------------------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else whatever ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_bytes() -> int | None:
    """Physical memory in bytes, None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def package_version(name: str) -> str:
    """An installed distribution's version, or "not installed"; reads metadata only, imports nothing."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds consumed so far by every process on the machine (``/proc/stat``, hypervisor steal included) and by
    this process with its finished children, at wall-clock time ``wall_s``."""

    wall_s: float
    machine_s: float
    ours_s: float

    @classmethod
    def now(cls) -> CpuUse | None:
        """A sample, or None where the OS keeps no ``/proc/stat`` (not Linux)."""
        try:
            import resource  # POSIX only

            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (ImportError, OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(time.perf_counter(), (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
                   own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime)


def others_cpu_share(start: CpuUse | None, end: CpuUse | None) -> float | None:
    """The fraction of the machine's CPU time between two samples that went to other processes (or the hypervisor):
    work competing with a benchmark, which inflates its times — multi-threaded real forwards most. None if unknown."""
    if start is None or end is None or end.wall_s <= start.wall_s:
        return None
    others_s = (end.machine_s - start.machine_s) - (end.ours_s - start.ours_s)
    return max(0.0, others_s / ((end.wall_s - start.wall_s) * (os.cpu_count() or 1)))


def utc_now() -> str:
    """The current time, to the minute, in UTC: the one timestamp a provenance line carries."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine_rows() -> list[tuple[str, str]]:
    """The machine and software a run used, as (what, value) rows for the report header."""
    ram = ram_bytes()
    return [
        ("CPU", f"{cpu_model()}, {usable_cores()} usable cores (os.cpu_count() = {os.cpu_count()})"),
        ("RAM", f"{ram / 2**30:.1f} GiB" if ram else "unknown"),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        *((name, package_version(name)) for name in PACKAGES),
    ]


def machine_line() -> str:
    """The machine in one line, for the terminal and each section's provenance line."""
    return (f"{cpu_model()}, {usable_cores()} cores, Python {platform.python_version()}, "
            f"torch {package_version('torch')}")


# --- timing --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of each run of one task, and what its last run returned."""

    seconds: tuple[float, ...]
    result: Any = None

    @property
    def n(self) -> int:
        return len(self.seconds)

    @property
    def min_s(self) -> float:
        return min(self.seconds)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def interleaved(tasks: Mapping[str, Callable[[], Any]], repeats: int, budget_s: float = math.inf) -> dict[str, Timing]:
    """Run each task ``repeats`` times, round-robin (a, b, c, a, b, c, …), so that a change in the machine's speed
    during the run lands on every task alike; time each run with ``time.perf_counter``. A task stops repeating once
    its runs add up to ``budget_s`` (every task runs at least once). Garbage is collected before each run, outside
    the timed region."""
    seconds: dict[str, list[float]] = {name: [] for name in tasks}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, task in tasks.items():
            if seconds[name] and sum(seconds[name]) >= budget_s:
                continue
            gc.collect()
            start = time.perf_counter()
            results[name] = task()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(seconds[name]), results.get(name)) for name in tasks}


def ratio(numerator_s: float, denominator_s: float) -> str:
    """A ratio of two times for a table: ``1.46×`` below 10, ``85×`` above."""
    value = numerator_s / denominator_s
    return f"{value:.2f}×" if value < 10 else f"{value:,.0f}×"


def milliseconds(seconds: float) -> str:
    """Seconds shown as milliseconds: one decimal below 100 ms, whole milliseconds (with separators) above."""
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def run_command(argv: list[str], cwd: Path) -> None:
    """Run one command to completion, output discarded; a failing command stops the benchmark with its stderr."""
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def time_commands(benchmark: str, commands: Mapping[str, list[str]], cwd: Path, repeats: int) -> dict[str, Timing]:
    """Each command as a whole process (:func:`run_command`): one untimed warm-up each (page cache, bytecode), then
    ``repeats`` :func:`interleaved` rounds."""
    tasks = {label: (lambda argv=argv: run_command(argv, cwd)) for label, argv in commands.items()}
    for label, task in tasks.items():
        progress(f"{benchmark}: warm-up {label}")
        task()
    progress(f"{benchmark}: {repeats} interleaved rounds")
    return interleaved(tasks, repeats)


# --- output --------------------------------------------------------------------------------------------------------

def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; cells are printed as given (format numbers before)."""
    return tabulate(rows, headers=headers, tablefmt="github", colalign=align, disable_numparse=True)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """The same table as plain text for the terminal."""
    return tabulate(rows, headers=headers, tablefmt="simple", colalign=align, disable_numparse=True)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``, so a reader never
    sees half a file and an interrupted run leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates the file private to us; a report is for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def without_non_finite(obj: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no such numbers), and where each was:
    JSON path → the value's repr (``{"runs[3].peaks.copy_bytes_per_s": "nan"}``)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, {where or "$": repr(obj)}
    found: dict[str, str] = {}
    if isinstance(obj, dict):
        clean = {}
        for key, value in obj.items():
            clean[key], inner = without_non_finite(value, f"{where}.{key}" if where else str(key))
            found.update(inner)
        return clean, found
    if isinstance(obj, (list, tuple)):
        items = []
        for index, value in enumerate(obj):
            item, inner = without_non_finite(value, f"{where}[{index}]")
            items.append(item)
            found.update(inner)
        return items, found
    return obj, found


#: The key under which a written document lists the non-finite numbers it holds as null.
NON_FINITE_KEY = "non_finite"


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically as indented JSON. A NaN or infinity (a failed measurement's figure) is written as
    null and listed under ``non_finite`` with its path and value, so one bad number loses nothing else."""
    clean, found = without_non_finite(doc)
    if found:
        clean[NON_FINITE_KEY] = {**clean.get(NON_FINITE_KEY, {}), **found}
    write_atomic(path, json.dumps(clean, indent=1, allow_nan=False, default=str) + "\n")
