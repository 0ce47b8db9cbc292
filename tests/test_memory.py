"""Peak-memory prediction and measurement: the allocator model, the parts exact by construction, accuracy against
the committed H200 reference, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from profiler.catalogue import GPUS, parse_bytes
from profiler.device import DeviceKind
from profiler.memory.allocator import CachingAllocator, round_size, segment_size
from profiler.memory.predict import predict, replay
from profiler.memory.runner import largest_batch, predict_config
from profiler.memory.trace import trace_step
from profiler.models import build, resolve
from profiler.step import StepConfig

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "reports/data/reference_h200_batch128.json").read_text())
MiB = 1 << 20


# ---------------------------------------------------------------------------------------- allocator model

def test_requests_round_up_to_512_bytes():
    assert [round_size(n) for n in (1, 512, 513, 1_000_000)] == [512, 512, 1024, 1_000_448]


def test_segment_sizes_follow_the_small_and_large_pools():
    assert segment_size(1024) == 2 * MiB            # small pool: 2 MiB segments
    assert segment_size(2 * MiB) == 20 * MiB        # large requests under 10 MiB share a 20 MiB segment
    assert segment_size(11 * MiB + 1) == 12 * MiB   # from 10 MiB: the request rounded up to 2 MiB


def test_unsplit_remainder_of_at_most_1mib_counts_as_allocated():
    alloc = CachingAllocator()
    # 11 MiB + 512 B needs a 12 MiB segment; the 1 MiB - 512 B left is not split off (not > 1 MiB),
    # so memory_allocated counts the whole segment, as torch.cuda.memory_allocated does.
    assert alloc.malloc("a", 11 * MiB + 512) == 12 * MiB
    assert (alloc.allocated, alloc.reserved) == (12 * MiB, 12 * MiB)
    # 10 MiB in a 12 MiB segment leaves 2 MiB (> 1 MiB): split, only the request is allocated.
    assert CachingAllocator().malloc("b", 10 * MiB) == 10 * MiB


def test_freed_blocks_merge_and_are_reused_best_fit():
    alloc = CachingAllocator()
    for key in "abc":
        alloc.malloc(key, 5 * MiB)              # three blocks in one 20 MiB segment
    alloc.free("a")
    alloc.free("b")                             # a and b merge into one free 10 MiB block
    assert alloc.malloc("d", 9 * MiB) == 10 * MiB   # the 1 MiB left over is not split off
    assert alloc.reserved == 20 * MiB               # no new segment
    assert alloc.peak_allocated == 15 * MiB         # a+b+c, then d (10, unsplit) + c


def test_small_and_large_pools_do_not_share_segments():
    alloc = CachingAllocator()
    alloc.malloc("small", 1024)
    alloc.free("small")
    alloc.malloc("large", 3 * MiB)
    assert alloc.reserved == 2 * MiB + 20 * MiB


# -------------------------------------------------------------------------------- exact by construction

@pytest.fixture(scope="module")
def nin_traces():
    def trace(**kwargs):
        model = build(resolve("nin"), 96)
        return trace_step(model, (8, 1, 96, 96), StepConfig.make(**kwargs))
    return trace


def _resident(trace, category):
    """Bytes of a category still allocated at the end of the trace."""
    live = {}
    for event in trace.events:
        if event.kind == "alloc":
            live[event.key] = (event.category, round_size(event.nbytes) if event.nbytes else 0)
        elif event.kind == "free":
            live.pop(event.key, None)
    return sum(size for cat, size in live.values() if cat == category)


def _param_bytes(name, size, element=4):
    model = build(resolve(name), size)
    return sum(round_size(p.numel() * element) for p in model.parameters())


def test_weights_are_4_bytes_per_parameter_in_fp32(nin_traces):
    trace = nin_traces(train=False)
    params = 1_992_166
    # every parameter tensor is its own allocation, rounded to 512 bytes
    assert _resident(trace, "weights") == _param_bytes("nin", 96)
    assert params * 4 <= _resident(trace, "weights") < params * 4 + 512 * 24


def test_bfloat16_halves_the_weights(nin_traces):
    assert _resident(nin_traces(train=False, dtype="bfloat16"), "weights") == _param_bytes("nin", 96, 2)


def test_input_is_the_batch_and_its_labels(nin_traces):
    # 8×1×96×96 fp32 = 294,912 B (a multiple of 512) + 8 int64 labels (64 B → 512)
    assert _resident(nin_traces(train=False), "input") == 8 * 96 * 96 * 4 + 512


def test_sgd_without_momentum_keeps_no_state(nin_traces):
    assert _resident(nin_traces(train=True, optimizer="sgd"), "optimizer") == 0


def test_sgd_momentum_keeps_one_buffer_per_parameter(nin_traces):
    assert _resident(nin_traces(train=True, optimizer="sgd-momentum"), "optimizer") == _param_bytes("nin", 96)


def test_adam_keeps_two_fp32_copies_of_the_parameters(nin_traces):
    # exp_avg and exp_avg_sq on the device; the step counters live on the CPU
    assert _resident(nin_traces(train=True, optimizer="adam"), "optimizer") == 2 * _param_bytes("nin", 96)


def test_gradients_match_the_parameters(nin_traces):
    assert _resident(nin_traces(train=True), "gradients") == _param_bytes("nin", 96)


def test_dropout_mask_is_one_byte_per_element_as_on_cuda():
    # NiN's dropout sits on 8×384×5×5 at 224: CUDA's native_dropout keeps a bool mask (9,600 B → 9,728)
    trace = trace_step(build(resolve("nin"), 224), (8, 1, 224, 224), StepConfig.make(train=True))
    assert trace.layer_activation_bytes["6"] == round_size(8 * 384 * 5 * 5 * 4) + round_size(8 * 384 * 5 * 5)


# ------------------------------------------------------------------------------- against the reference

@pytest.fixture(scope="module")
def reference_predictions():
    out = []
    for run in REFERENCE["runs"]:
        model = build(resolve(run["model"]), run["size"])
        trace = trace_step(model, (run["batch"], 1, run["size"], run["size"]), StepConfig.make(run["train"]))
        out.append((run, predict(trace, GPUS["h200"], run["model"])))
    return out


def test_baseline_matches_the_reference_to_the_byte(reference_predictions):
    for run, result in reference_predictions:
        assert result.baseline_bytes == run["baseline_allocated"], (run["model"], run["size"], run["train"])


@pytest.mark.parametrize("name", ["alexnet", "nin", "googlenet", "resnet"])
def test_inference_peak_matches_the_h200_reference_exactly(reference_predictions, name):
    # the forward probe workspace (input + output + weight bytes of the first spatial convolution) and the
    # allocator's unsplit 2 MiB-rounded segments account for every byte (GoogLeNet: all but one 512 B block)
    for run, result in reference_predictions:
        if run["model"] == name and not run["train"]:
            assert abs(result.peak_allocated_bytes - run["peak_allocated"]) <= 512, run["size"]


def test_prediction_error_against_the_h200_reference_stays_within_calibration(reference_predictions):
    errors = {(run["model"], run["size"], run["train"]):
              100 * (result.peak_allocated_bytes - run["peak_allocated"]) / run["peak_allocated"]
              for run, result in reference_predictions}
    worst = max(errors.values(), key=abs)
    mean = sum(map(abs, errors.values())) / len(errors)
    # the calibrated model's own record: max 5.1 % (DenseNet inference, over: its growth-32 convolutions write their
    # output directly), mean 0.90 %; training within 3.2 % (NiN at 96, under)
    assert abs(worst) < 5.2 and mean < 0.95, errors
    training = [abs(e) for (_, _, train), e in errors.items() if train]
    assert max(training) < 3.2


def test_breakdown_adds_up_to_the_peak(reference_predictions):
    for run, result in reference_predictions:
        assert sum(result.breakdown.values()) == result.peak_allocated_bytes, run["model"]


def test_training_keeps_two_cublas_workspaces_for_models_with_linear_layers(reference_predictions):
    for run, result in reference_predictions:
        if run["train"] and run["model"] == "googlenet" and run["size"] == 224:
            assert result.breakdown["workspace"] >= 2 * GPUS["h200"].cublas_workspace_bytes


def test_checkpointing_lowers_the_densenet_training_peak():
    plain = predict_config("densenet", 96, 32, train=True)
    checkpointed = predict_config("densenet", 96, 32, train=True, checkpoint=True)
    # only block inputs are kept through the forward; each block's activations come back during its backward
    assert checkpointed.breakdown["activations"] < 0.6 * plain.breakdown["activations"]
    assert checkpointed.peak_allocated_bytes < 0.75 * plain.peak_allocated_bytes


def test_peak_grows_with_the_batch():
    peaks = [predict_config("resnet", 96, b, train=True).peak_allocated_bytes for b in (16, 32, 64)]
    assert peaks[0] < peaks[1] < peaks[2]


def test_largest_batch_is_the_last_whose_verdict_fits_the_given_memory():
    total = parse_bytes("6GiB")

    def predicted(batch):
        return predict_config("nin", 96, batch, train=True, gpu="h100", total_bytes=total)
    result = largest_batch(predicted)
    batch = result.input_shape[0]
    assert result.verdict.fits and not predicted(batch + 1).verdict.fits
    assert result.verdict.required_bytes + result.verdict.device_overhead_bytes <= total


def test_parse_bytes_understands_binary_and_decimal_units():
    assert parse_bytes("80GiB") == 80 * (1 << 30)
    assert parse_bytes("40 GB") == 40 * 10**9
    assert parse_bytes("512MiB") == 512 * MiB


def test_replay_is_deterministic(reference_predictions):
    run, first = reference_predictions[-1]
    model = build(resolve(run["model"]), run["size"])
    trace = trace_step(model, (run["batch"], 1, run["size"], run["size"]), StepConfig.make(run["train"]))
    again = replay(trace, GPUS["h200"])
    assert (again.peak_allocated, again.peak_reserved) == (first.peak_allocated_bytes, first.peak_reserved_bytes)


# ------------------------------------------------------------------------------------------ command line

def _cli(*args):
    # without the test runner's KINETO_LOG_LEVEL, if it has one: stderr as a user's terminal shows it
    env = {**{k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "profiler", "memory", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_memory_without_gpu_predicts_and_says_so():
    proc = _cli("densenet", "--size", "96", "--train", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "predicted peak memory" in proc.stderr and "NVIDIA H100" in proc.stderr
    (data,) = json.loads(proc.stdout)  # always a list, one object per configuration
    assert data["source"] == "predicted" and data["device"] == "NVIDIA H100 80GB HBM3"
    assert set(data["breakdown"]) == {"weights", "gradients", "optimizer", "input", "activations", "workspace"}
    assert set(data["phases"]) == {"forward", "backward", "optimizer"}
    assert data["input_shape"] == [128, 1, 96, 96] and data["mode"] == "train"
    assert data["layers"] and {"name", "activation_bytes"} == set(data["layers"][0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_measure_without_gpu_is_a_usage_error_that_suggests_predict():
    proc = _cli("nin", "--measure")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--predict" in proc.stderr and "Traceback" not in proc.stderr


def test_table_output_says_predicted_on_its_first_line():
    proc = _cli("alexnet", "--size", "96", "--predict", "--gpu", "h200")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("predicted for NVIDIA H200 (no GPU used)")


def test_cpu_measurement_is_labelled_host_memory_and_leaves_stderr_empty():
    proc = _cli("nin", "--size", "96", "--batch", "4", "--measure", "--device", "cpu", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no kineto "USDT: profiler_start" lines, no "gpuGetDeviceCount failed"
    (data,) = json.loads(proc.stdout)  # always a list, one object per configuration
    assert data["source"] == "measured" and data["device"].startswith("CPU") and "host memory" in data["device"]
    # resident weights + input are the floor of the peak
    assert data["peak_allocated_bytes"] > data["baseline_bytes"] > 7_900_000


def test_records_say_whether_they_are_about_a_gpu_or_the_cpu():
    from profiler.memory.measure import measure_cpu

    assert predict_config("nin", 96, 2, gpu="h200").device_kind == DeviceKind.CUDA
    assert measure_cpu("nin", 96, 2).device_kind == DeviceKind.CPU


def test_the_formatter_reads_the_device_kind_not_the_device_name():
    from profiler.format.memory import format_memory

    cpu = replace(predict_config("nin", 96, 2, gpu="h200"), source="measured", device="Graviton3, host memory",
                  device_kind=DeviceKind.CPU, nvml_used_bytes=None, verdict=None, notes=[])
    text = format_memory([cpu], "table")
    assert "the CPU allocator caches nothing" in text and "NVML" not in text
    gpu = replace(cpu, device="CPU-named accelerator", device_kind=DeviceKind.CUDA)
    assert "torch.cuda.max_memory_reserved" in format_memory([gpu], "table")


def test_a_fresh_process_measures_on_the_cpu_when_the_config_says_so():
    from profiler.memory.measure import measure_in_subprocess

    result = measure_in_subprocess(dict(name="lenet", size=28, batch=2, device="cpu"))
    # every parameter its own storage, rounded up to 512 B as the caching allocator (and the measurement) does
    weights = sum(round_size(4 * p.numel()) for p in build(resolve("lenet"), 28).parameters())
    assert result.source == "measured" and result.device.endswith("host memory")
    assert result.breakdown["weights"] == weights and result.peak_allocated_bytes > result.baseline_bytes


def test_a_hung_measurement_is_stopped_and_reported_as_a_user_error(monkeypatch: pytest.MonkeyPatch):
    from profiler.errors import ProfilerError
    from profiler.memory import measure

    def hangs(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(measure.subprocess, "run", hangs)
    with pytest.raises(ProfilerError, match=r"vgg at size 224, batch 128 did not finish within 90 s") as err:
        measure.measure_in_subprocess(dict(name="vgg", size=224, batch=128, train=True), timeout_s=90)
    assert err.value.exit_code == 2


def test_trace_records_python_stacks_only(monkeypatch: pytest.MonkeyPatch):
    from profiler.memory import measure

    calls = []
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", lambda *a, **kw: calls.append((a, kw)))
    measure.start_memory_history()
    assert calls == [((), {"max_entries": 200_000, "stacks": "python"})]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measured_peak_is_close_to_predicted_on_this_gpu():
    from profiler.memory.measure import measure_in_subprocess

    measured = measure_in_subprocess(dict(name="resnet", size=96, batch=128, train=True))
    predicted = predict_config("resnet", 96, 128, train=True, gpu="h200" if "H200" in measured.device else "h100")
    assert abs(predicted.peak_allocated_bytes / measured.peak_allocated_bytes - 1) < 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("model", "size", "train"), [("alexnet", 96, False), ("nin", 96, True)])
def test_cuda_peak_equals_the_plain_pytorch_reference_to_the_byte(model: str, size: int, train: bool):
    # the GPU run checks all 24 (tests/test_gpu_results.py); these two are the smoke pass's live sample
    from benchmarks.gpu_checks import version_mismatch
    from profiler.memory.measure import measure_in_subprocess

    measured = measure_in_subprocess(dict(name=model, size=size, batch=128, train=train))
    why_not = version_mismatch(measured.provenance, REFERENCE)
    if why_not:
        pytest.skip(f"{why_not}: peaks are comparable to the byte only on the reference's versions")
    [ref] = [r for r in REFERENCE["runs"] if (r["model"], r["size"], r["train"]) == (model, size, train)]
    assert (measured.baseline_bytes, measured.peak_allocated_bytes) == (ref["baseline_allocated"],
                                                                       ref["peak_allocated"])


# ------------------------------------------------------------------------------ calibration and GPU script

def _alexnet_96_inference():
    trace = trace_step(build(resolve("alexnet"), 96), (128, 1, 96, 96), StepConfig.make())
    return trace, next(e.conv for e in trace.events if e.kind == "conv")


def test_a_measured_workspace_overrides_the_fitted_rule():
    import copy

    from profiler.memory.calibration import calibrations

    coefficients = copy.deepcopy(calibrations()["h200"].workspaces)
    trace, first_conv = _alexnet_96_inference()
    fitted = replay(trace, GPUS["h200"], coefficients).peak_allocated
    coefficients["measured"][f"forward:{first_conv.key()}"] = {"run": 0}
    without = replay(trace, GPUS["h200"], coefficients)
    # with the fitted rule, AlexNet's inference peak is conv1's output + its workspace (input + output + weight,
    # 27.2 MiB: a whole 28 MiB segment); measured as none, the peak is the baseline + conv1's output + the ReLU's
    # output: 128·96·22·22·4 = 23,789,568 B each
    conv1_output = 128 * 96 * 22 * 22 * 4
    assert without.peak_allocated == without.baseline + 2 * conv1_output
    assert fitted == without.baseline + conv1_output + 28 * MiB


def _workspace_table(entries: dict) -> dict:
    return {"provenance": {"device": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": "91900",
                           "date": "2026-12-01T10:00:00+00:00"}, "measured": entries, "dry_run": False}


def test_merging_a_measured_workspace_table_makes_the_predictor_use_it(tmp_path: Path):
    from profiler.memory.calibration import CALIBRATION_FILE, merge_measured_workspaces

    path = tmp_path / "calibration.json"
    path.write_text(CALIBRATION_FILE.read_text())
    trace, first_conv = _alexnet_96_inference()
    table = {f"forward:{first_conv.key()}": {"probe": 0, "run": 0},
             f"backward_data:{first_conv.key()}": {"probe": 3 * MiB, "run": MiB}}
    merged = merge_measured_workspaces(_workspace_table(table), "reports/data/conv_workspaces_h200.json", path)
    on_disk = json.loads(path.read_text())
    entry = on_disk["h200"]
    assert entry == merged and entry["cudnn_workspaces"]["measured"] == dict(sorted(table.items()))
    assert entry["cudnn_workspaces"]["forward"] == \
        json.loads(CALIBRATION_FILE.read_text())["h200"]["cudnn_workspaces"]["forward"]
    prov = entry["provenance"]
    assert prov["measured_from"] == {"file": "reports/data/conv_workspaces_h200.json", "device": "NVIDIA H200",
                                     "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": "91900",
                                     "date": "2026-12-01T10:00:00+00:00", "entries": 2}
    assert entry["summary"].startswith("cuDNN workspaces modelled as the tensors the engine copies")
    assert "2 convolution passes measured one by one in reports/data/conv_workspaces_h200.json" in entry["summary"]
    # without conv1's probe the inference peak is the baseline + conv1's output + the ReLU's output
    replayed = replay(trace, GPUS["h200"], merged["cudnn_workspaces"])
    assert replayed.peak_allocated == replayed.baseline + 2 * 128 * 96 * 22 * 22 * 4
    # merging again replaces the same entries and keeps the others
    again = merge_measured_workspaces(_workspace_table({f"forward:{first_conv.key()}": {"probe": 5, "run": 1}}),
                                      "reports/data/conv_workspaces_h200.json", path)
    assert again["cudnn_workspaces"]["measured"][f"forward:{first_conv.key()}"] == {"probe": 5, "run": 1}
    assert len(again["cudnn_workspaces"]["measured"]) == 2


def test_the_calibration_file_is_written_as_it_was_formatted():
    from profiler.memory.calibration import CALIBRATION_FILE, dump_calibration

    assert dump_calibration(json.loads(CALIBRATION_FILE.read_text())) == CALIBRATION_FILE.read_text()


@pytest.mark.parametrize(("doc", "message"), [
    (dict(_workspace_table({}), dry_run=True), "is a dry run's table"),
    (_workspace_table({"sideways:x128": {"probe": 1, "run": 1}}), "is not '<stage>:<convolution>'"),
    (_workspace_table({"forward:x128": {"probe": 1.5, "run": 1}}), "is not '<stage>:<convolution>'"),
    ({"measured": {}}, "is not a workspace table"),
], ids=["dry_run", "stage", "fraction", "schema"])
def test_a_table_that_is_not_measured_workspaces_is_refused_and_the_file_kept(tmp_path: Path, doc: dict,
                                                                            message: str):
    from profiler.errors import ProfilerError
    from profiler.memory.calibration import CALIBRATION_FILE, merge_measured_workspaces

    path = tmp_path / "calibration.json"
    path.write_text(CALIBRATION_FILE.read_text())
    with pytest.raises(ProfilerError, match=message):
        merge_measured_workspaces(doc, "table.json", path)
    assert path.read_text() == CALIBRATION_FILE.read_text()


def test_gpu_script_covers_the_reference_configurations_and_their_convolutions():
    from benchmarks.gpu_memory import compare, configs, conv_calls

    planned = {(c["name"], c["size"], c["train"]) for c in configs() if c["batch"] == 128 and len(c) == 4}
    assert {(r["model"], r["size"], r["train"]) for r in REFERENCE["runs"]} <= planned
    calls = conv_calls([dict(name="resnet", size=96, batch=128, train=False)])
    # ResNet-18: the stem, 16 block convolutions and 3 projections, all distinct at batch 128 but the repeats
    assert "x128x1x96x96_w64x1x7x7_s2x2_p3x3_d1x1_g1_e4" in calls and len(calls) == 11
    assert compare({"peak_allocated_bytes": 200, "peak_reserved_bytes": 400},
                   {"peak_allocated_bytes": 206, "peak_reserved_bytes": 380}) == {
        "allocated_error_percent": 3.0, "reserved_error_percent": -5.0}
