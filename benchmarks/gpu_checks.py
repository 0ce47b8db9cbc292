"""What a GPU run must show before its JSON is committed (issue 10), as functions of the JSON it writes, so that the
run's own summary, ``tests/test_gpu_results.py`` (on a run's folder or on ``reports/data/``) and the CUDA tests apply
the same rules. Each function returns the problems it found, in words; an empty list means the data passes.

* **memory** (:func:`memory_mismatches`): our measured peak allocated equals the plain-PyTorch reference
  (``reports/data/reference_h200_batch128.json``) to the byte for its 24 configurations — when torch, CUDA and cuDNN
  are the reference's (:func:`version_mismatch`); the caching allocator is deterministic, so any byte of difference
  is a difference in protocol.
* **bandwidth** (:func:`bandwidth_problems`), per configuration: at least 95 % of GPU busy time attributed to a
  layer; the rows plus ``(other)`` equal to the busy time within 5 %; no layer above 105 % of the measured roof it
  runs on (its compute roof, FP32 or TF32; the copy bandwidth for layers whose counted bytes exceed twice the L2
  cache); the profiler's overhead (profiled against unprofiled step, same run) at most 5 %.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from profiler.kinds import OTHER_ROW

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_FILE = ROOT / "reports" / "data" / "reference_h200_batch128.json"

#: Share of GPU busy time that must be attributed to a layer (``(other)`` excluded).
MIN_ATTRIBUTED_SHARE = 0.95
#: How far the rows (``(other)`` included) may be from the busy time, as a fraction of it.
BUSY_SUM_TOLERANCE = 0.05
#: How far above a measured roof a layer may appear (timer resolution, peaks measured on one shape).
ROOF_TOLERANCE = 0.05
#: The most the profiler (layer ranges, torch.profiler, NVML sampling) may slow a step, in percent.
MAX_OVERHEAD_PERCENT = 5.0
#: Layers shorter than this per step are not judged against a roof: their time is within the timer's resolution.
MIN_JUDGED_MS = 1e-3
#: The provenance fields that decide which kernels, workspaces and allocations a run gets.
VERSION_FIELDS = ("torch", "cuda", "cudnn")


def load_reference(path: Path = REFERENCE_FILE) -> dict[str, Any]:
    """The committed plain-PyTorch reference measurement."""
    return json.loads(path.read_text())


def version_mismatch(provenance: dict[str, Any], reference: dict[str, Any]) -> str | None:
    """Why a run's peaks need not equal the reference's to the byte (another torch, CUDA or cuDNN), or None when
    the versions are the reference's. cuDNN versions compare as text (the reference has 91900, runs "91900")."""
    ref = reference["provenance"]
    differ = [f"{key} {provenance.get(key)} (reference {ref.get(key)})" for key in VERSION_FIELDS
              if str(provenance.get(key)) != str(ref.get(key))]
    return f"not the reference's versions: {', '.join(differ)}" if differ else None


def reference_config(run: dict[str, Any]) -> dict[str, Any]:
    """The measurement config of one reference run, as ``benchmarks/gpu_memory.configs`` writes it."""
    return {"name": run["model"], "size": run["size"], "batch": run["batch"], "train": run["train"]}


def memory_mismatches(runs: list[dict[str, Any]], reference: dict[str, Any]) -> list[str]:
    """Every reference configuration whose measured peak allocated is not the reference's to the byte, or that was
    not measured. ``runs`` are the entries of a ``gpu_memory_<gpu>.json`` (``config`` and ``measured``)."""
    measured = {json.dumps(r["config"], sort_keys=True): r["measured"] for r in runs}
    problems = []
    for ref in reference["runs"]:
        config = reference_config(ref)
        label = f"{ref['model']} {ref['size']} {'training' if ref['train'] else 'inference'} batch {ref['batch']}"
        got = measured.get(json.dumps(config, sort_keys=True))
        if got is None or got.get("error"):
            problems.append(f"{label}: not measured ({got.get('error') if got else 'missing'})")
        elif got["peak_allocated_bytes"] != ref["peak_allocated"]:
            difference = got["peak_allocated_bytes"] - ref["peak_allocated"]
            problems.append(f"{label}: peak allocated {got['peak_allocated_bytes']:,} B, reference "
                            f"{ref['peak_allocated']:,} B ({difference:+,} B)")
    return problems


def compute_roofs(peaks: dict[str, Any]) -> dict[str, float]:
    """The measured compute roofs by name: "fp32" (matmul, TF32 off) and "tf32" (the faster of the TF32 matmul and
    the cuDNN convolution, as :class:`~profiler.bandwidth.records.DevicePeaks` defines it)."""
    tensor_core = [v for v in (peaks.get("tf32_flops_per_s"), peaks.get("conv_flops_per_s")) if v is not None]
    roofs = {"fp32": peaks["fp32_flops_per_s"]}
    if tensor_core:
        roofs["tf32"] = max(tensor_core)
    return roofs


def bandwidth_problems(run: dict[str, Any], peaks: dict[str, Any]) -> list[str]:
    """What in one GPU bandwidth result (a ``--format json`` object) misses the checks of the module docstring,
    against the measured ``peaks``."""
    problems = []
    roofs = compute_roofs(peaks)
    l2_bytes = run["provenance"].get("l2_cache_bytes") or 0
    for layer in run["layers"]:
        if layer["ms_per_step"] < MIN_JUDGED_MS or layer["flops_per_s"] is None:
            continue
        roof = roofs.get(layer["compute_roof"]) if layer["flops"] else None
        if roof is not None and layer["flops_per_s"] > roof * (1 + ROOF_TOLERANCE):
            problems.append(f"{layer['name']}: {layer['flops_per_s']:.3g} FLOP/s, above the measured "
                            f"{layer['compute_roof']} roof {roof:.3g}")
        if (layer["bytes"] or 0) > 2 * l2_bytes and layer["bytes_per_s"] is not None \
                and layer["bytes_per_s"] > peaks["copy_bytes_per_s"] * (1 + ROOF_TOLERANCE):
            problems.append(f"{layer['name']}: {layer['bytes_per_s']:.3g} B/s, above the measured copy bandwidth "
                            f"{peaks['copy_bytes_per_s']:.3g}")
    busy_ms = run.get("busy_ms")
    if not busy_ms:
        problems.append("no GPU busy time recorded (busy_ms): not a GPU result, or no kernel ran")
    else:
        other_ms = sum(layer["ms_per_step"] for layer in run["layers"] if layer["name"] == OTHER_ROW)
        share = (run["attributed_ms"] - other_ms) / busy_ms
        if share < MIN_ATTRIBUTED_SHARE:
            problems.append(f"{100 * share:.1f} % of GPU busy time attributed to a layer (at least "
                            f"{100 * MIN_ATTRIBUTED_SHARE:.0f} %): (other) holds {other_ms:.3f} of {busy_ms:.3f} ms")
        if abs(run["attributed_ms"] - busy_ms) > BUSY_SUM_TOLERANCE * busy_ms:
            problems.append(f"rows + (other) = {run['attributed_ms']:.3f} ms per step, GPU busy {busy_ms:.3f} ms: "
                            f"more than {100 * BUSY_SUM_TOLERANCE:.0f} % apart")
    if run["overhead_percent"] > MAX_OVERHEAD_PERCENT:
        problems.append(f"profiler overhead {run['overhead_percent']:.1f} % (at most {MAX_OVERHEAD_PERCENT:.0f} %)")
    return problems
