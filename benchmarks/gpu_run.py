"""Every GPU measurement of the project in one prepared command (issue 10), for a session that has an H100/H200
for about ten minutes. The command::

    PYTHONPATH=. bash benchmarks/gpu_run.sh --out /tmp/gpu-run --pack "$OUT" --budget-s 420

(``gpu_run.sh`` only puts the tree on ``PYTHONPATH`` and runs ``python -m benchmarks.gpu_run``.) In order, most
valuable first, each result written as it finishes (one JSON line of ``DIR/results.jsonl``, flushed and synced):

0. versions: Python, torch, CUDA, cuDNN, driver, the device, and ``nvidia-smi``;
1. smoke pass (about a minute): the first memory configuration, the device's peaks and the first bandwidth
   configuration, then ``pytest -m cuda -x`` on the test files with CUDA tests. A kind whose smoke configuration
   fails is not run further (the summary says why; fix it and rerun with ``--resume``);
2. memory: the 24 configurations of ``reports/data/reference_h200_batch128.json`` (6 models × 96/224 ×
   inference/training, batch 128), each in a fresh process (``python -m profiler.memory.measure``), ``--jobs`` at
   once: allocator peaks are per process, and the processes' predicted reserved memory (plus a context allowance
   each) is kept under 90 % of the card's;
3. bandwidth: the 24 configurations at batch 128, ``--steps`` timed and profiled steps each, alone on the GPU in one
   worker process (``benchmarks/gpu_workers.py``);
4. the cuDNN workspace of every distinct convolution (one worker process) beside the other memory configurations of
   ``benchmarks/gpu_memory.configs`` (other batches, optimizers, bf16, checkpointing, the chapter's variants);
5. assembly, from the lines of every session: ``gpu_memory_<gpu>.json`` (≥ 40 configurations, with provenance),
   ``conv_workspaces_<gpu>.json`` and ``gpu_bandwidth_<gpu>.json`` in ``DIR`` (``<gpu>``: the catalogue key,
   ``profiler.catalogue.gpu_for_device``); then issue 10's checks (``benchmarks/gpu_checks.py``) and
   ``pytest tests/test_gpu_results.py`` on those files;
6. pack: ``gpu_run_<gpu>.tar.gz`` (the three files, ``results.jsonl``, ``run.log``, ``summary.txt``) and
   ``gpu_run_<gpu>_summary.txt`` into ``--pack`` (default ``DIR``): two files, within what a device session brings
   back.

Estimated (no run yet) at about 4.5 minutes on an H100/H200: start and smoke pass 65 s, reference memory 45 s,
bandwidth 100 s, workspaces and extra memory 50 s, assembly and result tests 10 s; the summary records each phase's
real duration. ``--budget-s`` stops starting new work once spent (running work finishes, then assembly and packing
always happen, about 30 s more): 420 s leaves a session with 15 minutes of device time room to rerun what failed or
was cut off, on the same warm machine, with the same command and ``--resume``. ``--resume`` skips every
configuration ``DIR`` already holds a successful line for and re-runs what failed; on a fresh machine, unpack the
archive into a folder of the work tree first (``tar xzf gpu_run_h200.tar.gz``) and pass that folder (``--out
gpu_run_h200 --resume``).

Then commit, from the archive: ``gpu_memory_<gpu>.json``, ``conv_workspaces_<gpu>.json`` and
``gpu_bandwidth_<gpu>.json`` into ``reports/data/``; merge the workspaces with ``python -m profiler.memory.calibration
merge reports/data/conv_workspaces_<gpu>.json``; run ``python -m pytest tests/test_gpu_results.py`` and regenerate the
reports (``python -m profiler report``).

``--dry-run`` walks all of it on the CPU with LeNet at batch 2: memory measured as host memory, time as CPU time,
workspaces predicted — every file named ``dry-run_...``, every document ``"dry_run": true``; it refuses to write
under ``reports/``. ``tests/test_gpu_run.py`` runs it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import write_json
from benchmarks.gpu_checks import (
    bandwidth_problems,
    load_reference,
    memory_mismatches,
    reference_config,
    version_mismatch,
)
from benchmarks.gpu_results import (
    FAILED,
    LOG_FILE,
    OK,
    RESULTS_FILE,
    SUMMARY_FILE,
    ResultStore,
    bandwidth_doc,
    bandwidth_key,
    memory_doc,
    memory_key,
    output_names,
    pack,
    workspace_doc,
    workspace_key,
)
from benchmarks.gpu_workers import WorkerOutcome, stream_worker

ROOT = Path(__file__).resolve().parents[1]
#: Test files holding ``@pytest.mark.cuda`` tests (the smoke pass runs those tests only).
CUDA_TEST_FILES = ("tests/test_bandwidth.py", "tests/test_memory.py", "tests/test_cli_errors.py")
#: The tests of a run's assembled files (pointed at DIR through ``PROFILER_GPU_RESULTS``).
RESULTS_TEST_FILE = "tests/test_gpu_results.py"
RESULTS_ENV = "PROFILER_GPU_RESULTS"
#: Seconds after which a memory configuration's process is stopped (they take 5-8 s on an H100/H200).
MEASURE_TIMEOUT_S = 120.0
#: Seconds a worker may print nothing before it is stopped (a bandwidth configuration takes a few).
WORKER_IDLE_TIMEOUT_S = 180.0
PYTEST_TIMEOUT_S = 240.0
#: Share of the device's memory the concurrent measurements' predicted reservations may add up to.
MEMORY_SHARE = 0.9
#: What the workspace worker may hold at once: the largest convolution's tensors and workspaces (VGG-16's first
#: at 224 × 224, batch 128: 1.6 GB per activation), with room to spare; an allowance, not a prediction.
WORKSPACE_RESERVE_BYTES = 16 << 30
BATCH = 128


@dataclass
class Plan:
    """What a run measures, in order. Memory configurations are ``measure_cuda`` keyword arguments (plus
    ``device: cpu`` in a dry run); bandwidth configurations (model, size, train) at ``batch``; workspaces per
    (model, size) at ``workspace_batch``."""

    device: str
    memory_reference: list[dict[str, Any]]
    memory_extra: list[dict[str, Any]]
    bandwidth: list[tuple[str, int, bool]]
    workspaces: list[tuple[str, int]]
    batch: int = BATCH
    workspace_batch: int = BATCH
    steps: int = 10
    warmup: int = 5
    min_profiled_s: float = 0.3
    predict_for: str = ""

    def bandwidth_keys(self) -> list[str]:
        return [bandwidth_key(m, s, self.batch, t) for m, s, t in self.bandwidth]

    def memory_keys(self) -> list[str]:
        return [memory_key(c) for c in self.memory_reference + self.memory_extra]

    def workspace_keys(self) -> list[str]:
        return [workspace_key(m, s) for m, s in self.workspaces]


def gpu_plan(steps: int, gpu: str) -> Plan:
    """The GPU run: the reference's 24 memory configurations, then the rest of ``benchmarks/gpu_memory.configs``;
    the 24 bandwidth configurations; the workspaces of every batch-128 fp32 model."""
    from benchmarks.gpu_memory import configs
    from profiler.models.zoo import CHAPTER7

    reference = [reference_config(run) for run in load_reference()["runs"]]
    extra = [c for c in configs() if c not in reference]
    models = list(dict.fromkeys((c["name"], c["size"]) for c in configs()
                                if c["batch"] == BATCH and c.get("dtype", "float32") == "float32"))
    bandwidth = [(m, s, t) for m in CHAPTER7 for s in (96, 224) for t in (False, True)]
    return Plan("cuda", reference, extra, bandwidth, models, steps=steps, predict_for=gpu)


def dry_run_plan() -> Plan:
    """The same control flow on the CPU with LeNet at batch 2, one configuration where the GPU run has many (each
    phase still runs: the smoke pass takes the first of each kind); predictions for an H100."""
    lenet = dict(name="lenet", size=28, batch=2, device="cpu")
    return Plan("cpu", [dict(lenet, train=False)], [dict(lenet, train=True, optimizer="adam")],
                [("lenet", 28, True)], [("lenet", 28)], batch=2, workspace_batch=2, steps=2, warmup=1,
                min_profiled_s=0.0, predict_for="h100")


@dataclass
class PoolJob:
    """Work for the memory pool: ``prepare`` (main thread) returns the device bytes it may hold; ``work`` runs it
    on a pool thread (and records its own lines)."""

    label: str
    prepare: Callable[[], int]
    work: Callable[[], None]


@dataclass
class Session:
    """One invocation: its arguments, plan, result store, log, clock and the phases' durations."""

    args: argparse.Namespace
    plan: Plan
    out: Path
    store: ResultStore
    provenance: dict[str, Any]
    gpu: str
    capacity_bytes: int
    deadline: float
    started: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.provenance["date"]

    def say(self, text: str) -> None:
        """One line on stdout and in the log."""
        print(text, flush=True)
        self.log(text)

    def log(self, text: str) -> None:
        with (self.out / LOG_FILE).open("a", encoding="utf-8") as handle:
            handle.write(text + "\n")

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, line: dict[str, Any]) -> None:
        self.store.append({**line, "session": self.session_id, "dry_run": self.args.dry_run})

    # --- memory ---------------------------------------------------------------------------------------------------

    def memory_job(self, config: dict[str, Any]) -> PoolJob:
        from benchmarks.gpu_memory import compare
        from profiler.catalogue import DEVICE_OVERHEAD_BYTES
        from profiler.errors import ProfilerError
        from profiler.memory.measure import measure_in_subprocess
        from profiler.memory.runner import predict_config

        key = memory_key(config)
        arguments = {k: v for k, v in config.items() if k != "device"}
        state: dict[str, Any] = {}

        def prepare() -> int:
            try:
                predicted = asdict(predict_config(**arguments, gpu=self.plan.predict_for))
                state["predicted"] = {k: predicted[k] for k in ("peak_allocated_bytes", "peak_reserved_bytes",
                                                                "breakdown", "phases")}
                state["predicted"]["gpu"] = self.plan.predict_for
                reserve = predicted["peak_reserved_bytes"]
            except Exception as err:  # no prediction: still measure it (alone), and say why there is none
                state["predicted"], state["prediction_error"] = None, f"{type(err).__name__}: {err}"
                reserve = self.capacity_bytes
            return reserve + DEVICE_OVERHEAD_BYTES

        def work() -> None:
            started = time.monotonic()
            line: dict[str, Any] = {"key": key, "kind": "memory", "config": config, "predicted": state["predicted"]}
            if "prediction_error" in state:
                line["prediction_error"] = state["prediction_error"]
            try:
                line["measured"] = asdict(measure_in_subprocess(config, timeout_s=self.args.timeout_s))
                line["status"] = OK
            except Exception as err:  # a ProfilerError (the child's one line), or a child's garbled output
                error = str(err) if isinstance(err, ProfilerError) else f"{type(err).__name__}: {err}"
                line.update(status=FAILED, error=error, measured={
                    "out_of_memory": getattr(err, "exit_code", None) == 3, "error": error, "peak_allocated_bytes": 0})
            errors = compare(line["measured"], line["predicted"]) if line["predicted"] else {}
            line.update(errors, seconds=round(time.monotonic() - started, 2))
            self.record(line)
            peak = line["measured"]["peak_allocated_bytes"]
            self.say(f"  memory {key.removeprefix('memory:')}: " + (
                f"peak {peak:,} B, predicted error {errors.get('allocated_error_percent')} % "
                f"({line['seconds']:.1f} s)" if line["status"] == OK else f"FAILED {line['error']}"))

        return PoolJob(key, prepare, work)

    def run_pool(self, jobs: list[PoolJob], max_jobs: int) -> None:
        """Run ``jobs`` in order, at most ``max_jobs`` at once and their reservations within the device's memory
        (one job always runs, whatever it reserves); none starts once the budget is spent."""
        running: dict[Future, int] = {}
        with ThreadPoolExecutor(max_workers=max_jobs) as pool:
            for index, job in enumerate(jobs):
                reserve = job.prepare() if self.time_left() > 0 else 0
                while running and (len(running) >= max_jobs or sum(running.values()) + reserve > self.capacity_bytes):
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        running.pop(future)
                        future.result()  # a bug in a job is a traceback, not a silent gap
                if self.time_left() <= 0:
                    self.skipped += [j.label for j in jobs[index:]]
                    self.say(f"  budget spent: {len(jobs) - index} not started ({job.label} first)")
                    break
                running[pool.submit(job.work)] = reserve
            for future in running:
                future.result()

    def memory_phase(self, name: str, configs: list[dict[str, Any]], extra_jobs: list[PoolJob] = ()) -> None:
        pending = [c for c in configs if not self.store.ok(memory_key(c))]
        self.say(f"== {name}: {len(pending)} memory configurations to measure ({len(configs) - len(pending)} "
                 f"done before), {self.args.jobs} at once" + (f", with {len(extra_jobs)} other job(s)"
                                                             if extra_jobs else ""))
        started = time.monotonic()
        self.run_pool([*extra_jobs, *map(self.memory_job, pending)], self.args.jobs)
        self.phases[name] = time.monotonic() - started

    # --- workers ----------------------------------------------------------------------------------------------------

    def run_worker(self, kind: str, keys: list[str], spec_for: Callable[[list[str]], dict[str, Any]]) -> None:
        """Run worker ``kind`` over ``keys`` (those not done), relaunching it after a hang or a crash for the keys
        it did not reach; the hung or crashed key is recorded failed."""
        pending = [k for k in keys if not self.store.ok(k)]
        while pending and self.time_left() > 0:
            spec = dict(spec_for(pending), stop_at=time.time() + self.time_left())
            outcome = stream_worker(kind, spec, self._worker_line, lambda text: self.log(f"  [{kind}] {text}"),
                                    WORKER_IDLE_TIMEOUT_S)
            attempted = set(outcome.finished)
            if outcome.unfinished:
                attempted.add(outcome.unfinished)
                self.record({"key": outcome.unfinished, "kind": kind, "status": FAILED,
                             "error": outcome.stopped or f"the worker died (exit code {outcome.returncode})"})
                self.say(f"  {outcome.unfinished}: FAILED ({outcome.stopped or 'worker died'}); see {LOG_FILE}")
            if not attempted & set(pending):
                self._no_progress(kind, pending, outcome)
                return
            pending = [k for k in pending if k not in attempted]
        if pending:
            self.skipped += pending
            self.say(f"  budget spent: {len(pending)} {kind} configurations not started")

    def _no_progress(self, kind: str, pending: list[str], outcome: WorkerOutcome) -> None:
        if self.time_left() <= 1:  # it stopped at the deadline, before starting anything
            self.skipped += pending
            return
        why = self.store.get("peaks") if kind == "bandwidth" else None
        reason = (f"no peaks: {why['error']}" if why and why["status"] == FAILED else
                  f"the worker produced no result (exit code {outcome.returncode}); see {LOG_FILE}")
        for key in pending:
            self.record({"key": key, "kind": kind, "status": FAILED, "error": reason})
        self.say(f"  {kind}: {len(pending)} configurations FAILED: {reason}")

    def _worker_line(self, line: dict[str, Any]) -> None:
        self.record(line)
        if line["status"] != OK:
            self.say(f"  {line['key']}: FAILED {line.get('error')}")
        elif line["kind"] == "bandwidth":
            run = line["run"]
            self.say(f"  {line['key']}: step {run['step_ms']:.3f} ms, overhead {run['overhead_percent']:+.1f} %, "
                     f"rows {run['attributed_ms']:.3f} ms, busy {run['busy_ms']} ms ({line['seconds']:.1f} s)")
        elif line["kind"] == "peaks":
            peaks = line["peaks"]
            self.say(f"  peaks: copy {peaks['copy_bytes_per_s'] / 1e12:.3f} TB/s, FP32 "
                     f"{peaks['fp32_flops_per_s'] / 1e12:.1f} TFLOP/s, TF32 {peaks['tf32_flops_per_s']} FLOP/s")
        else:
            self.say(f"  {line['key']}: {line['convolutions']} convolutions ({line['seconds']:.1f} s)")

    def bandwidth_phase(self, name: str, configs: list[tuple[str, int, bool]]) -> None:
        plan = self.plan
        by_key = {bandwidth_key(m, s, plan.batch, t): [m, s, t] for m, s, t in configs}
        self.say(f"== {name}: {sum(not self.store.ok(k) for k in by_key)} bandwidth configurations, alone on the "
                 f"device, {plan.steps} steps each")
        started = time.monotonic()

        def spec(pending: list[str]) -> dict[str, Any]:
            peaks = self.store.get("peaks")
            return {"configs": [by_key[k] for k in pending], "batch": plan.batch, "steps": plan.steps,
                    "warmup": plan.warmup, "min_profiled_s": plan.min_profiled_s, "device": plan.device,
                    "peaks": peaks["peaks"] if peaks and peaks["status"] == OK else None}

        self.run_worker("bandwidth", list(by_key), spec)
        self.phases[name] = time.monotonic() - started

    def workspace_job(self) -> PoolJob:
        plan = self.plan
        by_key = {workspace_key(m, s): [m, s] for m, s in plan.workspaces}

        def spec(pending: list[str]) -> dict[str, Any]:
            known = sorted({conv.partition(":")[2] for key in by_key if self.store.ok(key)
                            for conv in self.store.get(key)["measured"]})
            return {"models": [by_key[k] for k in pending], "batch": plan.workspace_batch, "device": plan.device,
                    "known": known}

        return PoolJob("workspaces", lambda: WORKSPACE_RESERVE_BYTES,
                       lambda: self.run_worker("workspaces", list(by_key), spec))

    # --- pytest -----------------------------------------------------------------------------------------------------

    def pytest(self, key: str, arguments: list[str], env: dict[str, str] | None = None) -> None:
        """Run pytest with ``arguments`` from the tree's root, its output into the log, its outcome as a line."""
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments]
        self.say(f"== {key}: {' '.join(command[1:])}")
        started = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S,
                                  env={**os.environ, **(env or {})})
            output, returncode = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as err:
            output, returncode = f"{err.stdout or ''}\nstopped after {PYTEST_TIMEOUT_S:g} s", -1
        self.log(output)
        last = (output.strip().splitlines() or ["no output"])[-1]
        self.record({"key": key, "kind": "pytest", "status": OK if returncode == 0 else FAILED, "returncode":
                     returncode, "summary": last, **({} if returncode == 0 else {"error": last}),
                     "tail": output[-3000:], "seconds": round(time.monotonic() - started, 2)})
        self.say(f"  {last}")
        self.phases[key] = time.monotonic() - started

    # --- assembly ---------------------------------------------------------------------------------------------------

    def assemble(self) -> dict[str, dict[str, Any]]:
        """Write the three documents from every session's lines; returns them by kind."""
        names = output_names(self.gpu, self.args.dry_run)
        provenance = {**self.provenance, "script": "benchmarks/gpu_run.py",
                      "protocol": "profiler/memory/measure.py (memory), profiler/bandwidth/runner.py (bandwidth), "
                                  "benchmarks/gpu_memory.py measure_conv_workspaces (workspaces)"}
        plan = self.plan
        docs = {"memory": memory_doc(self.store, plan.memory_keys(), provenance, self.args.dry_run, self.args.jobs),
                "workspaces": workspace_doc(self.store, plan.workspace_keys(), provenance, self.args.dry_run),
                "bandwidth": bandwidth_doc(self.store, plan.bandwidth_keys(), provenance, self.args.dry_run,
                                           {"batch": plan.batch, "steps": plan.steps, "warmup": plan.warmup,
                                            "min_profiled_s": plan.min_profiled_s})}
        for kind, doc in docs.items():
            write_json(self.out / names[kind], doc)
        return docs

    def summary(self, docs: dict[str, dict[str, Any]]) -> tuple[str, bool]:
        """The closing summary, and whether everything ran and passed."""
        from benchmarks.gpu_memory import error_summary

        prov, names, plan = self.provenance, output_names(self.gpu, self.args.dry_run), self.plan
        memory, bandwidth, workspaces = docs["memory"], docs["bandwidth"], docs["workspaces"]
        lines = [f"GPU run ({'DRY RUN on the CPU, not GPU data' if self.args.dry_run else 'measured'}) on "
                 f"{prov['device']} ({self.gpu}): torch {prov['torch']}, CUDA {prov['cuda']}, cuDNN {prov['cudnn']}, "
                 f"driver {prov['driver']}, Python {platform.python_version()}",
                 f"this session took {time.monotonic() - self.started:.0f} s (budget {self.args.budget_s:g} s): "
                 + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.phases.items())]
        problems: list[str] = []
        total = len(plan.memory_keys())
        lines.append(f"memory: {len(memory['runs'])} of {total} configurations measured, {len(memory['failed'])} "
                     f"failed, {total - len(memory['runs']) - len(memory['failed'])} not run; "
                     + error_summary([r for r in memory["runs"] if r["predicted"]]))
        why_not = version_mismatch(prov, load_reference()) if not self.args.dry_run else "a dry run"
        if why_not:
            lines.append(f"  reference to the byte: not checked ({why_not})")
        else:
            mismatches = memory_mismatches(memory["runs"], load_reference())
            problems += mismatches
            lines.append(f"  reference to the byte: {len(load_reference()['runs']) - len(mismatches)} of "
                         f"{len(load_reference()['runs'])} equal"
                         + "".join(f"\n    {m}" for m in mismatches))
        run_problems = {f"{r['model']} {r['input_shape'][-1]} {r['mode']}": bandwidth_problems(r, bandwidth["peaks"])
                        for r in bandwidth["runs"]} if bandwidth["peaks"] else {}
        failing = {name: found for name, found in run_problems.items() if found}
        if not self.args.dry_run:
            problems += [p for found in failing.values() for p in found]
        lines.append(f"bandwidth: {len(bandwidth['runs'])} of {len(plan.bandwidth)} configurations, "
                     f"{len(bandwidth['failed'])} failed; checks"
                     f"{' (CPU stand-ins: they cannot pass)' if self.args.dry_run else ''}: "
                     + ("all pass" if not failing else f"{len(failing)} configurations miss them")
                     + "".join(f"\n    {name}: {'; '.join(found)}" for name, found in failing.items()))
        lines.append(f"workspaces: {len(workspaces['measured'])} convolution passes from {len(workspaces['models'])} "
                     f"of {len(plan.workspaces)} models, {len(workspaces['failed'])} failed")
        for key in ("pytest:cuda", "pytest:results"):
            line = self.store.get(key)
            if line is not None:
                lines.append(f"{key}: {line['summary']}")
                if line["status"] != OK:
                    problems.append(f"{key} failed")
        failed = [line["key"] for line in self.store.latest.values() if line["status"] != OK]
        if failed:
            lines.append(f"failed ({len(failed)}): {', '.join(failed[:12])}{' …' if len(failed) > 12 else ''}; "
                         f"rerun the same command with --resume")
        if self.skipped:
            lines.append(f"not started (budget): {len(self.skipped)}; rerun with --resume")
        lines.append(f"files: {names['memory']}, {names['workspaces']}, {names['bandwidth']} in {self.out}; archive "
                     f"{names['archive']} in {self.args.pack or self.out}")
        if self.args.dry_run:
            lines.append("dry run: nothing here is GPU data; do not commit it")
        else:
            lines.append(f"to commit: tar xzf {names['archive']}; copy {names['memory']}, {names['workspaces']}, "
                         f"{names['bandwidth']} into reports/data/; python -m profiler.memory.calibration merge "
                         f"reports/data/{names['workspaces']}; python -m pytest tests/test_gpu_results.py; "
                         "python -m profiler report")
        passed = not (problems or failed or self.skipped)
        lines.append("RESULT: " + ("everything ran and passed" if passed else "see above"))
        return "\n".join(lines) + "\n", passed


# --- setting up a session -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder: results.jsonl, run.log and the "
                                                                  "assembled files (created if missing)")
    parser.add_argument("--pack", type=Path, help="folder for the archive and the summary (default: --out)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no new work after this many seconds (default: 420)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out: skip what succeeded, "
                                                               "re-run what failed")
    parser.add_argument("--jobs", type=int, default=4, help="memory configurations measured at once, each in its "
                                                            "own process (default: 4)")
    parser.add_argument("--steps", type=int, default=10, help="timed and profiled steps per bandwidth "
                                                              "configuration (default: 10)")
    parser.add_argument("--timeout-s", type=float, default=MEASURE_TIMEOUT_S,
                        help=f"stop one memory measurement after this long (default: {MEASURE_TIMEOUT_S:g})")
    parser.add_argument("--dry-run", action="store_true", help="rehearse everything on the CPU with LeNet at batch "
                                                               "2 (CPU stand-ins, files named dry-run_...)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.steps < 1 or args.budget_s <= 0:
        parser.error("--jobs and --steps must be at least 1 and --budget-s positive")
    for flag, folder in (("--out", args.out), ("--pack", args.pack)):
        if folder is not None and _inside(folder, ROOT / "reports"):
            parser.error(f"{flag} {folder} is inside reports/: write into a work folder (e.g. /tmp/gpu-run) and copy "
                         "the checked files into reports/data/ afterwards")
    return args


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def versions(dry_run: bool) -> tuple[dict[str, Any], str, int]:
    """The session's provenance, the catalogue key of its device ("cpu" in a dry run) and the bytes of memory the
    concurrent measurements may reserve in all."""
    import torch

    from profiler.catalogue import gpu_for_device
    from profiler.device import provenance
    from profiler.errors import ProfilerError

    if dry_run:
        prov = provenance(torch.device("cpu"), detailed=True)
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return {**prov, "total_memory": total, "python": platform.python_version()}, "cpu", int(MEMORY_SHARE * total)
    if not torch.cuda.is_available():
        raise ProfilerError("benchmarks/gpu_run.py needs a CUDA GPU (torch.cuda.is_available() is False); --dry-run "
                            "rehearses it on the CPU")
    prov = provenance(torch.device("cuda", torch.cuda.current_device()), detailed=True)
    spec = gpu_for_device(prov["device"])
    if spec is None:
        raise ProfilerError(f"{prov['device']} is not in the GPU catalogue (profiler/catalogue.py): add it there "
                            "first, so that predictions for it can be compared with the measurements")
    return {**prov, "python": platform.python_version()}, spec.key, int(MEMORY_SHARE * prov["total_memory"])


def nvidia_smi() -> str:
    """``nvidia-smi``'s report, or why there is none."""
    try:
        proc = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        return proc.stdout + proc.stderr
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"nvidia-smi: not available ({err})"


def open_store(args: argparse.Namespace, provenance: dict[str, Any]) -> ResultStore:
    """The run folder's store; a folder that holds another run needs ``--resume``, and one from another device or
    of the other kind (dry run or not) is refused."""
    from profiler.errors import ProfilerError

    path = args.out / RESULTS_FILE
    if path.exists() and not args.resume:
        raise ProfilerError(f"{args.out} already holds a run ({RESULTS_FILE}): pass --resume to continue it, or "
                            "choose another --out")
    store = ResultStore(path)
    for session in store.sessions:
        if session.get("device") != provenance["device"] or bool(session.get("dry_run")) != args.dry_run:
            raise ProfilerError(f"{args.out} holds results of {session.get('device')} (dry run: "
                                f"{bool(session.get('dry_run'))}); this is {provenance['device']} (dry run: "
                                f"{args.dry_run}): use another --out")
    return store


def main(argv: list[str] | None = None) -> int:
    from profiler.errors import ProfilerError

    args = parse_args(argv)
    started = time.monotonic()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    try:
        provenance, gpu, capacity = versions(args.dry_run)
        args.out.mkdir(parents=True, exist_ok=True)
        store = open_store(args, provenance)
    except (ProfilerError, OSError) as err:
        sys.stderr.write(f"gpu_run: {err}\n")
        return 2
    plan = dry_run_plan() if args.dry_run else gpu_plan(args.steps, gpu)
    session = Session(args, plan, args.out, store, provenance, gpu, capacity, started + args.budget_s, started)
    command = " ".join(["python -m benchmarks.gpu_run", *(argv if argv is not None else sys.argv[1:])])
    store.append({"kind": "session", "session": session.session_id, "command": command, "dry_run": args.dry_run,
                  **provenance})
    session.say(f"== versions: Python {provenance['python']}, torch {provenance['torch']}, CUDA {provenance['cuda']}, "
                f"cuDNN {provenance['cudnn']}, driver {provenance['driver']}; {provenance['device']} ({gpu})")
    if args.resume:
        session.say(f"resuming {args.out}: {sum(line['status'] == OK for line in store.latest.values())} results "
                    f"done, {sum(line['status'] != OK for line in store.latest.values())} to re-run"
                    + (f", {store.damaged_lines} cut-off lines skipped" if store.damaged_lines else ""))
    session.say(nvidia_smi().rstrip())
    run_all(session)
    docs = session.assemble()
    if session.time_left() > 0:
        session.pytest("pytest:results", [RESULTS_TEST_FILE], {RESULTS_ENV: str(args.out.resolve())})
    text, passed = session.summary(docs)
    (args.out / SUMMARY_FILE).write_text(text)
    session.log(text)
    names = output_names(gpu, args.dry_run)
    pack_dir = args.pack or args.out
    pack_dir.mkdir(parents=True, exist_ok=True)
    pack(args.out, [names["memory"], names["workspaces"], names["bandwidth"], RESULTS_FILE, LOG_FILE, SUMMARY_FILE],
         pack_dir / names["archive"])
    (pack_dir / names["summary"]).write_text(text)
    print(text, end="", flush=True)
    return 0 if passed else 1


def run_all(session: Session) -> None:
    """Smoke pass, then every measurement, most valuable first (module docstring)."""
    plan, store = session.plan, session.store
    session.say("== smoke: one memory configuration, the peaks and one bandwidth configuration, pytest -m cuda")
    session.memory_phase("smoke memory", plan.memory_reference[:1])
    session.bandwidth_phase("smoke bandwidth", plan.bandwidth[:1])
    if not (session.args.resume and store.ok("pytest:cuda")):
        session.pytest("pytest:cuda", ["-x", "-m", "cuda", *CUDA_TEST_FILES])
    memory_works = store.ok(memory_key(plan.memory_reference[0]))
    bandwidth_works = store.ok(plan.bandwidth_keys()[0])
    if memory_works:
        session.memory_phase("memory (reference)", plan.memory_reference)
    else:
        session.say("memory smoke failed: memory configurations not run (fix it, then rerun with --resume)")
    if bandwidth_works:
        session.bandwidth_phase("bandwidth", plan.bandwidth)
    else:
        session.say("bandwidth smoke failed: bandwidth configurations not run (fix it, then rerun with --resume)")
    workspaces = [session.workspace_job()] if any(not store.ok(k) for k in plan.workspace_keys()) else []
    session.memory_phase("workspaces + memory (extra)", plan.memory_extra if memory_works else [], workspaces)


if __name__ == "__main__":
    sys.exit(main())
