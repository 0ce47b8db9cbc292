"""The worker processes of a GPU run (``benchmarks/gpu_run.py``), and the parent's side of their protocol.

``python -m benchmarks.gpu_workers KIND SPEC`` (SPEC: a JSON object) runs one kind of work alone in a fresh process
and prints each result as one line ``@gpu_run {json}`` on stdout as soon as it is done (before each configuration
an ``{"event": "start", "key": ...}`` line, so the parent knows which one hung or crashed); whatever else the
libraries print goes to the run's log. Kinds:

* ``bandwidth``: the device's peaks (measured first unless SPEC holds them), then each configuration with the
  protocol of ``python -m profiler bandwidth`` (:func:`profiler.bandwidth.runner.profile_config`).
* ``workspaces``: per model, the cuDNN workspaces of its convolutions not measured before
  (:func:`benchmarks.gpu_memory.measure_conv_workspaces`); on the CPU (a dry run) the calibration's predicted
  workspaces stand in, labelled so.

A worker stops starting configurations at SPEC's ``stop_at`` (seconds since the epoch).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.common import without_non_finite
from benchmarks.gpu_results import FAILED, MARK, OK, bandwidth_key, workspace_key

#: What a dry run's workspace table holds instead of measurements.
WORKSPACE_STAND_IN = ("dry run: the calibration's predicted workspaces (profiler.memory.workspaces.conv_workspaces), "
                      "not measured")


def emit(line: dict[str, Any]) -> None:
    """Print one result line for the parent; NaN and infinities become null, listed under ``non_finite``."""
    clean, found = without_non_finite(line)
    if found:
        clean["non_finite"] = {**clean.get("non_finite", {}), **found}
    print(MARK + json.dumps(clean, allow_nan=False, default=str), flush=True)


def _failed(key: str, kind: str, err: BaseException, started: float) -> dict[str, Any]:
    return {"key": key, "kind": kind, "status": FAILED, "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=8), "seconds": round(time.monotonic() - started, 2)}


def bandwidth_worker(spec: dict[str, Any]) -> int:
    """Peaks, then each configuration of ``spec["configs"]`` ([model, size, train]), one line each."""
    import torch

    from profiler.bandwidth.peaks import measure_cpu_peaks, measure_cuda_peaks, peaks_from_json, peaks_json
    from profiler.bandwidth.runner import profile_config
    from profiler.catalogue import datasheet_for
    from profiler.device import provenance as device_provenance
    from profiler.models import resolve

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    cuda = spec["device"] == "cuda"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    provenance = device_provenance(device, detailed=True)
    provenance["script"] = "benchmarks/gpu_run.py"
    started = time.monotonic()
    if spec.get("peaks"):
        peaks = peaks_from_json(spec["peaks"])
    else:
        try:
            peaks = (measure_cuda_peaks if cuda else measure_cpu_peaks)(device, provenance["device"], provenance)
        except Exception as err:  # without peaks there is nothing to compare with: say why and stop
            emit(_failed("peaks", "peaks", err, started))
            return 1
        sheet = datasheet_for(provenance["device"]) if cuda else None
        emit({"key": "peaks", "kind": "peaks", "status": OK, "peaks": peaks_json(peaks),
              "datasheet": asdict(sheet) if sheet else None, "seconds": round(time.monotonic() - started, 2)})
    source = f"measured by benchmarks/gpu_run.py at the start of session {peaks.provenance.get('date', '?')}"
    for model, size, train in spec["configs"]:
        if time.time() >= spec["stop_at"]:
            break
        key = bandwidth_key(model, size, spec["batch"], train)
        emit({"event": "start", "key": key})
        started = time.monotonic()
        try:
            result = profile_config(resolve(model), size, spec["batch"], None, None, train, spec["steps"],
                                    spec["warmup"], device, peaks, source, provenance,
                                    min_profiled_s=spec["min_profiled_s"])
        except Exception as err:  # record it and go on with the other configurations
            emit(_failed(key, "bandwidth", err, started))
            continue
        _, non_finite = without_non_finite(asdict(result))  # to_dict writes them as null without a word
        line = {"key": key, "kind": "bandwidth", "status": OK, "run": result.to_dict(),
                "seconds": round(time.monotonic() - started, 2)}
        if non_finite:
            line["non_finite"] = non_finite
        emit(line)
    return 0


def workspace_worker(spec: dict[str, Any]) -> int:
    """For each [model, size] of ``spec["models"]``, the workspaces of its convolutions not in ``spec["known"]``
    (conv keys measured before), one line per model."""
    from benchmarks.gpu_memory import measure_conv_workspaces, model_conv_calls
    from profiler.memory.calibration import calibrations
    from profiler.memory.workspaces import conv_workspaces

    known = set(spec["known"])
    for name, size in spec["models"]:
        if time.time() >= spec["stop_at"]:
            break
        key = workspace_key(name, size)
        emit({"event": "start", "key": key})
        started = time.monotonic()
        try:
            calls = {k: c for k, c in model_conv_calls(name, size, spec["batch"]).items() if k not in known}
            if spec["device"] == "cuda":
                table = measure_conv_workspaces(calls)
            else:
                rule = calibrations()["h200"].workspaces  # dry run: the fitted rule stands in for a measurement
                table = {f"{stage}:{k}": asdict(conv_workspaces(conv, stage, rule)) for k, conv in calls.items()
                         for stage in ("forward", "backward_data", "backward_filter")}
        except Exception as err:  # record it and go on with the other models
            emit(_failed(key, "workspaces", err, started))
            continue
        known.update(calls)
        line = {"key": key, "kind": "workspaces", "status": OK, "measured": table, "convolutions": len(calls),
                "seconds": round(time.monotonic() - started, 2)}
        if spec["device"] != "cuda":
            line["stand_in"] = WORKSPACE_STAND_IN
        emit(line)
    return 0


WORKERS: dict[str, Callable[[dict[str, Any]], int]] = {"bandwidth": bandwidth_worker, "workspaces": workspace_worker}


@dataclass
class WorkerOutcome:
    """How a worker ended: the keys it finished, the one it had started and not finished (it hung or crashed),
    its exit code, and why the parent stopped it (None if it ended by itself)."""

    finished: list[str]
    unfinished: str | None
    returncode: int
    stopped: str | None


def stream_worker(kind: str, spec: dict[str, Any], on_line: Callable[[dict[str, Any]], None],
                  on_text: Callable[[str], None], idle_timeout_s: float) -> WorkerOutcome:
    """Run worker ``kind`` on ``spec`` in a fresh process, passing each result line to ``on_line`` as it arrives
    and every other line of its output to ``on_text``. A worker silent for ``idle_timeout_s`` is killed (with its
    children) and the configuration it was on is reported unfinished."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_workers", kind, json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for text in proc.stdout:
            lines.put(text)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    finished: list[str] = []
    current, stopped = None, None
    while True:
        try:
            text = lines.get(timeout=idle_timeout_s)
        except queue.Empty:
            stopped = f"no output for {idle_timeout_s:g} s: stopped"
            os.killpg(proc.pid, signal.SIGKILL)
            break
        if text is None:
            break
        if not text.startswith(MARK):
            on_text(text.rstrip("\n"))
            continue
        line = json.loads(text[len(MARK):])
        if line.get("event") == "start":
            current = line["key"]
            continue
        on_line(line)
        finished.append(line["key"])
        if line["key"] == current:
            current = None
    returncode = proc.wait()
    return WorkerOutcome(finished, current, returncode, stopped)


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in WORKERS:
        sys.stderr.write(f"usage: python -m benchmarks.gpu_workers {{{','.join(WORKERS)}}} SPEC_JSON "
                         "(started by benchmarks/gpu_run.py)\n")
        return 2
    return WORKERS[argv[0]](json.loads(argv[1]))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
