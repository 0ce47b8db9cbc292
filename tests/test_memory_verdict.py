"""The fit verdict and what it rests on: the workspace mechanisms on small synthetic traces (every figure derived by
hand), the device overhead and the margin m recomputed from the committed reference, the errors of the prediction
in-sample and leave-one-model-out, the verdict's safety and waste on every committed measurement, its fields in all
four formats, ``--gpu-memory`` and ``--max-batch``."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from profiler.catalogue import DEVICE_OVERHEAD_BYTES, GPUS, NVML_OUTSIDE_TORCH_TOTAL_BYTES, gpu_spec
from profiler.device import DeviceKind
from profiler.errors import EXIT_OUT_OF_MEMORY, EXIT_USAGE, ProfilerError
from profiler.format.memory import CSV_HEADERS, format_memory
from profiler.memory import validation
from profiler.memory.allocator import CachingAllocator
from profiler.memory.calibration import calibration_for, calibrations
from profiler.memory.predict import replay
from profiler.memory.records import MemoryResult
from profiler.memory.runner import MAX_BATCH, MAX_STEPS_DOWN, largest_batch, predict_config
from profiler.memory.trace import ConvCall, Event, Trace, trace_step
from profiler.memory.verdict import checked, fit_verdict
from profiler.memory.workspaces import cap, conv_workspaces, kernel_class, stages
from profiler.step import StepConfig

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GiB = 1 << 30
H200 = GPUS["h200"]
TABLE = calibrations()["h200"].workspaces


# ----------------------------------------------------------------------- workspace mechanisms, synthetic traces

def _conv(height: int, width: int, kernel: int = 3, pass_: str = "forward") -> ConvCall:
    """A one-channel float32 convolution of a 1×1×height×width input keeping its size: input = output bytes."""
    shape = (1, 1, height, width)
    return ConvCall(pass_, shape, (1, 1, kernel, kernel), shape, (1, 1), (kernel // 2,) * 2, (1, 1), 1, 4)


def _trace(*events: Event, mode: str = "train") -> Trace:
    """A trace of ``events``: after the setup allocations, everything runs in the forward phase."""
    setup = [e for e in events if e.kind == "alloc" and e.category == "input"]
    rest = [e for e in events if e not in setup]
    return Trace([*setup, Event("phase", phase="forward"), *rest], {}, mode, "sgd" if mode == "train" else None,
                 "float32", (1, 1, 1, 1))


def _input(nbytes: int) -> Event:
    return Event("alloc", key=1, nbytes=nbytes, category="input")


def test_forward_workspace_is_input_plus_output_plus_weight_and_none_for_1x1():
    conv = _conv(1024, 1024)                                  # 4 MiB in, 4 MiB out, 9 weights of 4 B
    assert conv_workspaces(conv, "forward", TABLE).run == 8 * MiB + 36
    assert conv_workspaces(_conv(1024, 1024, kernel=1), "forward", TABLE).run == 0
    assert kernel_class(_conv(8, 8, kernel=1)) == "pointwise" and kernel_class(conv) == "spatial"


def test_filter_gradient_workspace_copies_the_input_with_its_padding():
    backward = _conv(1024, 1024, pass_="backward")
    assert stages(backward) == ["backward_data", "backward_filter"]
    # 3×3, padding 1: x padded to 1026×1026 (4 B each), dy 4 MiB, dw 36 B
    assert conv_workspaces(backward, "backward_filter", TABLE).run == 1026 * 1026 * 4 + 4 * MiB + 36
    assert conv_workspaces(backward, "backward_data", TABLE).run == 8 * MiB + 36
    pointwise = _conv(1024, 1024, kernel=1, pass_="backward")
    assert conv_workspaces(pointwise, "backward_filter", TABLE).run == 8 * MiB + 4
    assert conv_workspaces(pointwise, "backward_data", TABLE).run == 0
    no_input_grad = replace(backward, output_mask=(False, True, True))    # a first layer: the input needs no grad
    assert stages(no_input_grad) == ["backward_filter"]


class _DenseStep(torch.nn.Module):
    """conv1 → conv2 → cat((conv1's output, conv2's output)) → linear: conv2's gradient arrives as a channel slice
    of the cat's gradient (not contiguous); conv1's as the sum of a slice and conv2's input gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 3, 3, padding=1)
        self.fc = torch.nn.Linear(7 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        return self.fc(torch.cat((h, self.conv2(h)), dim=1).flatten(1))


def _backward_of(layer: str) -> list[tuple]:
    """The measured step's events of ``layer``'s convolution_backward, up to the bias gradient: allocations as
    ("alloc", bytes, category), cuDNN calls as ("conv", stage), frees of its temporaries as ("free", bytes)."""
    trace = trace_step(_DenseStep().to("meta"), (2, 1, 8, 8), StepConfig.make(train=True))
    events = trace.events[next(i for i, e in enumerate(trace.events) if e.kind == "measure"):]
    out, temporaries = [], {}
    for e in events:
        if e.kind == "free" and e.key in temporaries:
            out.append(("free", temporaries.pop(e.key)))
        elif e.phase == "backward" and e.layer == layer and e.kind in ("alloc", "conv"):
            out.append(("alloc", e.nbytes, e.category) if e.kind == "alloc" else ("conv", *stages(e.conv)))
            if e.category == "workspace":
                temporaries[e.key] = e.nbytes
            if e.kind == "alloc" and ("conv", "backward_filter") in out:   # the bias gradient comes last
                break
    return out


def test_convolution_backward_allocates_in_the_order_of_the_cudnn_path():
    # conv2: dy is a slice of the cat's gradient, 2×3×8×8 float32 = 1,536 B, copied once for each cuDNN call;
    # dx 2×4×8×8×4 = 2,048 B before the data-gradient call, dw 3×4×3×3×4 = 432 B after its copy, db 12 B last
    assert _backward_of("conv2") == [
        ("alloc", 2048, "activations"), ("alloc", 1536, "workspace"), ("conv", "backward_data"), ("free", 1536),
        ("alloc", 1536, "workspace"), ("alloc", 432, "gradients"), ("conv", "backward_filter"), ("free", 1536),
        ("alloc", 12, "gradients")]
    # conv1: its input needs no gradient and its output gradient is a sum (contiguous): no dx, no copy
    assert _backward_of("conv1") == [("alloc", 4 * 9 * 4, "gradients"), ("conv", "backward_filter"),
                                     ("alloc", 16, "gradients")]


def test_workspace_is_allocated_on_every_call_not_only_the_first():
    conv = _conv(1024, 1024)
    trace = _trace(_input(4 * MiB), Event("conv", conv=conv), Event("measure"), Event("conv", conv=conv))
    result = replay(trace, H200, TABLE)
    # the input takes 4 MiB of a 20 MiB segment; the second call's workspace (8 MiB + 36 B → 8 MiB + 512 B after
    # rounding) splits the 16 MiB left, so the measured step peaks at 12 MiB + 512 B — not at the 4 MiB of the input
    # it would if only the first call of a shape took a workspace
    assert (result.peak_allocated, result.peak_reserved) == (12 * MiB + 512, 20 * MiB)


def test_a_measured_probe_is_allocated_before_the_run_on_the_first_call_only():
    conv = _conv(1024, 1024)
    table = {**TABLE, "measured": {f"forward:{conv.key()}": {"probe": 6 * MiB, "run": 2 * MiB}}}
    assert conv_workspaces(conv, "forward", table).probe == 6 * MiB
    trace = _trace(_input(4 * MiB), Event("conv", conv=conv), Event("measure"), Event("conv", conv=conv))
    result = replay(trace, H200, table)
    assert result.peak_allocated_first == 10 * MiB     # input + probe; the run (2 MiB) comes after the probe is freed
    assert result.peak_allocated == 6 * MiB            # second call: input + run only


def test_workspace_is_capped_at_what_the_allocator_could_hand_out():
    conv = _conv(2560, 2048)                           # 20 MiB in, 20 MiB out: asks for 40 MiB + 36 B
    trace = _trace(_input(4 * MiB), Event("conv", conv=conv), mode="inference")
    tight = replay(trace, H200, TABLE, budget_bytes=24 * MiB)
    # reserved: the input's 20 MiB segment; 4 MiB could still be reserved, but the 16 MiB left in the segment is
    # more: the workspace gets exactly that block, and nothing new is reserved
    assert (tight.peak_allocated, tight.peak_reserved, tight.capped_workspaces) == (20 * MiB, 20 * MiB, 1)
    roomy = replay(trace, H200, TABLE, budget_bytes=100 * MiB)
    assert (roomy.peak_allocated, roomy.capped_workspaces) == (4 * MiB + 40 * MiB + 512, 0)


def test_cap_takes_the_larger_of_the_free_block_and_a_new_segment_in_whole_2mib():
    assert cap(10 * MiB, 3 * MiB, 5 * MiB) == 4 * MiB          # 5 MiB unreserved → a 4 MiB segment at most
    assert cap(10 * MiB, 6 * MiB, 5 * MiB) == 6 * MiB          # the cached block is larger
    assert cap(10 * MiB, 0, -3 * MiB) == 0                      # already over the budget: nothing
    assert cap(1 * MiB, 0, 100 * MiB) == 1 * MiB                # asks for less than is free: granted


def test_largest_free_block_is_per_pool():
    alloc = CachingAllocator()
    alloc.malloc("large", 3 * MiB)                              # a 20 MiB segment: 17 MiB stay free in it
    alloc.malloc("small", 1000)                                 # a 2 MiB small segment: 2 MiB - 1024 B free
    assert alloc.largest_free_block(5 * MiB) == 17 * MiB
    assert alloc.largest_free_block(100) == 2 * MiB - 1024


# ------------------------------------------------------------------------------------------ the verdict itself

def test_verdict_follows_its_formula():
    cal = calibration_for(H200)
    predicted = 1000 * MiB
    verdict = fit_verdict(predicted, "train", H200, cal)
    m = cal.reserved_margins["train"]
    assert verdict.required_bytes == -(-predicted * round(1000 * (1 + m)) // 1000)   # ⌈predicted × (1 + m)⌉
    assert verdict.device_total_bytes == H200.total_bytes == 150_109_880_320
    assert verdict.margin_bytes == H200.total_bytes - DEVICE_OVERHEAD_BYTES - verdict.required_bytes
    assert verdict.fits
    small = fit_verdict(predicted, "train", H200, cal, total_bytes=verdict.required_bytes + DEVICE_OVERHEAD_BYTES)
    assert small.fits and small.margin_bytes == 0                # exactly enough still fits
    one_short = fit_verdict(predicted, "train", H200, cal,
                            total_bytes=verdict.required_bytes + DEVICE_OVERHEAD_BYTES - 1)
    assert not one_short.fits and one_short.margin_bytes == -1


def _measured(peak_reserved: int, out_of_memory: bool = False) -> MemoryResult:
    return MemoryResult(model="nin", input_shape=(8, 1, 96, 96), mode="train", source="measured",
                        device="NVIDIA H200", device_kind=DeviceKind.CUDA, peak_allocated_bytes=peak_reserved // 2,
                        peak_reserved_bytes=0 if out_of_memory else peak_reserved, baseline_bytes=0, breakdown={},
                        phases={}, layers={}, out_of_memory=out_of_memory)


@pytest.mark.parametrize("fits, ran, held", [(True, True, True), (True, False, False), (False, True, False),
                                             (False, False, True)])
def test_a_measurement_says_whether_the_verdict_held(fits, ran, held):
    cal = calibration_for(H200)
    total = H200.total_bytes if fits else GiB
    verdict = fit_verdict(100 * MiB, "train", H200, cal, total_bytes=total)
    assert verdict.fits is fits
    result = checked(verdict, _measured(90 * MiB, out_of_memory=not ran))
    assert result.held is held
    assert result.measured_reserved_bytes == (90 * MiB if ran else None)
    assert result.within_required == (True if ran else None)     # 90 MiB measured ≤ 100 MiB × (1 + m)
    over = checked(verdict, _measured(200 * MiB))
    assert over.within_required is False


# ---------------------------------------------------------------- figures recomputed from the committed reference

def test_device_overhead_is_the_reference_nvml_excess_less_the_drivers_share():
    doc = json.loads(validation.REFERENCE_FILE.read_text())
    assert NVML_OUTSIDE_TORCH_TOTAL_BYTES == 143_771 * MiB - doc["provenance"]["total_memory"] == 644_939_776
    runs = validation.reference_runs()
    assert validation.device_overhead(runs, NVML_OUTSIDE_TORCH_TOTAL_BYTES) == DEVICE_OVERHEAD_BYTES
    excess = {r.label: r.nvml_used - r.peak_reserved - NVML_OUTSIDE_TORCH_TOTAL_BYTES for r in runs}
    assert max(excess, key=excess.get) == "vgg@224 inference"
    assert 3_200 * MiB < min(v for k, v in excess.items() if "training" in k) < max(
        v for k, v in excess.items() if "training" in k) < 3_350 * MiB


@pytest.fixture(scope="module")
def errors() -> tuple[validation.RunErrors, ...]:
    return validation.validate()


def test_committed_workspace_coefficient_is_the_fit_on_all_reference_runs():
    assert validation.fit_workspaces(validation.reference_runs()) == TABLE["backward_filter"]["spatial"]["weight"]
    assert TABLE["backward_filter"]["pointwise"]["weight"] == TABLE["backward_filter"]["spatial"]["weight"]


def test_committed_margins_are_the_ones_validation_finds(errors):
    assert validation.reserved_margins(errors) == calibrations()["h200"].reserved_margins


def test_a_reference_prediction_is_the_prediction_of_its_configuration():
    """The reports take the 24 chapter-7 memory predictions from the validation's traces: they must be what
    ``predict_config`` says for the same configuration, field by field."""
    for run in validation.reference_runs():
        if (run.model, run.size) == ("nin", 96):
            ours = validation.reference_prediction(run)
            assert ours.peak_reserved_bytes > ours.peak_allocated_bytes > 0
            assert ours.to_dict() == predict_config("nin", 96, run.batch, train=run.train, gpu="h200").to_dict()


def test_in_sample_predictions_are_the_committed_calibrations(errors):
    run = next(e for e in errors if e.run.label == "densenet@224 training")
    assert run.allocated == predict_config("densenet", 224, 128, train=True, gpu="h200").peak_allocated_bytes


def test_allocated_errors_in_sample_and_leave_one_model_out(errors):
    for e in errors:
        values = [e.allocated_error, e.lomo_allocated_error]
        if e.run.train:
            values += [e.allocated_first_error, e.lomo_allocated_first_error]
            bound = 0.033        # NiN at 96, first step: -3.3 %
        else:            # DenseNet over by its growth convolutions' output (+5.1 %), VGG-11 by its input (+0.7 %)
            bound = 0.052 if e.run.model == "densenet" else 0.0068
        assert max(map(abs, values)) <= bound, (e.run.label, values)


@pytest.mark.xfail(strict=True, reason="not reached: 4 of 12 training runs are off by more (DenseNet -17 % and -13 %, "
                                       "GoogLeNet at 96 -11 %, NiN at 96 +17 %); inference within 1 % except "
                                       "DenseNet at 96 (+13 %). Reserved depends on the exact workspace sizes (see "
                                       "test_reserved_memory_moves_with_the_workspaces_far_more_than_allocated): "
                                       "it needs workspaces measured per convolution on the card")
def test_reserved_errors_within_10_percent_in_sample_and_leave_one_model_out(errors):
    assert max(abs(x) for e in errors for x in (e.reserved_error, e.lomo_reserved_error)) <= 0.10


def test_sensitivity_without_spread_is_the_committed_prediction(errors):
    e = next(e for e in errors if e.run.label == "vgg@224 training")
    still = validation.workspace_sensitivity(e.run, spread=0.0, draws=1)
    assert still.allocated == (e.allocated,) * 2 and still.reserved == (e.reserved,) * 2


def test_reserved_memory_moves_with_the_workspaces_far_more_than_allocated():
    # every workspace of VGG-11's training step moved by up to ±15 %: the peak allocated stays within 1.5 % of the
    # measurement, the peak reserved ranges over more than 20 points — no workspace rule reaches 10 % on reserved
    run = next(r for r in validation.reference_runs() if r.label == "vgg@224 training")
    moved = validation.workspace_sensitivity(run, draws=6)
    assert all(abs(peak / run.peak_allocated - 1) < 0.015 for peak in moved.allocated)
    assert (moved.reserved[1] - moved.reserved[0]) / run.peak_reserved > 0.20


def test_reserved_errors_stay_within_what_was_measured(errors):
    training = [x for e in errors if e.run.train for x in (e.reserved_error, e.lomo_reserved_error)]
    inference = [x for e in errors if not e.run.train and e.run.model != "densenet"
                 for x in (e.reserved_error, e.lomo_reserved_error)]
    assert -0.17 < min(training) and max(training) < 0.17
    assert sum(abs(x) <= 0.10 for x in training) == 16              # 8 of 12 runs, in-sample and LOMO
    assert max(map(abs, inference)) < 0.01


def test_required_covers_every_committed_measurement(errors):
    for e in errors:
        gpu = gpu_spec(validation.REFERENCE_GPU)
        mode = "train" if e.run.train else "inference"
        assert e.required == fit_verdict(e.reserved, mode, gpu, calibration_for(gpu)).required_bytes
        assert e.required >= e.run.peak_reserved, e.run.label


@pytest.mark.xfail(strict=True, reason="not reached for NiN at 96 (1.40x), GoogLeNet at 224 (1.27x) and AlexNet at "
                                       "96 (1.26x) in training: m = 20 % covers under-predictions of up to 17 % "
                                       "while these runs are over-predicted by 17 %, 6 % and 5 %")
def test_required_is_at_most_125_percent_of_every_committed_measurement(errors):
    assert max(e.required / e.run.peak_reserved for e in errors) <= 1.25


def test_required_wastes_at_most_25_percent_on_all_but_three_runs(errors):
    ratios = {e.run.label: e.required / e.run.peak_reserved for e in errors}
    wasteful = sorted(label for label, ratio in ratios.items() if ratio > 1.25)
    assert wasteful == ["alexnet@96 training", "googlenet@224 training", "nin@96 training"], ratios
    assert max(ratios.values()) < 1.40


# ------------------------------------------------------------------------------------- the four output formats

@pytest.fixture(scope="module")
def too_small() -> MemoryResult:
    return predict_config("nin", 96, 8, train=True, gpu="h100", total_bytes=GiB, total_source="--gpu-memory: 1 GiB")


def test_table_and_markdown_say_on_the_first_line_that_the_step_does_not_fit(too_small):
    for fmt in ("table", "markdown"):
        first = format_memory([too_small], fmt).splitlines()[0]
        assert "DOES NOT FIT the NVIDIA H100 80GB HBM3" in first and "has 1.00 GiB" in first, fmt
    fits = predict_config("nin", 96, 8, train=True, gpu="h100")
    assert "DOES NOT FIT" not in format_memory([fits], "table")


def test_json_carries_the_verdict_fields(too_small):
    data = json.loads(format_memory([too_small], "json"))[0]
    v = too_small.verdict
    assert data["fits"] is False and data["device_total_bytes"] == GiB
    assert data["required_bytes"] == v.required_bytes > too_small.peak_reserved_bytes
    assert data["device_overhead_bytes"] == DEVICE_OVERHEAD_BYTES
    assert data["margin_bytes"] == GiB - DEVICE_OVERHEAD_BYTES - v.required_bytes < 0
    assert data["reserved_margin"] == calibration_for(gpu_spec("h100")).reserved_margins["train"]
    notes = " ".join(data["notes"])
    assert "m = 20.0 %" in notes and "reference_h200_batch128.json" in notes and "--gpu-memory: 1 GiB" in notes
    assert "calibration made on the NVIDIA H200, not on the NVIDIA H100" in notes


def test_csv_carries_the_verdict_columns(too_small):
    rows = list(csv.DictReader(io.StringIO(format_memory([too_small], "csv"))))
    assert set(CSV_HEADERS) >= {"required_bytes", "device_overhead_bytes", "device_total_bytes", "fits",
                                "margin_bytes"}
    assert rows[0]["fits"] == "False" and int(rows[0]["device_total_bytes"]) == GiB
    assert int(rows[0]["required_bytes"]) == too_small.verdict.required_bytes


# ---------------------------------------------------------------------------------------------------- --max-batch

def _fake(limit: int | None) -> Callable[[int], MemoryResult]:
    """A predictor whose verdict fits up to batch ``limit`` (always, when None), counting its calls."""
    cal = calibration_for(H200)

    def predicted(batch: int) -> MemoryResult:
        predicted.calls += 1
        total = H200.total_bytes if limit is None or batch <= limit else 0
        return replace(_measured(MiB), input_shape=(batch, 1, 8, 8), source="predicted",
                       verdict=fit_verdict(MiB, "train", H200, cal, total_bytes=total))
    predicted.calls = 0
    return predicted


def test_max_batch_is_the_largest_batch_whose_verdict_fits():
    predicted = _fake(1000)
    result = largest_batch(predicted)
    assert result.input_shape[0] == 1000
    assert predicted.calls <= 2 * 11 + 2                        # doubling to 1024, then bisecting back
    assert "largest batch that fits the NVIDIA H200: 1,000" in result.notes[-1]
    assert "batch 1,001 does not" in result.notes[-1]


def test_max_batch_at_the_search_cap_says_it_fits_there():
    result = largest_batch(_fake(None))
    assert result.input_shape[0] == MAX_BATCH
    assert f"batch {MAX_BATCH:,}, the largest the search tries, fits" in result.notes[-1]


def test_max_batch_when_batch_1_does_not_fit_is_out_of_memory():
    with pytest.raises(ProfilerError) as err:
        largest_batch(_fake(0))
    assert err.value.exit_code == EXIT_OUT_OF_MEMORY and "even batch 1 does not fit" in str(err.value)


def test_max_batch_measured_steps_down_when_the_edge_runs_out_of_memory():
    def measured(batch: int) -> MemoryResult:
        if batch > 996:
            raise ProfilerError("ran out of GPU memory", exit_code=EXIT_OUT_OF_MEMORY)
        return replace(_measured(MiB), input_shape=(batch, 1, 8, 8))

    result = largest_batch(_fake(1000), measured)
    assert result.input_shape[0] == 996 and "batch 1,000 ran out of memory; batch 996 is the largest" in \
        result.notes[-1]
    ok = largest_batch(_fake(1000), lambda b: replace(_measured(MiB), input_shape=(b, 1, 8, 8)))
    assert ok.input_shape[0] == 1000 and "batch 1,001 also ran" in ok.notes[-1]
    with pytest.raises(ProfilerError) as err:
        largest_batch(_fake(1000), lambda b: measured(b + 1000))   # every batch runs out of memory
    assert err.value.exit_code == EXIT_OUT_OF_MEMORY
    assert f"batches {1000 - MAX_STEPS_DOWN:,} to 1,000 all ran out of memory" in str(err.value)


# -------------------------------------------------------------------------------- the CUDA path, CPU stand-ins

def test_measuring_on_cuda_checks_the_verdict_and_reads_total_memory_from_the_properties(monkeypatch):
    from profiler.memory import measure, runner

    total = 85_000_000_000

    def fake_measure(config: dict) -> MemoryResult:
        return replace(predict_config(config["name"], config["size"], config["batch"], train=config["train"],
                                      gpu="h100"), source="measured", verdict=None)

    def no_context(*_args: object) -> None:
        raise AssertionError("mem_get_info creates a CUDA context in the parent")

    monkeypatch.setattr(measure, "measure_in_subprocess", fake_measure)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=total))
    monkeypatch.setattr(torch.cuda, "mem_get_info", no_context)
    [result] = runner.peak_memory_configs(["nin"], [96], batch=16, train=True, measure=True, gpu="h100")
    v = result.verdict
    assert result.source == "measured" and v.device_total_bytes == total and "get_device_properties(0)" in \
        v.device_total_source
    assert v.fits and v.held and v.within_required and v.measured_reserved_bytes == result.peak_reserved_bytes
    table = format_memory([result], "table")
    assert "verdict held" in table and "measured peak reserved <= required" in table


# --------------------------------------------------------------------------------------------- the command line

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler", "memory", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


@pytest.mark.parametrize("size", ["80QB", "0", "-4GiB", "GiB"])
def test_a_malformed_gpu_memory_is_exit_2_without_max_batch(size):
    proc = _cli("nin", "--size", "96", "--predict", f"--gpu-memory={size}")
    assert proc.returncode == EXIT_USAGE and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and f"--gpu-memory '{size}' is not a size" in proc.stderr


def test_gpu_memory_replaces_the_cards_memory_and_a_step_that_does_not_fit_still_exits_0():
    proc = _cli("nin", "--size", "96", "--batch", "8", "--predict", "--gpu", "h200", "--gpu-memory", "2GiB",
                "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (data,) = json.loads(proc.stdout)
    assert data["device_total_bytes"] == 2 * GiB and data["fits"] is False and data["verdict_device"] == "NVIDIA H200"
