"""The GPU run rehearsed on the CPU: the scripts' writers and summaries, the one prepared entry point
(``benchmarks/gpu_run.py``: its result store, resume, scheduling and a whole ``--dry-run``), and the checks a GPU
run must pass, exercised on synthetic results."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_run, gpu_workers
from benchmarks.common import write_json
from benchmarks.gpu_checks import load_reference, memory_mismatches, reference_config, version_mismatch
from benchmarks.gpu_memory import error_summary, gpu_key
from benchmarks.gpu_results import (
    RESULTS_FILE,
    ResultStore,
    bandwidth_doc,
    bandwidth_key,
    memory_doc,
    memory_key,
    output_names,
    workspace_doc,
    workspace_key,
)
from benchmarks.gpu_run import PoolJob, Session, dry_run_plan
from profiler.device import provenance
from profiler.errors import ProfilerError
from profiler.memory.calibration import merge_measured_workspaces
from profiler.memory.trace import trace_step
from profiler.models import build, resolve
from profiler.site.measured_gpu import load_gpu_bandwidth, load_gpu_memory
from profiler.step import StepConfig

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


# --- the result store --------------------------------------------------------------------------------------------

def test_the_store_keeps_every_line_and_a_reread_sees_the_last_of_each_key(tmp_path: Path):
    path = tmp_path / "results.jsonl"
    store = ResultStore(path)
    store.append({"kind": "session", "session": "s1", "device": "NVIDIA H200"})
    store.append({"key": "memory:a", "kind": "memory", "status": "failed", "error": "hung"})
    store.append({"key": "memory:b", "kind": "memory", "status": "ok"})
    store.append({"key": "memory:a", "kind": "memory", "status": "ok"})
    with path.open("a") as handle:
        handle.write('{"key": "memory:c", "kind": "mem')  # an interruption in the middle of a line
    again = ResultStore(path)
    assert again.ok("memory:a") and again.ok("memory:b") and not again.ok("memory:c")
    assert again.damaged_lines == 1 and [s["session"] for s in again.sessions] == ["s1"]
    assert len(path.read_text().splitlines()) == 5


def test_keys_name_every_argument_of_a_configuration():
    assert memory_key(dict(train=True, name="vgg", size=224, batch=128, optimizer="adam")) == (
        "memory:batch=128,name=vgg,optimizer=adam,size=224,train=True")
    assert bandwidth_key("nin", 96, 128, False) == "bandwidth:nin:96:b128:inference"


# --- issue 10's memory checks on synthetic data -----------------------------------------------------------------

def _reference_entries() -> list[dict]:
    """The reference's own peaks as the entries of a gpu_memory file: what a correct run measures."""
    return [{"config": reference_config(run), "measured": {"peak_allocated_bytes": run["peak_allocated"]}}
            for run in load_reference()["runs"]]


def test_the_reference_itself_passes_and_one_byte_off_is_named():
    reference = load_reference()
    entries = _reference_entries()
    assert memory_mismatches(entries, reference) == []
    entries[3]["measured"]["peak_allocated_bytes"] += 512
    entries[5]["measured"] = {"error": "ran out of GPU memory", "peak_allocated_bytes": 0}
    del entries[7]
    ref = reference["runs"]
    assert memory_mismatches(entries, reference) == [
        f"{ref[3]['model']} {ref[3]['size']} {'training' if ref[3]['train'] else 'inference'} batch 128: peak "
        f"allocated {ref[3]['peak_allocated'] + 512:,} B, reference {ref[3]['peak_allocated']:,} B (+512 B)",
        f"{ref[5]['model']} {ref[5]['size']} {'training' if ref[5]['train'] else 'inference'} batch 128: not "
        "measured (ran out of GPU memory)",
        f"{ref[7]['model']} {ref[7]['size']} {'training' if ref[7]['train'] else 'inference'} batch 128: not "
        "measured (missing)"]


def test_peaks_are_compared_to_the_byte_only_on_the_reference_versions():
    reference = load_reference()
    same = {"torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": "91900"}
    assert version_mismatch(same, reference) is None
    assert version_mismatch(dict(same, torch="2.12.0+cu130", cudnn=92000), reference) == (
        "not the reference's versions: torch 2.12.0+cu130 (reference 2.11.0+cu130), cudnn 92000 (reference 91900)")


# --- scheduling: the memory pool and the workers -----------------------------------------------------------------

def _session(tmp_path: Path, capacity_bytes: int = 10, budget_s: float = 600.0) -> Session:
    args = argparse.Namespace(dry_run=True, jobs=3, timeout_s=5.0, budget_s=budget_s, pack=None)
    return Session(args, dry_run_plan(), tmp_path, ResultStore(tmp_path / "results.jsonl"),
                   {"date": "session-1", "device": "CPU"}, "cpu", capacity_bytes, time.monotonic() + budget_s)


def test_the_pool_keeps_the_reserved_memory_of_concurrent_jobs_under_the_capacity(tmp_path: Path):
    session = _session(tmp_path, capacity_bytes=10)
    lock, held, peaks, ran = threading.Lock(), [0], [], []

    def job(label: str, reserve: int) -> PoolJob:
        def work() -> None:
            with lock:
                held[0] += reserve
                peaks.append(held[0])
            time.sleep(0.05)  # overlap with whatever else may run now
            with lock:
                held[0] -= reserve
                ran.append(label)
        return PoolJob(label, lambda: reserve, work)

    session.run_pool([job("a", 6), job("b", 6), job("c", 3), job("d", 1), job("huge", 25), job("e", 2)], max_jobs=3)
    assert sorted(ran) == ["a", "b", "c", "d", "e", "huge"]
    assert max(peaks) <= 25 and max(p for p in peaks if p != 25) <= 10  # the oversize job ran alone
    assert ran.index("a") < ran.index("huge")  # it waited for the room to empty


def test_no_job_starts_once_the_budget_is_spent(tmp_path: Path):
    session = _session(tmp_path, budget_s=1e-9)
    time.sleep(0.01)
    ran = []
    session.run_pool([PoolJob(x, lambda: 1, lambda x=x: ran.append(x)) for x in "ab"], max_jobs=2)
    assert ran == [] and session.skipped == ["a", "b"]


def test_a_worker_that_hangs_is_recorded_and_relaunched_for_the_rest(tmp_path: Path, monkeypatch):
    session = _session(tmp_path)
    launches = []

    def done(key: str) -> dict:
        return {"key": key, "kind": "workspaces", "status": "ok", "measured": {}, "convolutions": 0, "seconds": 0.1}

    def fake_worker(kind, spec, on_line, on_text, idle_timeout_s):
        launches.append(list(spec["keys"]))
        first, *rest = spec["keys"]
        if len(launches) == 1:  # finishes the first, hangs on the second
            on_line(done(first))
            return gpu_workers.WorkerOutcome([first], rest[0], -9, "no output for 180 s: stopped")
        for key in spec["keys"]:
            on_line(done(key))
        return gpu_workers.WorkerOutcome(list(spec["keys"]), None, 0, None)

    monkeypatch.setattr(gpu_run, "stream_worker", fake_worker)
    session.run_worker("workspaces", ["k1", "k2", "k3", "k4"], lambda pending: {"keys": pending})
    assert launches == [["k1", "k2", "k3", "k4"], ["k3", "k4"]]
    assert [session.store.ok(k) for k in ("k1", "k2", "k3", "k4")] == [True, False, True, True]
    assert session.store.get("k2")["error"] == "no output for 180 s: stopped"


def test_a_worker_that_produces_nothing_fails_its_configurations_once_with_why(tmp_path: Path, monkeypatch):
    session = _session(tmp_path)
    session.record({"key": "peaks", "kind": "peaks", "status": "failed", "error": "RuntimeError: CUPTI missing"})
    calls = []

    def fake_worker(kind, spec, on_line, on_text, idle_timeout_s):
        calls.append(spec)
        return gpu_workers.WorkerOutcome([], None, 1, None)

    monkeypatch.setattr(gpu_run, "stream_worker", fake_worker)
    session.run_worker("bandwidth", ["k1", "k2"], lambda pending: {"keys": pending})
    assert len(calls) == 1
    assert [session.store.get(k)["error"] for k in ("k1", "k2")] == ["no peaks: RuntimeError: CUPTI missing"] * 2


def test_a_configuration_that_cannot_be_predicted_or_measured_is_recorded_and_the_run_goes_on(tmp_path: Path,
                                                                                              monkeypatch):
    from profiler.memory import measure, runner

    real_predict = runner.predict_config

    def predict(**config):
        if config["train"]:
            raise RuntimeError("trace failed")
        return real_predict(**config)

    def measure_child(config, timeout_s):
        if config["train"]:
            raise ProfilerError(f"the measurement of lenet did not finish within {timeout_s:g} s and was stopped")
        return real_predict(config["name"], config["size"], config["batch"])  # stands in for the child's result

    monkeypatch.setattr(runner, "predict_config", predict)
    monkeypatch.setattr(measure, "measure_in_subprocess", measure_child)
    session = _session(tmp_path, capacity_bytes=1 << 40)
    configs = [dict(name="lenet", size=28, batch=2, train=True), dict(name="lenet", size=28, batch=2, train=False)]
    session.run_pool([session.memory_job(c) for c in configs], max_jobs=2)
    failed, done = (session.store.get(memory_key(c)) for c in configs)
    assert failed["status"] == "failed" and failed["prediction_error"] == "RuntimeError: trace failed"
    assert failed["error"] == "the measurement of lenet did not finish within 5 s and was stopped"
    assert failed["predicted"] is None and failed["measured"]["peak_allocated_bytes"] == 0
    assert done["status"] == "ok" and done["allocated_error_percent"] == 0.0  # measured = predicted here


# --- setting up a run --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--out", "--pack"])
def test_a_run_never_writes_under_reports(flag: str, capsys: pytest.CaptureFixture[str]):
    argv = ["--dry-run", "--out", "/tmp/somewhere", flag, str(ROOT / "reports" / "data")]
    with pytest.raises(SystemExit) as exit_:
        gpu_run.parse_args(argv)
    assert exit_.value.code == 2 and "is inside reports/" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_the_gpu_run_without_a_gpu_says_to_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert gpu_run.main(["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a CUDA GPU" in err and "--dry-run" in err
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_a_run_needs_resume_and_the_same_device(tmp_path: Path):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append({"kind": "session", "session": "s1", "device": "NVIDIA H100 80GB HBM3", "dry_run": False})
    args = argparse.Namespace(out=tmp_path, resume=False, dry_run=False)
    with pytest.raises(ProfilerError, match="already holds a run"):
        gpu_run.open_store(args, {"device": "NVIDIA H100 80GB HBM3"})
    args.resume = True
    assert gpu_run.open_store(args, {"device": "NVIDIA H100 80GB HBM3"}).sessions
    with pytest.raises(ProfilerError, match="holds results of NVIDIA H100 80GB HBM3"):
        gpu_run.open_store(args, {"device": "NVIDIA H200"})


# --- a complete synthetic GPU run: the assembled files, the result tests and the reports' readers ------------------

H200 = {"device": "NVIDIA H200", "driver": "580.95.05", "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": "91900",
        "date": "2026-12-01T10:00:00+00:00", "total_memory": 150_109_880_320, "l2_cache_bytes": 62_914_560}
#: Peaks far above anything a CPU-timed row reaches, so that the dressed-up rows pass the roof checks.
SYNTHETIC_PEAKS = {"device": "NVIDIA H200", "kind": "cuda", "copy_bytes_per_s": 4.2e15, "fp32_flops_per_s": 5e16,
                   "tf32_flops_per_s": 4e17, "conv_flops_per_s": 3e17, "method": "synthetic", "provenance": H200}


def _as_h200_run(cpu_run: dict, model: str, size: int, mode: str) -> dict:
    """A CPU-timed ``--format json`` object dressed as an H200 one that passes issue 10's checks: no time outside
    every layer, the rows equal to the GPU busy time, 2 % overhead."""
    run = json.loads(json.dumps(cpu_run))
    run["layers"][-1]["ms_per_step"] = 0.0  # (other)
    rows_ms = sum(layer["ms_per_step"] for layer in run["layers"])
    run.update(model=model, input_shape=[128, 1, size, size], mode=mode, device_kind="cuda", device_name="NVIDIA H200",
               attributed_ms=rows_ms, busy_ms=rows_ms, overhead_percent=2.0, provenance=H200, peaks=SYNTHETIC_PEAKS,
               nvml={"available": True, "reason": None, "timeline": [{"t_s": 0.0, "gpu_util_percent": 97.0}]})
    return run


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as benchmarks/gpu_run.py leaves it on an H200 whose figures are the reference's (memory) and
    CPU-timed rows dressed up (bandwidth): assembled by the run's own functions from result lines."""
    from profiler.bandwidth.runner import run_bandwidth

    folder = tmp_path_factory.mktemp("h200_run")
    store = ResultStore(folder / RESULTS_FILE)
    store.append({"kind": "session", "session": H200["date"], "command": "python -m benchmarks.gpu_run",
                  "dry_run": False, **H200})
    plan = gpu_run.gpu_plan(10, "h200")
    reference = {memory_key(reference_config(run)): run for run in load_reference()["runs"]}
    for config in plan.memory_reference + plan.memory_extra:
        ref = reference.get(memory_key(config), {"peak_allocated": 3 << 30, "peak_reserved": 4 << 30,
                                                 "baseline_allocated": 1 << 28})
        measured = {"source": "measured", "device": "NVIDIA H200", "peak_allocated_bytes": ref["peak_allocated"],
                    "peak_reserved_bytes": ref["peak_reserved"], "baseline_bytes": ref["baseline_allocated"],
                    "breakdown": {"weights": ref["baseline_allocated"]}, "phases": {"forward": ref["peak_allocated"]},
                    "nvml_used_bytes": None}
        predicted = {"peak_allocated_bytes": ref["peak_allocated"] + 2048, "peak_reserved_bytes": ref["peak_reserved"]}
        store.append({"key": memory_key(config), "kind": "memory", "status": "ok", "config": config,
                      "measured": measured, "predicted": predicted, "allocated_error_percent": 0.001,
                      "session": H200["date"], "dry_run": False})
    store.append({"key": memory_key(plan.memory_extra[-1]), "kind": "memory", "status": "failed",
                  "error": "the measurement of densenet121 did not finish within 120 s",
                  "config": plan.memory_extra[-1],
                  "session": H200["date"], "dry_run": False})
    [cpu] = run_bandwidth(["lenet"], None, batch=2, steps=1, warmup=0, device="cpu",
                          peaks_path=folder / "peaks_cache.json")
    store.append({"key": "peaks", "kind": "peaks", "status": "ok", "peaks": SYNTHETIC_PEAKS,
                  "datasheet": {"name": "NVIDIA H200", "bytes_per_s": 4.8e12}})
    for model, size, train in plan.bandwidth:
        store.append({"key": bandwidth_key(model, size, 128, train), "kind": "bandwidth", "status": "ok",
                      "run": _as_h200_run(cpu.to_dict(), model, size, "train" if train else "inference")})
    stem = next(e.conv for e in trace_step(build(resolve("resnet"), 96), (128, 1, 96, 96), StepConfig.make()).events
                if e.kind == "conv")
    store.append({"key": workspace_key("resnet", 96), "kind": "workspaces", "status": "ok",
                  "measured": {f"forward:{stem.key()}": {"probe": 12_845_056, "run": 0}}, "convolutions": 1})
    names = output_names("h200", dry_run=False)
    write_json(folder / names["memory"], memory_doc(store, plan.memory_keys(), H200, False, jobs=4))
    write_json(folder / names["bandwidth"], bandwidth_doc(store, plan.bandwidth_keys(), H200, False, {"steps": 10}))
    write_json(folder / names["workspaces"], workspace_doc(store, plan.workspace_keys(), H200, False))
    return folder


def test_a_complete_run_passes_the_result_tests(synthetic_run: Path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu_results.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PROFILER_GPU_RESULTS": str(synthetic_run)})
    assert proc.returncode == 0 and "5 passed" in proc.stdout, proc.stdout + proc.stderr


def test_the_reports_read_a_runs_memory_file_as_records(synthetic_run: Path):
    [memory] = load_gpu_memory(synthetic_run)
    assert memory.source == "reports/data/gpu_memory_h200.json" and memory.device == "NVIDIA H200"
    assert memory.provenance.startswith("`reports/data/gpu_memory_h200.json`: NVIDIA H200, driver 580.95.05, torch "
                                        "2.11.0+cu130, CUDA 13.0, cuDNN 91900, measured 2026-12-01")
    assert len(memory.runs) == 45 and list(memory.failed) == [memory_key(gpu_run.gpu_plan(10, "h200").memory_extra[-1])]
    [ref] = [r for r in load_reference()["runs"] if (r["model"], r["size"], r["train"]) == ("vgg", 224, True)]
    peak = memory.run("vgg", 224, True)
    assert (peak.peak_allocated_bytes, peak.peak_reserved_bytes, peak.baseline_bytes) == (
        ref["peak_allocated"], ref["peak_reserved"], ref["baseline_allocated"])
    assert peak.predicted_peak_allocated_bytes == ref["peak_allocated"] + 2048 and peak.optimizer == "sgd"
    assert memory.run("vgg", 224, True, optimizer="adam").optimizer == "adam"
    assert memory.run("vgg", 224, True, batch=7) is None


def test_the_reports_read_a_runs_bandwidth_file_as_records(synthetic_run: Path):
    [bandwidth] = load_gpu_bandwidth(synthetic_run)
    assert bandwidth.peaks["copy_bytes_per_s"] == 4.2e15 and bandwidth.datasheet["name"] == "NVIDIA H200"
    assert len(bandwidth.runs) == 24 and bandwidth.failed == {}
    run = bandwidth.run("googlenet", 224, train=True)
    assert (run.model, run.size, run.batch, run.train, run.overhead_percent) == ("googlenet", 224, 128, True, 2.0)
    assert run.busy_ms == run.attributed_ms == pytest.approx(sum(layer.ms_per_step for layer in run.layers))
    # LeNet's rows (the synthetic runs reuse one CPU-timed LeNet inference), then (other)
    assert [layer.name for layer in run.layers] == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11",
                                                    "(other)"]
    assert run.nvml["timeline"] == [{"t_s": 0.0, "gpu_util_percent": 97.0}]


def test_the_reports_refuse_a_dry_run_under_a_gpu_name(synthetic_run: Path, tmp_path: Path):
    doc = json.loads((synthetic_run / "gpu_memory_h200.json").read_text())
    (tmp_path / "gpu_memory_h200.json").write_text(json.dumps(dict(doc, dry_run=True)))
    with pytest.raises(ProfilerError, match="is not a GPU measurement"):
        load_gpu_memory(tmp_path)
    (tmp_path / "gpu_memory_h200.json").write_text(json.dumps({"dry_run": False, "runs": [{}]}))
    with pytest.raises(ProfilerError, match="is not a file of benchmarks/gpu_run.py"):
        load_gpu_memory(tmp_path)


# --- the whole run, rehearsed on the CPU -----------------------------------------------------------------------------

def _gpu_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_run", "--dry-run", "--jobs", "2", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _lines(folder: Path) -> list[dict]:
    return [json.loads(text) for text in (folder / RESULTS_FILE).read_text().splitlines()]


def _reports_data() -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in (ROOT / "reports" / "data").iterdir()}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess, dict]:
    folder = tmp_path_factory.mktemp("dry_run")
    before = _reports_data()
    proc = _gpu_run("--out", str(folder / "run"), "--pack", str(folder / "pack"))
    return folder / "run", folder / "pack", proc, before


@pytest.mark.slow
def test_the_dry_run_walks_every_phase_and_packs_two_files(dry_run):
    run, pack_dir, proc, reports_before = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = dry_run_plan()
    expected = {*plan.memory_keys(), *plan.bandwidth_keys(), *plan.workspace_keys(), "peaks", "pytest:cuda",
                "pytest:results"}
    lines = _lines(run)
    assert {line["key"] for line in lines if line["kind"] != "session"} == expected
    assert all(line["status"] == "ok" and line["dry_run"] is True for line in lines if line["kind"] != "session")
    assert sorted(p.name for p in pack_dir.iterdir()) == ["dry-run_gpu_run_cpu.tar.gz",
                                                          "dry-run_gpu_run_cpu_summary.txt"]
    with tarfile.open(pack_dir / "dry-run_gpu_run_cpu.tar.gz") as archive:
        assert sorted(archive.getnames()) == [f"dry-run_gpu_run_cpu/{name}" for name in (
            "dry-run_conv_workspaces_cpu.json", "dry-run_gpu_bandwidth_cpu.json", "dry-run_gpu_memory_cpu.json",
            "results.jsonl", "run.log", "summary.txt")]
    assert "RESULT: everything ran and passed" in proc.stdout and "DRY RUN" in proc.stdout
    assert _reports_data() == reports_before  # nothing written under reports/data


@pytest.mark.slow
def test_the_dry_runs_files_say_they_are_no_gpu_data(dry_run):
    run = dry_run[0]
    memory = json.loads((run / "dry-run_gpu_memory_cpu.json").read_text())
    bandwidth = json.loads((run / "dry-run_gpu_bandwidth_cpu.json").read_text())
    workspaces = json.loads((run / "dry-run_conv_workspaces_cpu.json").read_text())
    for doc in (memory, bandwidth, workspaces):
        assert doc["dry_run"] is True and doc["notes"][0].startswith("DRY RUN on the CPU")
    host = provenance(torch.device("cpu"))["device"] + ", host memory"
    assert {r["measured"]["device"] for r in memory["runs"]} == {host}
    assert [r["device_kind"] for r in bandwidth["runs"]] == ["cpu"] and bandwidth["peaks"]["kind"] == "cpu"
    assert workspaces["stand_in"] == gpu_workers.WORKSPACE_STAND_IN and len(workspaces["measured"]) == 6
    with pytest.raises(ProfilerError, match="is a dry run's table"):
        merge_measured_workspaces(workspaces, "dry-run_conv_workspaces_cpu.json", run / "never_written.json")


@pytest.mark.slow
def test_a_resumed_run_reruns_only_what_failed_or_is_missing(dry_run):
    run = dry_run[0]
    extra = memory_key(dry_run_plan().memory_extra[0])
    ResultStore(run / RESULTS_FILE).append({"key": extra, "kind": "memory", "status": "failed", "error": "hung"})
    count = len(_lines(run))
    proc = _gpu_run("--out", str(run), "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    new = _lines(run)[count:]
    assert [(line["kind"], line.get("key"), line.get("status")) for line in new] == [
        ("session", None, None), ("memory", extra, "ok"), ("pytest", "pytest:results", "ok")]
    assert "resuming" in proc.stdout and "1 to re-run" in proc.stdout
