"""One-shot GPU bandwidth run: kernel time per layer, achieved FLOP/s and bytes/s against the device's measured
peaks, NVML counters, and rooflines, for the chapter-7 configurations.

Run on a machine with a CUDA GPU (no project install needed, no fvcore)::

    PYTHONPATH=. python benchmarks/gpu_bandwidth.py --out reports/data

It first calibrates the device's peaks (profiler/bandwidth/peaks.py), then profiles 12 configurations — alexnet,
vgg, nin, googlenet, resnet, densenet × 96/224 at batch 128 — each for inference and for a training step, with the
protocol of ``python -m profiler bandwidth`` (profiler/bandwidth/runner.py; the profiled phase is stretched to at
least ``--min-profiled-s`` so that NVML's samples cover enough time). It writes, under ``--out``:

* ``peaks_<device>.json`` — the measured peaks beside the datasheet's, with provenance;
* ``bandwidth_<device>.json`` — provenance, peaks, and per run the object ``python -m profiler bandwidth --format
  json`` prints (per-layer times and rates, NVML summary and timeline);
* ``roofline_<device>_<model>.png`` — the model's four rooflines: inference above training, 96 left of 224.

Eight files in all (six PNGs), so the whole output fits one return of a remote runner that brings back eight. A NaN
or infinite figure is written as null and listed under ``non_finite`` (path and value), never lost with the file.

A few seconds a configuration; a few minutes in all on an H100/H200. Regenerate by running it again.
``--device cpu --batch 2 --out /tmp/x`` is a dry run of the script itself on the CPU (CPU figures; not for
committing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.common import write_json

MODELS = ("alexnet", "vgg", "nin", "googlenet", "resnet", "densenet")
SIZES = (96, 224)
BATCH = 128


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/data", help="output folder (default: reports/data)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="subset of the models (default: all six)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="input sizes (default: 96 224)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"batch size (default: {BATCH})")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default); cpu only to try the script itself")
    parser.add_argument("--steps", type=int, default=20, help="timed and profiled steps (default: 20)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps (default: 5)")
    parser.add_argument("--min-profiled-s", type=float, default=0.3,
                        help="stretch the profiled phase to at least this long, for NVML (default: 0.3)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.stderr.write("gpu_bandwidth.py needs a CUDA GPU (torch.cuda.is_available() is False)\n")
        return 2
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")

    from profiler.bandwidth.peaks import (
        device_slug,
        measure_cpu_peaks,
        measure_cuda_peaks,
        peaks_json,
    )
    from profiler.bandwidth.runner import profile_config
    from profiler.catalogue import datasheet_for
    from profiler.device import provenance as device_provenance
    from profiler.format.plots import roofline_plot
    from profiler.models import resolve

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    provenance = device_provenance(device, detailed=True)
    provenance.update(script="benchmarks/gpu_bandwidth.py",
                      command="PYTHONPATH=. python benchmarks/gpu_bandwidth.py --out " + str(args.out))
    slug = device_slug(provenance["device"])
    started = time.time()
    measure = measure_cuda_peaks if device.type == "cuda" else measure_cpu_peaks
    peaks = measure(device, provenance["device"], provenance)
    sheet = datasheet_for(provenance["device"]) if device.type == "cuda" else None
    datasheet = asdict(sheet) if sheet else None
    write_json(out / f"peaks_{slug}.json", {"peaks": peaks_json(peaks), "datasheet": datasheet,
                                         "regenerate": provenance["command"]})
    print(f"peaks of {provenance['device']}: " + ", ".join(f"{key} {value / 1e12:.3f} T/s" for key, value in
                                                        peaks_json(peaks).items() if isinstance(value, float)),
          flush=True)
    source = "measured by benchmarks/gpu_bandwidth.py at the start of this run"
    runs, errors = [], []
    for name in args.models:
        spec = resolve(name)
        results = []
        for train in (False, True):
            for size in args.sizes:
                config = {"model": spec.name, "size": size, "batch": args.batch, "train": train}
                t0 = time.time()
                try:
                    result = profile_config(spec, size, args.batch, None, None, train, args.steps, args.warmup,
                                            device, peaks, source, provenance, min_profiled_s=args.min_profiled_s)
                except Exception as err:  # record it and go on with the other configurations
                    errors.append({**config, "error": f"{type(err).__name__}: {err}",
                                   "traceback": traceback.format_exc(limit=6)})
                    print(f"{config}: FAILED {type(err).__name__}: {err}", flush=True)
                    continue
                results.append(result)
                runs.append(result.to_dict())
                slowest = max(result.layers, key=lambda r: r.ms_per_step)
                idle = f" + GPU idle {result.idle_ms:.3f} ms" if result.idle_ms is not None else ""
                print(f"{spec.name} {size} {'train' if train else 'infer'}: step {result.step_ms:.3f} ms, profiled "
                      f"{result.profiled_step_ms:.3f} ms ({result.overhead_percent:+.0f} %), rows "
                      f"{result.attributed_ms:.3f} ms{idle}; slowest {slowest.name} {100 * slowest.share:.0f} % "
                      f"({time.time() - t0:.1f} s)", flush=True)
        if results:
            roofline_plot(results, out / f"roofline_{slug}_{spec.name}.png", columns=len(args.sizes),
                          note=f"{provenance['device']}, torch {provenance['torch']}, {provenance['date'][:10]}; "
                               f"regenerate: {provenance['command']}")
    doc = {"provenance": provenance, "seconds": round(time.time() - started, 1), "peaks": peaks_json(peaks),
           "datasheet": datasheet, "runs": runs, "errors": errors}
    write_json(out / f"bandwidth_{slug}.json", doc)
    print(f"{len(runs)} runs, {len(errors)} failed, {doc['seconds']} s; wrote {out}/bandwidth_{slug}.json, "
          f"peaks_{slug}.json and roofline_{slug}_<model>.png")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
