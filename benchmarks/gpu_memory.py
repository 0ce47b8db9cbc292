"""One-shot GPU memory run: measure, predict, compare — and measure cuDNN workspaces per convolution.

Run on a machine with a CUDA GPU (no project install needed, no fvcore)::

    PYTHONPATH=. python benchmarks/gpu_memory.py --out reports/data

It writes, under ``--out``:

* ``gpu_memory_<gpu>.json`` — every configuration measured with the reference protocol, each in a fresh process
  (``python -m profiler.memory.measure``), beside the prediction for the same GPU and the error; with provenance.
  Configurations: the 24 of the reference (6 models × 96/224 × inference/training, batch 128), other batch sizes
  (32, 256), the other optimizers (SGD with momentum, Adam), bf16, checkpointing, and the chapter's variants.
* ``conv_workspaces_<gpu>.json`` — for every distinct convolution of those models at batch 128, the cuDNN workspace
  of each stage (forward, backward data, backward filter) on the first call (``probe``) and on a later call
  (``run``), in the format of the ``measured`` table of ``profiler/memory/calibration.json`` (under the card's
  ``cudnn_workspaces``). Merge it there to replace the fitted rule for those convolutions
  (``python -m profiler.memory.calibration merge reports/data/conv_workspaces_<gpu>.json``); a probe larger than the
  run is then allocated on the first call of the shape.

``benchmarks/gpu_run.sh`` runs all of this (and the bandwidth runs) in parallel fresh processes, resumably, in one
command; this script is the same measurement one configuration after the other.

About 6 s a configuration; the whole run takes a few minutes on an H100/H200.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import write_json
from profiler.catalogue import gpu_for_device
from profiler.errors import ProfilerError
from profiler.memory.runner import predict_config
from profiler.memory.trace import ConvCall, trace_step
from profiler.models import build, resolve
from profiler.models.zoo import CHAPTER7
from profiler.step import StepConfig

BATCH = 128
#: Seconds after which one configuration's fresh process is stopped (they take 5-8 s on an H100/H200).
MEASURE_TIMEOUT_S = 120.0


def configs() -> list[dict[str, Any]]:
    """Every configuration the run measures (keyword arguments of ``measure_cuda``)."""
    out = [dict(name=m, size=s, batch=BATCH, train=t) for m in CHAPTER7 for s in (96, 224) for t in (False, True)]
    out += [dict(name=m, size=224, batch=b, train=True) for m in ("alexnet", "resnet", "densenet") for b in (32, 256)]
    out += [dict(name=m, size=224, batch=BATCH, train=True, optimizer=o)
            for m in ("vgg", "resnet") for o in ("sgd-momentum", "adam")]
    out += [dict(name=m, size=224, batch=BATCH, train=True, dtype="bfloat16") for m in ("resnet", "densenet")]
    out += [dict(name="densenet", size=s, batch=BATCH, train=True, checkpoint=True) for s in (96, 224)]
    out += [dict(name=m, size=224, batch=BATCH, train=t) for m in ("vgg16", "resnet34", "resnet50", "densenet121")
            for t in (False, True)]
    return out


def conv_calls(run_configs: list[dict[str, Any]]) -> dict[str, ConvCall]:
    """The distinct convolutions (by calibration key, forward shapes) of the batch-128 fp32 configurations."""
    calls: dict[str, ConvCall] = {}
    for cfg in run_configs:
        if cfg["batch"] == BATCH and cfg.get("dtype", "float32") == "float32":
            for key, conv in model_conv_calls(cfg["name"], cfg["size"], BATCH).items():
                calls.setdefault(key, conv)
    return calls


def model_conv_calls(name: str, size: int, batch: int) -> dict[str, ConvCall]:
    """The distinct convolutions of one model's fp32 forward at ``batch`` (traced on meta), by calibration key."""
    spec = resolve(name)
    trace = trace_step(build(spec, size), spec.input_shape(batch, size), StepConfig.make())
    calls: dict[str, ConvCall] = {}
    for event in trace.events:
        if event.kind == "conv":
            calls.setdefault(event.conv.key(), event.conv)
    return calls


def measure_conv_workspaces(calls: dict[str, ConvCall]) -> dict[str, dict[str, int]]:
    """cuDNN workspace bytes per stage and convolution: the peak allocated during the call minus what stays
    allocated (its output), on the first call (``probe``) and on the second (``run``)."""
    torch.backends.cudnn.benchmark = False
    table: dict[str, dict[str, int]] = {}
    for key, conv in calls.items():
        for stage, (probe, run) in _stage_workspaces(conv).items():
            table[f"{stage}:{key}"] = {"probe": probe, "run": run}
    return table


def _stage_workspaces(conv: ConvCall) -> dict[str, tuple[int, int]]:
    device = torch.device("cuda")
    x = torch.randn(conv.input_shape, device=device)
    w = torch.randn(conv.weight_shape, device=device)
    grad = torch.randn(conv.output_shape, device=device)
    args = (list(conv.stride), list(conv.padding), list(conv.dilation), False, [0] * len(conv.stride), conv.groups)
    calls = {
        "forward": lambda: torch.ops.aten.convolution(x, w, None, *args),
        "backward_data": lambda: torch.ops.aten.convolution_backward(grad, x, w, None, *args,
                                                                     [True, False, False])[0],
        "backward_filter": lambda: torch.ops.aten.convolution_backward(grad, x, w, None, *args,
                                                                       [False, True, False])[1],
    }
    out = {}
    for stage, call in calls.items():
        extra = []
        for _ in range(2):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            result = call()
            torch.cuda.synchronize()
            kept = torch.cuda.memory_allocated() - before
            extra.append(torch.cuda.max_memory_allocated() - before - kept)
            del result
        out[stage] = (extra[0], extra[1])
    return out


def compare(measured: dict[str, Any], predicted: dict[str, Any]) -> dict[str, Any]:
    """Relative error of the prediction, in percent of the measurement (None where the run ran out of memory)."""
    if measured.get("out_of_memory") or not measured["peak_allocated_bytes"]:
        return {"allocated_error_percent": None, "reserved_error_percent": None}
    return {key: round(100 * (predicted[field] - measured[field]) / measured[field], 3)
            for key, field in (("allocated_error_percent", "peak_allocated_bytes"),
                               ("reserved_error_percent", "peak_reserved_bytes"))}


def provenance() -> dict[str, Any]:
    """Device, driver, versions and date of this run."""
    from profiler.device import provenance as device_provenance

    info = device_provenance(torch.device("cuda"))
    info.update(total_memory=torch.cuda.get_device_properties(0).total_memory,
                script="benchmarks/gpu_memory.py", protocol="see profiler/memory/measure.py")
    return info


def gpu_key(device_name: str) -> str:
    """The catalogue key of this card (``profiler.catalogue.gpu_for_device``: "h200" for an H200), the --gpu that
    predictions for it use; a user error for a card the catalogue lacks (nothing to predict for)."""
    spec = gpu_for_device(device_name)
    if spec is None:
        raise ProfilerError(f"{device_name} is not in the GPU catalogue (profiler/catalogue.py): add it there first, "
                            "so that predictions for it can be compared with the measurements")
    return spec.key


def error_summary(runs: list[dict[str, Any]]) -> str:
    """One line on the prediction errors of ``runs`` (entries with ``allocated_error_percent``): largest and mean
    absolute error in percent of the measurement, and how many runs have none (failed or out of memory)."""
    errors = [abs(r["allocated_error_percent"]) for r in runs if r["allocated_error_percent"] is not None]
    missing = len(runs) - len(errors)
    failed = f"; {missing} without a measurement (failed or out of memory)" if missing else ""
    if not errors:
        return f"{len(runs)} configurations; no prediction error: no measurement succeeded{failed}"
    return (f"{len(runs)} configurations; prediction error max {max(errors):.2f} %, mean "
            f"{sum(errors) / len(errors):.2f} %{failed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/data", help="output folder (default: reports/data)")
    parser.add_argument("--skip-workspaces", action="store_true", help="skip the per-convolution workspace table")
    parser.add_argument("--timeout-s", type=float, default=MEASURE_TIMEOUT_S,
                        help=f"stop a measurement that has not finished after this long and go on (default: "
                             f"{MEASURE_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.stderr.write("gpu_memory.py needs a CUDA GPU\n")
        return 2
    from profiler.memory.measure import measure_in_subprocess

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        key = gpu_key(torch.cuda.get_device_name())
    except ProfilerError as err:
        sys.stderr.write(f"gpu_memory.py: {err}\n")
        return 2
    runs = []
    started = time.time()
    for cfg in configs():
        predicted = asdict(predict_config(**cfg, gpu=key))
        try:
            measured = asdict(measure_in_subprocess(cfg, timeout_s=args.timeout_s))
        except ProfilerError as err:
            measured = {"out_of_memory": err.exit_code == 3, "error": str(err), "peak_allocated_bytes": 0}
        entry = {"config": cfg, "measured": measured,
                 "predicted": {k: predicted[k] for k in ("peak_allocated_bytes", "peak_reserved_bytes",
                                                         "breakdown", "phases")}}
        entry.update(compare(measured, entry["predicted"]))
        runs.append(entry)
        print(f"{cfg}: measured {measured['peak_allocated_bytes']:,} predicted "
              f"{predicted['peak_allocated_bytes']:,} error {entry['allocated_error_percent']} %", flush=True)
    doc = {"provenance": provenance(), "seconds": round(time.time() - started, 1), "runs": runs}
    write_json(out / f"gpu_memory_{key}.json", doc)
    if not args.skip_workspaces:
        table = measure_conv_workspaces(conv_calls(configs()))
        write_json(out / f"conv_workspaces_{key}.json", {"provenance": provenance(), "measured": table})
    print(error_summary(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
