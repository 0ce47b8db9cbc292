"""Issue 10's checks on the files a GPU run assembled: those in ``$PROFILER_GPU_RESULTS`` (``benchmarks/gpu_run.py``
points it at its ``--out`` at the end of a run) or, without it, those committed under ``reports/data/``. Each test
skips, saying why, where there is no such file. A dry run's files are named ``dry-run_...`` and never match; a file
that says ``"dry_run": true`` under a GPU name fails.

The rules themselves are ``benchmarks/gpu_checks.py``'s, pinned on synthetic results in tests/test_bandwidth.py and
tests/test_gpu_run.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.gpu_checks import bandwidth_problems, load_reference, memory_mismatches, version_mismatch
from profiler.models.zoo import CHAPTER7
from profiler.site.measured_gpu import load_gpu_bandwidth, load_gpu_memory
from profiler.step import StepConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("PROFILER_GPU_RESULTS") or ROOT / "reports" / "data")
RUN_IT = ("run `PYTHONPATH=. bash benchmarks/gpu_run.sh --out /tmp/gpu-run` on an H100/H200 and commit its "
          "{name}, or point PROFILER_GPU_RESULTS at a run's folder")
#: The configurations of every GPU bandwidth file: issue 10's 24 (6 models × 96/224 × inference/training).
BANDWIDTH_CONFIGS = {(m, s, mode) for m in CHAPTER7 for s in (96, 224) for mode in ("inference", "train")}
PROVENANCE_FIELDS = ("device", "driver", "torch", "cuda", "cudnn", "date")


def _docs(pattern: str) -> list[tuple[str, dict]]:
    paths = sorted(RESULTS.glob(pattern))
    if not paths:
        pytest.skip(f"no {pattern} in {RESULTS}: " + RUN_IT.format(name=pattern.replace("*", "<gpu>")))
    docs = [(path.name, json.loads(path.read_text())) for path in paths]
    assert [name for name, doc in docs if doc.get("dry_run") is not False] == [], "a dry run's file under a GPU name"
    return docs


def test_gpu_memory_files_hold_40_measured_configurations_with_provenance():
    for name, doc in _docs("gpu_memory_*.json"):
        assert all(doc["provenance"].get(key) for key in PROVENANCE_FIELDS), name
        assert len(doc["runs"]) >= 40, f"{name}: {len(doc['runs'])} configurations; failed: {doc['failed']}"
        assert {run["measured"]["source"] for run in doc["runs"]} == {"measured"}
        assert {run["measured"]["device"] for run in doc["runs"]} == {doc["provenance"]["device"]}
    assert load_gpu_memory(RESULTS)  # the reports can read them


def test_gpu_memory_equals_the_plain_pytorch_reference_to_the_byte():
    reference = load_reference()
    for name, doc in _docs("gpu_memory_*.json"):
        why_not = version_mismatch(doc["provenance"], reference)
        if why_not:
            pytest.skip(f"{name}: {why_not}; the allocator's peaks are only comparable to the byte on the "
                        "reference's torch, CUDA and cuDNN")
        assert memory_mismatches(doc["runs"], reference) == [], name


def test_gpu_bandwidth_files_hold_the_24_configurations_with_peaks_and_nvml():
    for name, doc in _docs("gpu_bandwidth_*.json"):
        assert all(doc["provenance"].get(key) for key in PROVENANCE_FIELDS), name
        assert doc["peaks"]["kind"] == "cuda" and doc["datasheet"] is not None, name
        runs = {(run["model"], run["input_shape"][-1], run["mode"]): run for run in doc["runs"]}
        assert set(runs) == BANDWIDTH_CONFIGS, f"{name}: missing {BANDWIDTH_CONFIGS - set(runs)}"
        assert {run["input_shape"][0] for run in runs.values()} == {128}
        for key, run in runs.items():
            nvml = run["nvml"]
            assert nvml["timeline"] if nvml["available"] else nvml["reason"], (name, key)
    assert load_gpu_bandwidth(RESULTS)


def test_gpu_bandwidth_runs_are_attributed_add_up_and_stay_under_their_roofs():
    problems = {}
    for name, doc in _docs("gpu_bandwidth_*.json"):
        for run in doc["runs"]:
            found = bandwidth_problems(run, doc["peaks"])
            if found:
                problems[f"{name}: {run['model']} {run['input_shape']} {run['mode']}"] = found
    assert problems == {}


def test_conv_workspace_tables_merge_into_the_calibration_and_the_predictor_uses_them(tmp_path: Path):
    from profiler.memory.calibration import CALIBRATION_FILE, merge_measured_workspaces
    from profiler.memory.predict import conv_workspaces
    from profiler.memory.trace import trace_step
    from profiler.models import build, resolve

    trace = trace_step(build(resolve("resnet"), 96), (128, 1, 96, 96), StepConfig.make())
    first_conv = next(event.conv for event in trace.events if event.kind == "conv")
    for name, doc in _docs("conv_workspaces_*.json"):
        calibration = tmp_path / "calibration.json"
        shutil.copy(CALIBRATION_FILE, calibration)
        merged = merge_measured_workspaces(doc, f"reports/data/{name}", calibration)["cudnn_workspaces"]
        measured = doc["measured"][f"forward:{first_conv.key()}"]  # ResNet-18's stem at batch 128
        used = conv_workspaces(first_conv, "forward", merged)
        assert (used.probe, used.run) == (measured["probe"], measured["run"]), name
