"""Memory prediction: our predicted peak against torchinfo's estimate and torch's MemTracker (under FakeTensorMode),
each against measured peaks, with the time each tool takes per configuration.

The measurements are the committed H200 reference (``reports/data/reference_h200_batch128.json``, 6 models ×
96/224 × inference/training, batch 128) plus any ``gpu_memory_*.json`` under ``reports/data/`` written by
``benchmarks/gpu_memory.py``. Our coefficients for cuDNN workspaces were fitted to the H200 reference, so on those 24
configurations our error measures the allocator model, not an independent prediction (the section says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Section, interleaved, markdown_table, milliseconds, progress, text_table

DATA = Path(__file__).resolve().parent.parent / "reports" / "data"
REPEATS = 3


def measured_runs() -> list[dict[str, Any]]:
    """(model, size, batch, train, peak_allocated, source) of every committed measurement."""
    runs = []
    reference = json.loads((DATA / "reference_h200_batch128.json").read_text())
    for run in reference["runs"]:
        runs.append(dict(model=run["model"], size=run["size"], batch=run["batch"], train=run["train"],
                         peak=run["peak_allocated"], gpu="h200", source="reference_h200_batch128.json"))
    for path in sorted(DATA.glob("gpu_memory_*.json")):
        doc = json.loads(path.read_text())
        gpu = "h200" if "H200" in doc["provenance"]["device"].upper() else "h100"
        for run in doc["runs"]:
            cfg, measured = run["config"], run["measured"]
            plain = len(cfg) == 4  # default optimizer, dtype, no checkpointing: the peers cannot vary those
            if plain and measured.get("peak_allocated_bytes"):
                runs.append(dict(model=cfg["name"], size=cfg["size"], batch=cfg["batch"], train=cfg["train"],
                                 peak=measured["peak_allocated_bytes"], gpu=gpu, source=path.name))
    return runs


def ours(run: dict[str, Any]) -> int:
    """Our predicted peak allocated bytes."""
    from profiler.memory.runner import predict_config

    return predict_config(run["model"], run["size"], run["batch"], train=run["train"],
                          gpu=run["gpu"]).peak_allocated_bytes


def torchinfo_estimate(run: dict[str, Any]) -> int:
    """torchinfo's "Estimated Total Size": input + forward/backward pass (2 × every layer's output) + parameters.
    It has no inference mode: the same estimate stands for both."""
    from torchinfo import summary

    from profiler.models import build, resolve

    model = build(resolve(run["model"]), run["size"])
    stats = summary(model, input_size=(run["batch"], 1, run["size"], run["size"]), device="meta", verbose=0)
    return int(stats.total_input + stats.total_output_bytes + stats.total_param_bytes)


def memtracker_peak(run: dict[str, Any]) -> int:
    """torch.distributed._tools.mem_tracker.MemTracker's peak under FakeTensorMode, for the same step (two
    training steps, the peak of the second; or one forward under no_grad)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from profiler.models import build, resolve
    from profiler.models.loading import to_device

    model = to_device(build(resolve(run["model"]), run["size"]), "cpu")
    mode = FakeTensorMode()
    for module in model.modules():  # fake copies of the weights: MemTracker only needs their sizes
        for key, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[key] = torch.nn.Parameter(mode.from_tensor(p.detach()))
        for key, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[key] = mode.from_tensor(b)
    with mode:
        x = torch.randn(run["batch"], 1, run["size"], run["size"])
        y = torch.randint(0, 10, (run["batch"],))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        tracker = MemTracker()
        tracker.track_external(model, opt)
        with tracker:
            if run["train"]:
                model.train()
                for step in range(2):
                    if step == 1:
                        tracker.reset_mod_stats()
                    opt.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
            else:
                model.eval()
                with torch.no_grad():
                    model(x)
        peaks = tracker.get_tracker_snapshot("peak")
    return int(next(iter(peaks.values()))["Total"])


TOOLS: dict[str, Callable[[dict[str, Any]], int]] = {
    "profiler (ours)": ours,
    "torchinfo": torchinfo_estimate,
    "MemTracker": memtracker_peak,
}


def _error(predicted: int, measured: int) -> float:
    return 100 * (predicted - measured) / measured


def run() -> Section:
    runs = measured_runs()
    rows, errors, times = [], {t: {True: [], False: []} for t in TOOLS}, {t: [] for t in TOOLS}
    for run_ in runs:
        tag = f"{run_['model']}@{run_['size']} b{run_['batch']} {'train' if run_['train'] else 'inference'}"
        progress(f"memory: {tag}")
        timings = interleaved({name: (lambda f=f, r=run_: f(r)) for name, f in TOOLS.items()}, REPEATS)
        row = [tag, run_["gpu"].upper(), f"{run_['peak'] / 2**20:,.1f}"]
        for name, timing in timings.items():
            err = _error(timing.result, run_["peak"])
            errors[name][run_["train"]].append(err)
            times[name].append(timing.median_s)
            row.append(f"{err:+.1f} %")
        for name in TOOLS:
            row.append(milliseconds(times[name][-1]))
        rows.append(row)
    headers = ["configuration", "GPU", "measured peak (MiB)", *(f"{t}: error" for t in TOOLS),
               *(f"{t}: ms" for t in TOOLS)]
    summary_rows = []
    for name in TOOLS:
        for train, label in ((True, "training"), (False, "inference")):
            values = [abs(e) for e in errors[name][train]]
            if values:
                summary_rows.append([name, label, len(values), f"{sum(values) / len(values):.1f} %",
                                     f"{max(values):.1f} %",
                                     f"{sum(v <= 3 for v in values)}/{len(values)}"])
        med = sorted(times[name])[len(times[name]) // 2]
        summary_rows.append([name, "time per configuration (median)", len(times[name]), milliseconds(med) + " ms",
                             "", ""])
    summary_headers = ["tool", "configurations", "n", "mean |error|", "max |error|", "within 3 %"]
    body = "\n".join([
        "Peak allocated memory predicted by each tool against `torch.cuda.max_memory_allocated` measured with the "
        "reference protocol (sources: " + ", ".join(sorted({r["source"] for r in runs})) + "). Ours: "
        "`profiler.memory.runner.predict_config` for the GPU measured. torchinfo: `summary(...)`'s \"Estimated "
        "Total Size\" on meta tensors (it has no inference mode). MemTracker: torch's "
        "`torch.distributed._tools.mem_tracker.MemTracker` under `FakeTensorMode`, same steps as the protocol. "
        f"Times: median of {REPEATS} interleaved runs, including building the model.",
        "",
        "**Caveat:** our cuDNN workspace coefficients were fitted to the H200 reference (see "
        "`profiler/memory/calibration.json`), so on those 24 configurations our error measures the allocator model "
        "and the fit, not an independent prediction. GPU runs of `benchmarks/gpu_memory.py` add configurations the "
        "fit never saw.",
        "",
        markdown_table(summary_headers, summary_rows),
        "",
        "### Per configuration",
        "",
        markdown_table(headers, rows),
    ])
    return Section(title="Memory prediction: ours against torchinfo and MemTracker, each against measurements",
                   body=body, summary=text_table(summary_headers, summary_rows))
