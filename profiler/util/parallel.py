"""Independent pieces of work spread over the machine's cores: forked worker processes, results in input order."""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

#: Set to "1" to run everything in this process (debugging, profiling).
SERIAL_ENV = "PROFILER_SERIAL"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, e.g. in a container)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: Collector thresholds inside :func:`frozen_heap` (Python's defaults: 700, 10, 10).
HEAP_THRESHOLDS = (20_000, 20, 100)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Everything alive now (torch and the other imports: hundreds of thousands of objects) is kept out of the
    garbage collector's sight for the block (:func:`gc.freeze`), and forked workers inherit that. The meta passes
    make cyclic garbage (autograd graphs, hooks) at a high rate, and each full collection would walk all of torch
    again: about a fifth of the reports' time. Collections are also made rarer (:data:`HEAP_THRESHOLDS`, another
    tenth): the garbage is still collected, in larger batches. (No collection before freezing: it would walk all of
    torch once more, 0.1 s, to free a little memory; what garbage is frozen goes back to the collector afterwards.)"""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*HEAP_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def run_all(tasks: Sequence[tuple[Callable[..., Any], tuple, dict]]) -> list[Any]:
    """``[fn(*args, **kwargs) for fn, args, kwargs in tasks]``, computed by one forked worker per core where there
    are several cores (and ``fork`` exists), else here. Functions must be module-level (they are sent by name);
    results and exceptions come back pickled. The work must not depend on which process runs it: deterministic
    results are the same either way."""
    workers = min(usable_cores(), len(tasks))
    if workers < 2 or os.environ.get(SERIAL_ENV) == "1" or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(*args, **kwargs) for fn, args, kwargs in tasks]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(fn, *args, **kwargs) for fn, args, kwargs in tasks]
        return [future.result() for future in futures]
