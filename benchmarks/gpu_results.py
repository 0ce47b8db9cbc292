"""The results of a GPU run (``benchmarks/gpu_run.py``) as they are written — one JSON line per configuration in
``results.jsonl``, flushed and synced before the next starts — and the committed documents assembled from them.

A line is an object with ``key`` (what was run: :func:`memory_key`, :func:`bandwidth_key`, :func:`workspace_key`, or
``peaks``/``pytest:<step>``), ``kind``, ``status`` ("ok" or "failed", then with ``error``), ``session`` (the date of
the invocation that wrote it) and ``dry_run``; the rest depends on the kind. The last line of a key wins, so a
resumed run re-runs what failed by appending its new line. Lines cut off by an interruption are skipped.
Every session also appends a ``session`` line with its provenance and arguments.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
LOG_FILE = "run.log"
SUMMARY_FILE = "summary.txt"
#: What a worker process prefixes its result lines with on stdout (anything else it prints goes to the log).
MARK = "@gpu_run "
OK, FAILED = "ok", "failed"
#: The start of a dry run's file names: CPU stand-ins, never to be taken for GPU data.
DRY_RUN_PREFIX = "dry-run_"


def memory_key(config: dict[str, Any]) -> str:
    """The key of a memory configuration (``measure_cuda`` keyword arguments): every argument, sorted."""
    return "memory:" + ",".join(f"{name}={config[name]}" for name in sorted(config))


def bandwidth_key(model: str, size: int, batch: int, train: bool) -> str:
    """The key of a bandwidth configuration."""
    return f"bandwidth:{model}:{size}:b{batch}:{'train' if train else 'inference'}"


def workspace_key(model: str, size: int) -> str:
    """The key of the workspace measurements of one model's convolutions."""
    return f"workspaces:{model}:{size}"


class ResultStore:
    """``results.jsonl`` of one run folder: read once (a resumed run's earlier lines), appended line by line from
    any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.latest: dict[str, dict[str, Any]] = {}
        self.sessions: list[dict[str, Any]] = []
        self.damaged_lines = 0
        self._lock = threading.Lock()
        if path.is_file():
            for text in path.read_text(encoding="utf-8").splitlines():
                try:
                    line = json.loads(text)
                except ValueError:  # cut off by an interruption: that configuration is simply not done
                    self.damaged_lines += 1
                    continue
                self._remember(line)

    def _remember(self, line: dict[str, Any]) -> None:
        if line.get("kind") == "session":
            self.sessions.append(line)
        else:
            self.latest[line["key"]] = line

    def append(self, line: dict[str, Any]) -> None:
        """Add ``line`` and make it durable before returning (an interruption keeps everything appended)."""
        text = json.dumps(line, allow_nan=False, default=str)
        with self._lock:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._remember(line)

    def ok(self, key: str) -> bool:
        """Whether ``key``'s last line succeeded (a resumed run skips it)."""
        return self.latest.get(key, {}).get("status") == OK

    def get(self, key: str) -> dict[str, Any] | None:
        """The last line of ``key``, or None."""
        return self.latest.get(key)


def output_names(gpu: str, dry_run: bool) -> dict[str, str]:
    """The assembled files' names by kind: ``gpu_memory_<gpu>.json``, ``conv_workspaces_<gpu>.json``,
    ``gpu_bandwidth_<gpu>.json`` and the archive; a dry run's all start with ``dry-run_``."""
    prefix = DRY_RUN_PREFIX if dry_run else ""
    return {"memory": f"{prefix}gpu_memory_{gpu}.json", "workspaces": f"{prefix}conv_workspaces_{gpu}.json",
            "bandwidth": f"{prefix}gpu_bandwidth_{gpu}.json", "archive": f"{prefix}gpu_run_{gpu}.tar.gz",
            "summary": f"{prefix}gpu_run_{gpu}_summary.txt"}


def _lines(store: ResultStore, keys: Iterable[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The successful and the failed last lines of ``keys``, in that order (keys never run are in neither)."""
    done, failed = [], []
    for key in keys:
        line = store.get(key)
        if line is not None:
            (done if line["status"] == OK else failed).append(line)
    return done, failed


def _failure(line: dict[str, Any]) -> dict[str, Any]:
    return {"key": line["key"], "error": line.get("error"), "session": line.get("session")}


def _head(store: ResultStore, provenance: dict[str, Any], dry_run: bool, what: str) -> dict[str, Any]:
    notes = []
    if dry_run:
        notes.append("DRY RUN on the CPU: every figure comes from a CPU stand-in (host memory, CPU time, predicted "
                     "workspaces); none is a GPU measurement and none may be committed")
    return {"dry_run": dry_run, "what": what, "provenance": provenance,
            "sessions": [{k: s.get(k) for k in ("session", "command", "device", "driver", "torch", "cuda", "cudnn")}
                         for s in store.sessions], "notes": notes,
            "regenerate": "PYTHONPATH=. bash benchmarks/gpu_run.sh --out DIR (on a GPU; see benchmarks/gpu_run.py)"}


def memory_doc(store: ResultStore, keys: list[str], provenance: dict[str, Any], dry_run: bool,
               jobs: int) -> dict[str, Any]:
    """``gpu_memory_<gpu>.json``: every measured configuration (in the plan's order) with its prediction for the
    same GPU and the error; what failed, with why."""
    done, failed = _lines(store, keys)
    doc = _head(store, provenance, dry_run, "peak GPU memory per configuration, each measured in a fresh process "
                                            "(profiler/memory/measure.py), beside the prediction for this GPU")
    doc["notes"].append(f"up to {jobs} configurations were measured at once, each in its own process: allocator "
                        "peaks are per process and unaffected; nvml_used_bytes is the whole device's used memory, so "
                        "it includes the processes measured beside it")
    doc["runs"] = [{k: line.get(k) for k in ("config", "measured", "predicted", "allocated_error_percent",
                                             "reserved_error_percent", "seconds", "session")} for line in done]
    doc["failed"] = [{**_failure(line), "config": line.get("config")} for line in failed]
    return doc


def bandwidth_doc(store: ResultStore, keys: list[str], provenance: dict[str, Any], dry_run: bool,
                  settings: dict[str, Any]) -> dict[str, Any]:
    """``gpu_bandwidth_<gpu>.json``: the measured peaks beside the datasheet, and per configuration the object of
    ``python -m profiler bandwidth --format json`` (per-layer kernel times and rates, NVML summary and samples)."""
    done, failed = _lines(store, keys)
    peaks = store.get("peaks") or {}
    doc = _head(store, provenance, dry_run, "kernel time per layer, achieved rates against the measured peaks, NVML "
                                            "samples (profiler/bandwidth/runner.py), each configuration alone on "
                                            "the GPU")
    doc.update(settings=settings, peaks=peaks.get("peaks"), datasheet=peaks.get("datasheet"),
               runs=[line["run"] for line in done], failed=[_failure(line) for line in failed])
    non_finite = {line["key"]: line["non_finite"] for line in done if line.get("non_finite")}
    if non_finite:
        doc["notes"].append("figures that were NaN or infinite are null; non_finite_by_run says where")
        doc["non_finite_by_run"] = non_finite
    return doc


def workspace_doc(store: ResultStore, keys: list[str], provenance: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """``conv_workspaces_<gpu>.json``: the cuDNN workspace of every distinct convolution pass, keyed
    ``<stage>:<conv key>`` as ``profiler/memory/calibration.json``'s ``measured`` table (merge it there with
    ``python -m profiler.memory.calibration merge``)."""
    done, failed = _lines(store, keys)
    doc = _head(store, provenance, dry_run, "cuDNN workspace bytes per convolution and stage: probe (first call of "
                                            "the shape) and run (a later call), torch.backends.cudnn.benchmark off")
    table: dict[str, dict[str, int]] = {}
    for line in done:
        table.update(line["measured"])
    doc.update(models=[line["key"].removeprefix("workspaces:") for line in done], measured=dict(sorted(table.items())),
               failed=[_failure(line) for line in failed])
    stand_ins = sorted({line["stand_in"] for line in done if line.get("stand_in")})
    if stand_ins:
        doc["stand_in"] = "; ".join(stand_ins)
    return doc


def pack(folder: Path, names: list[str], archive: Path) -> None:
    """``archive`` (.tar.gz) holding ``names`` from ``folder`` under a top folder named after the archive, so that
    unpacking it anywhere creates one folder."""
    top = archive.name.removesuffix(".tar.gz")
    tmp = archive.with_name(f".{archive.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name in names:
            if (folder / name).is_file():
                tar.add(folder / name, arcname=f"{top}/{name}")
    os.replace(tmp, archive)
