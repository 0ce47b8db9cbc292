"""The GPU run rehearsed on the CPU: the scripts' writers and summaries, the one prepared entry point
(``benchmarks/gpu_run.py``: its result store, resume, scheduling and a whole ``--dry-run``), and the checks a GPU
run must pass, exercised on synthetic results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.common import write_json
from benchmarks.gpu_memory import error_summary, gpu_key
from profiler.errors import ProfilerError

ROOT = Path(__file__).resolve().parents[1]


# --- the scripts' writers and summaries ------------------------------------------------------------------------------

def test_a_nan_is_written_as_null_and_listed_with_its_path(tmp_path: Path):
    path = tmp_path / "doc.json"
    write_json(path, {"peaks": {"copy_bytes_per_s": math.nan}, "runs": [{"ms": 1.5}, {"ms": math.inf}]})
    assert json.loads(path.read_text()) == {
        "peaks": {"copy_bytes_per_s": None}, "runs": [{"ms": 1.5}, {"ms": None}],
        "non_finite": {"peaks.copy_bytes_per_s": "nan", "runs[1].ms": "inf"}}


def test_a_finite_document_is_written_as_it_is(tmp_path: Path):
    path = tmp_path / "doc.json"
    write_json(path, {"runs": [{"ms": 1.5, "name": "a"}]})
    assert json.loads(path.read_text()) == {"runs": [{"ms": 1.5, "name": "a"}]}


def test_error_summary_survives_a_run_where_every_measurement_failed():
    failed = [{"allocated_error_percent": None}] * 3
    assert error_summary(failed) == ("3 configurations; no prediction error: no measurement succeeded; 3 without "
                                     "a measurement (failed or out of memory)")
    assert error_summary([{"allocated_error_percent": -2.0}, {"allocated_error_percent": 1.0}]) == (
        "2 configurations; prediction error max 2.00 %, mean 1.50 %")


def test_the_memory_script_names_its_files_by_catalogue_key():
    assert gpu_key("NVIDIA H200") == "h200" and gpu_key("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_key("NVIDIA H100 NVL") == "h100-nvl"
    with pytest.raises(ProfilerError, match="not in the GPU catalogue"):
        gpu_key("NVIDIA GeForce GTX 1080")
