"""Bandwidth: layer ranges and attribution (forward and backward, on the CPU), the CPU path end to end (functions and
the real CLI), NVML failure modes (mocked pynvml), the peaks cache, the roofline PNG, the CUDA path where there is a
GPU, and the physical sense of committed GPU results.

CPU timing runs at one intra-op thread: on a shared 2-core machine an OpenMP region waits for its slowest thread,
which turns 0.05 ms ops into 8 ms ones and makes the times say more about the neighbours than about the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.gpu_checks import bandwidth_problems
from profiler.bandwidth import peaks as peaks_module
from profiler.bandwidth.peaks import (
    CALIBRATION_VERSION,
    CPU_KERNELS,
    ROOF_TOLERANCE,
    VERSION_KEY,
    CpuKernel,
    _cpu_kernel_rates,
    beyond_roof_notes,
    cache_file,
    device_peaks,
    load_cached,
    measure_cpu_peaks,
    save_cached,
)
from profiler.bandwidth.records import BandwidthResult, DevicePeaks, LayerTiming
from profiler.bandwidth.runner import (
    category,
    out_of_memory_error,
    profile_config,
    run_bandwidth,
    step_spread_percent,
)
from profiler.bandwidth.timing import (
    LayerRanges,
    TraceEvent,
    cpu_times,
    enclosing,
    kernel_times,
    parse_range,
    range_name,
    trace_events,
    widened,
)
from profiler.catalogue import datasheet_for
from profiler.cli import main
from profiler.counting import count_layer, count_model
from profiler.device import nvml as nvml_module
from profiler.device.nvml import MetricSummary, NvmlSampler, NvmlSummary
from profiler.errors import ProfilerError
from profiler.format.bandwidth import format_bandwidth
from profiler.format.plots import roofline_figure, roofline_plot
from profiler.kinds import OPTIMIZER_ROW, OTHER_ROW, OpClass
from profiler.models import build, resolve
from profiler.scopes import named_modules

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "reports" / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Rows (``(other)`` included) against the mean profiled step on the CPU: the step's perf_counter also covers
#: entering and leaving the step's own range, so the rows may fall short by a little, never exceed it.
CPU_SUM_TOLERANCE = 0.05


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def peaks_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache") / "peaks.json"


@pytest.fixture(scope="module")
def cpu_train(peaks_path: Path) -> BandwidthResult:
    """A ResNet-18 training step at batch 2, 32×32, timed on the CPU (3 profiled steps)."""
    [result] = run_bandwidth(["resnet"], [32], batch=2, train=True, steps=3, warmup=1, device="cpu",
                             peaks_path=peaks_path)
    return result


@pytest.fixture(scope="module")
def cpu_inference(peaks_path: Path) -> BandwidthResult:
    [result] = run_bandwidth(["lenet"], None, batch=2, steps=3, warmup=1, device="cpu", peaks_path=peaks_path)
    return result


# --- attribution: ranges on the CPU, kernels from synthetic events -------------------------------------------------

class Block(nn.Module):
    """A container with an op of its own (the residual add), like the zoo's Residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), Block(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _owners(train: bool) -> dict[str, set[tuple[str, str]]]:
    """op name → the (phase, layer) ranges its calls ran in, for one step of the tiny model on the CPU."""
    model, loss_fn = _tiny(), nn.CrossEntropyLoss()
    modules = named_modules(model)
    modules["loss"] = loss_fn
    ranges = LayerRanges(modules, track_backward=train)
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with ranges.attached(), profile(activities=[ProfilerActivity.CPU]) as prof:
        if train:
            loss = loss_fn(model(x), y)
            ranges.hook_backward()
            loss.backward()
            ranges.end_step()
        else:
            with torch.no_grad():
                model(x)
    events = trace_events(prof)
    owners: dict[str, set[tuple[str, str]]] = {}
    ops = [e for e in events if not parse_range(e.name) and e.name != "profiler.bandwidth/step"]
    found = enclosing(widened(events), ops)
    for op in ops:
        owners.setdefault(op.name, set()).add(parse_range(found[op].name) if found[op] else None)
    return owners


def test_forward_ops_run_inside_the_range_of_their_innermost_module():
    owners = _owners(train=False)
    assert owners["aten::mkldnn_convolution"] == {("forward", "0"), ("forward", "2.conv")}
    assert owners["aten::clamp_min"] == {("forward", "1")}
    assert owners["aten::add"] == {("forward", "2")}  # the block's own residual add, not its conv's
    assert owners["aten::addmm"] == {("forward", "4")}


def test_backward_ops_run_inside_the_range_of_the_module_whose_forward_created_them():
    owners = _owners(train=True)
    assert owners["aten::convolution_backward"] == {("backward", "0"), ("backward", "2.conv")}
    assert owners["aten::threshold_backward"] == {("backward", "1")}
    assert owners["aten::mm"] == {("backward", "4")}
    assert owners["aten::nll_loss_backward"] == {("backward", "loss")}
    # parameter gradients are accumulated in the range of the module that owns the parameter
    assert owners["torch::autograd::AccumulateGrad"] == {("backward", "0"), ("backward", "2.conv"),
                                                         ("backward", "4")}
    # x feeds both the block's conv and its add: the engine sums the two gradients (aten::add) after the conv's
    # backward, whose gradient arrives last, and inside the engine's event for that node
    assert owners["aten::add"] == {("forward", "2"), ("backward", "2.conv")}
    # only the seed gradient of loss.backward() belongs to no layer
    assert {name for name, where in owners.items() if None in where} == {
        "aten::ones_like", "aten::empty_like", "aten::empty_strided", "aten::fill_"}


def _ev(name: str, thread: int, start: int, end: int, corr: int = 0, linked: int = 0,
        device: bool = False) -> TraceEvent:
    return TraceEvent(name, thread, start, end, device, corr, linked)


def test_kernels_are_charged_to_the_range_around_the_op_that_launched_them():
    fwd_a, fwd_b, bwd_a = range_name("forward", "a"), range_name("forward", "b"), range_name("backward", "a")
    events = [
        _ev(fwd_a, 1, 0, 100, corr=1), _ev(fwd_b, 1, 10, 50, corr=2),   # b nested in a
        _ev("aten::conv2d", 1, 12, 40, corr=3), _ev("aten::convolution", 1, 13, 39, corr=4),
        _ev("aten::add", 1, 60, 70, corr=5),                             # a's own op
        _ev(bwd_a, 2, 200, 300, corr=6), _ev("aten::convolution_backward", 2, 210, 290, corr=7),
        _ev("aten::fill_", 1, 150, 160, corr=8),                         # outside every range
        _ev("cudaLaunchKernel", 1, 14, 15, corr=90, linked=4),           # runtime call: not a CPU op
        _ev("cudaMemsetAsync", 4242, 61, 62, corr=4, linked=5),          # CUPTI's id 4 is not op 4
        _ev("conv_kernel", 7, 400, 430, corr=90, linked=4, device=True),
        _ev("add_kernel", 7, 425, 445, corr=91, linked=5, device=True),  # overlaps the conv kernel by 5
        _ev("dgrad_kernel", 7, 500, 560, corr=92, linked=7, device=True),
        _ev("fill_kernel", 7, 600, 604, corr=93, linked=8, device=True),
        _ev("mystery_kernel", 7, 700, 701, corr=94, linked=999, device=True),
    ]
    result = kernel_times(events)
    assert result.ns == {("b", "forward"): 30, ("a", "forward"): 20, ("a", "backward"): 60}
    assert result.unattributed_ns == 4 + 1
    assert result.busy_ns == 45 + 60 + 4 + 1   # the union: overlapping kernels count once
    assert result.device_events == 5


@pytest.mark.parametrize("typed", [False, True], ids=["by_name", "by_activity_type"])
def test_a_runtime_call_outside_every_op_does_not_replace_the_op_whose_id_it_shares(typed: bool):
    # cudaEventRecord of a step timer and cudaDeviceSynchronize run outside every op, so they have no linked id,
    # and their correlation ids come from CUPTI's counter: here 11, the id of the convolution that launched the kernel
    fwd = range_name("forward", "conv")

    def cpu(name: str, start: int, end: int, corr: int, linked: int = 0, kind: str = "cpu_op") -> TraceEvent:
        return TraceEvent(name, 1, start, end, False, corr, linked, kind if typed else "")

    events = [cpu(fwd, 0, 100, 10, kind="user_annotation"), cpu("aten::convolution", 10, 90, 11),
              cpu("cudaLaunchKernel", 20, 21, 500, linked=11, kind="cuda_runtime"),
              cpu("cudaEventRecord", 200, 201, 11, kind="cuda_runtime"),
              cpu("cudaDeviceSynchronize", 210, 260, 12, kind="cuda_runtime"),
              _ev("conv_kernel", 7, 300, 340, corr=500, linked=11, device=True)]
    result = kernel_times(events)
    assert result.ns == {("conv", "forward"): 40} and result.unattributed_ns == 0


def test_a_kernel_with_no_linked_op_is_unattributed_even_beside_an_event_of_id_0():
    events = [_ev(range_name("forward", "a"), 1, 0, 100, corr=0), _ev("aten::add", 1, 10, 20, corr=1),
              _ev("orphan_kernel", 7, 300, 310, corr=90, linked=0, device=True),
              _ev("add_kernel", 7, 320, 325, corr=91, linked=1, device=True)]
    result = kernel_times(events)
    assert result.ns == {("a", "forward"): 5} and result.unattributed_ns == 10


def test_work_the_engine_does_for_a_node_after_its_hooks_belongs_to_that_node():
    bwd = range_name("backward", "block.conv")
    engine = "autograd::engine::evaluate_function: ConvolutionBackward0"
    events = [_ev(engine, 2, 100, 200, corr=1), _ev(bwd, 2, 105, 170, corr=2),
              _ev("aten::convolution_backward", 2, 110, 160, corr=3),
              _ev("aten::add", 2, 175, 190, corr=4),                     # the input-buffer sum, after the post-hook
              _ev("k1", 7, 300, 350, corr=90, linked=3, device=True), _ev("k2", 7, 350, 360, corr=91, linked=4,
                                                                            device=True)]
    assert kernel_times(events).ns == {("block.conv", "backward"): 60}
    assert cpu_times([_ev("profiler.bandwidth/step", 2, 0, 1000), *events]).ns == {("block.conv", "backward"): 100}


def test_cpu_time_of_a_range_excludes_the_ranges_nested_in_it():
    events = [_ev("profiler.bandwidth/step", 1, 0, 1000), _ev(range_name("forward", ""), 1, 10, 500),
              _ev(range_name("forward", "0"), 1, 20, 200), _ev(range_name("forward", "1"), 1, 210, 400),
              _ev(range_name("backward", "0"), 1, 600, 900), _ev("aten::mm", 1, 30, 190)]
    result = cpu_times(events)
    assert result.ns == {("", "forward"): 490 - 180 - 190, ("0", "forward"): 180, ("1", "forward"): 190,
                         ("0", "backward"): 300}
    assert result.step_ns == 1000
    assert result.unattributed_ns == 1000 - 490 - 300
    assert sum(result.ns.values()) + result.unattributed_ns == result.step_ns


class _RawEvent:
    """A stand-in for torch's _KinetoEvent; ``kind=None`` mimics a torch without ``activity_type``, an int kind the
    method's first form (an enum value, no name)."""

    def __init__(self, name: str, device: bool, start: int, duration: int, corr: int, linked: int,
                 kind: str | int | None) -> None:
        self._v = dict(name=name, device=device, start=start, duration=duration, corr=corr, linked=linked)
        if kind is not None:
            self.activity_type = lambda: kind
        if isinstance(kind, str):
            self.is_user_annotation = lambda: kind == "user_annotation"

    def name(self) -> str:
        return self._v["name"]

    def device_type(self):
        return torch.autograd.DeviceType.CUDA if self._v["device"] else torch.autograd.DeviceType.CPU

    def start_ns(self) -> int:
        return self._v["start"]

    def duration_ns(self) -> int:
        return self._v["duration"]

    def start_thread_id(self) -> int:
        return 1

    def correlation_id(self) -> int:
        return self._v["corr"]

    def linked_correlation_id(self) -> int:
        return self._v["linked"]


#: kineto's ActivityType enum values, as the first form of ``_KinetoEvent.activity_type`` returned them.
_KINETO_ENUM = {"cpu_op": 0, "user_annotation": 1, "gpu_user_annotation": 2, "gpu_memcpy": 3, "gpu_memset": 4,
                "kernel": 5, "cuda_runtime": 7}


@pytest.mark.parametrize("activity", ["string", "absent", "int"], ids=["activity_type", "older_torch", "int_form"])
def test_annotations_mirrored_on_the_gpu_timeline_are_not_kernels(activity: str):
    # an int activity type names nothing comparable: the annotation fallback must decide, or every kernel is dropped
    def kind(value: str) -> str | int | None:
        return {"string": value, "absent": None, "int": _KINETO_ENUM[value]}[activity]

    fwd = range_name("forward", "0")
    raw = [_RawEvent(fwd, False, 0, 100, 1, 0, kind("user_annotation")),
           _RawEvent("aten::relu", False, 10, 20, 2, 0, kind("cpu_op")),
           _RawEvent("cudaLaunchKernel", False, 12, 1, 2, 2, kind("cuda_runtime")),  # CUPTI id 2, op 2
           _RawEvent(fwd, True, 5, 200, 3, 0, kind("gpu_user_annotation")),
           _RawEvent("relu_kernel", True, 40, 7, 4, 2, kind("kernel")),
           _RawEvent("Memset (Device)", True, 60, 3, 5, 2, kind("gpu_memset"))]
    prof = types.SimpleNamespace(profiler=types.SimpleNamespace(
        kineto_results=types.SimpleNamespace(events=lambda: raw)))
    events = trace_events(prof)
    assert [e.name for e in events if e.on_device] == ["relu_kernel", "Memset (Device)"]
    assert next(e for e in events if e.name == "cudaLaunchKernel").linked_id == 2
    assert kernel_times(events).ns == {("0", "forward"): 10}


@pytest.mark.parametrize(("module", "expected"), [
    (nn.Conv2d(1, 1, 1), "conv"), (nn.Linear(1, 1), "linear"), (nn.BatchNorm2d(1), "normalization"),
    (nn.LocalResponseNorm(2), "normalization"), (nn.MaxPool2d(2), "pooling"), (nn.AdaptiveAvgPool2d(1), "pooling"),
    (nn.ReLU(), "elementwise"), (nn.Dropout(), "elementwise"), (nn.Flatten(), "elementwise"),
    (Block(), "elementwise"), (nn.CrossEntropyLoss(), "other"), (None, "other")])
def test_layers_are_classified_by_module_type(module: nn.Module | None, expected: str):
    assert category(module) == expected


# --- the CPU path end to end ----------------------------------------------------------------------------------------

def test_cpu_rows_add_up_to_the_profiled_step(cpu_train: BandwidthResult):
    rows = sum(r.ms_per_step for r in cpu_train.layers)
    assert rows == pytest.approx(cpu_train.attributed_ms)
    assert cpu_train.profiled_mean_step_ms * (1 - CPU_SUM_TOLERANCE) <= rows <= cpu_train.profiled_mean_step_ms
    other = next(r for r in cpu_train.layers if r.name == OTHER_ROW)
    assert other.ms_per_step < 0.5 * rows  # the layers, not the glue, hold most of the time
    assert sum(cpu_train.shares.values()) == pytest.approx(1.0)


def test_cpu_rows_are_the_static_counts_rows_with_the_same_counts(cpu_train: BandwidthResult):
    spec = resolve("resnet")
    stats = count_model(build(spec, 32), spec.input_shape(2, 32), name="resnet", train=True)
    layers = {r.name: r for r in cpu_train.layers}
    assert [r.name for r in cpu_train.layers] == [*(s.name for s in stats.layers), OPTIMIZER_ROW, OTHER_ROW]
    for s in stats.layers:
        assert (layers[s.name].flops, layers[s.name].bytes) == (s.flops, s.bytes)
    conv = layers["b2.0.conv1"]
    assert conv.forward_ms > 0 and conv.backward_ms > 0
    assert conv.ms_per_step == pytest.approx(conv.forward_ms + conv.backward_ms)
    assert conv.flops_per_s == pytest.approx(conv.flops / (conv.ms_per_step / 1e3))
    assert conv.compute_roof == "fp32" and conv.bound in ("memory", "compute")
    assert cpu_train.flops == stats.totals.flops and cpu_train.bytes == stats.totals.bytes


def test_cpu_result_is_labelled_cpu_and_carries_no_gpu_figure(cpu_train: BandwidthResult):
    assert cpu_train.device_kind == "cpu" and cpu_train.device_name.startswith("CPU")
    assert cpu_train.peaks.kind == "cpu" and cpu_train.peaks.tf32_flops_per_s is None
    assert (cpu_train.datasheet, cpu_train.nvml, cpu_train.idle_ms) == (None, None, None)
    for fmt in ("table", "markdown"):
        text = format_bandwidth([cpu_train], fmt)
        assert text.lstrip("# ").startswith("measured on CPU")
        for gpu_word in ("CUDA", "kernel", "NVML", "datasheet", "TF32", "GPU idle", "HBM"):
            assert gpu_word not in text, gpu_word
    obj = json.loads(format_bandwidth([cpu_train], "json"))[0]
    assert obj["measured_on"].startswith("measured on CPU")
    assert (obj["source"], obj["gpu"], obj["bound"]) == ("measured", None, None)
    assert obj["model_source"].startswith("d2l")
    assert obj["nvml"] is None and obj["datasheet"] is None and obj["idle_ms"] is None
    csv_lines = format_bandwidth([cpu_train], "csv").splitlines()
    assert len(csv_lines) == 1 + len(cpu_train.layers) and all("CPU" in line for line in csv_lines[1:])


def test_inference_rows_have_no_backward_time(cpu_inference: BandwidthResult):
    assert cpu_inference.mode == "inference"
    assert all(r.backward_ms == 0 for r in cpu_inference.layers)
    assert not any(r.name == OPTIMIZER_ROW for r in cpu_inference.layers)
    assert "fwd ms" not in format_bandwidth([cpu_inference], "table")


def test_two_results_get_a_summary(cpu_train: BandwidthResult, cpu_inference: BandwidthResult):
    text = format_bandwidth([cpu_inference, cpu_train], "markdown")
    assert "### Summary" in text and text.count("### measured on CPU") == 2


def test_cli_times_a_tiny_model_on_the_cpu_and_draws_its_roofline(tmp_path: Path):
    plot, out = tmp_path / "roofline.png", tmp_path / "bw.txt"
    env = dict(os.environ, PROFILER_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "profiler", "bandwidth", "lenet", "--batch", "2", "--steps", "2",
                           "--warmup", "1", "--device", "cpu", "--output", str(out), "--plot", str(plot)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("profiler: timing on the CPU (1 thread)") and proc.stderr.count("\n") == 1
    text = out.read_text()
    assert text.startswith("measured on CPU") and "lenet" in text.splitlines()[0]
    assert text.splitlines()[1] == f"device peaks measured now; cached in {tmp_path / 'cache' / 'peaks.json'}"
    assert plot.read_bytes().startswith(PNG_MAGIC) and plot.stat().st_size > 10_000
    assert (tmp_path / "cache" / "peaks.json").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_device_cuda_without_a_gpu_is_a_one_line_error_suggesting_cpu(capsys: pytest.CaptureFixture[str]):
    assert main(["bandwidth", "lenet", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--device cpu" in err


def test_too_small_input_is_a_user_error(peaks_path: Path):
    with pytest.raises(ProfilerError, match="too small"):
        run_bandwidth(["alexnet"], [32], batch=1, steps=1, warmup=0, device="cpu", peaks_path=peaks_path)


def test_running_out_of_host_memory_is_exit_code_3(monkeypatch: pytest.MonkeyPatch):
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] . DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr("profiler.bandwidth.runner._measure", fail)
    peaks = DevicePeaks("CPU", "cpu", 1e10, 1e11)
    with pytest.raises(ProfilerError) as info:
        profile_config(resolve("lenet"), 28, 2, None, None, False, 1, 0, torch.device("cpu"), peaks, "test", {})
    assert info.value.exit_code == 3
    assert "1.00 TiB" in str(info.value) and "--batch" in str(info.value) and "\n" not in str(info.value)


def test_gpu_out_of_memory_message_says_what_was_needed_and_what_was_free():
    err = out_of_memory_error("vgg at [4096, 1, 224, 224] (training)",
                              "CUDA out of memory. Tried to allocate 24.50 GiB. GPU 0 has a total capacity of "
                              "79.19 GiB of which 3.12 GiB is free.", "GPU", 50 << 30, 78 << 30, 80 << 30)
    assert err.exit_code == 3
    assert str(err) == ("vgg at [4096, 1, 224, 224] (training) ran out of GPU memory: one allocation needed "
                        "24.50 GiB on top of the 50.00 GiB it held, with 78.00 GiB free of 80.00 GiB before the run; "
                        "try a smaller --batch or --size")


# --- NVML (mocked) ---------------------------------------------------------------------------------------------------

class FakeNvmlError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def _fake_nvml(utilization: bool = True, gpm: bool = False, init_fails: bool = False) -> types.SimpleNamespace:
    import pynvml

    def init() -> None:
        if init_fails:
            raise FakeNvmlError(12)

    def rates(handle: object) -> types.SimpleNamespace:
        if not utilization:
            raise FakeNvmlError(3)
        return types.SimpleNamespace(gpu=87, memory=41)

    def metrics_get(request: object) -> object:
        request.metrics[0].value = 42.5
        request.metrics[0].nvmlReturn = 0
        return request

    return types.SimpleNamespace(
        NVML_ERROR_NOT_SUPPORTED=3, NVML_SUCCESS=0, NVMLError=FakeNvmlError,
        NVML_GPM_METRICS_GET_VERSION=1, NVML_GPM_METRIC_DRAM_BW_UTIL=10,
        c_nvmlGpmMetricsGet_t=pynvml.c_nvmlGpmMetricsGet_t,
        nvmlInit=init, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: "handle", nvmlDeviceGetHandleByIndex=lambda index: "handle",
        nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(used=3 << 30),
        nvmlDeviceGetUtilizationRates=rates,
        nvmlGpmQueryDeviceSupport=lambda handle: types.SimpleNamespace(isSupportedDevice=int(gpm)),
        nvmlGpmSampleAlloc=pynvml.c_nvmlGpmSample_t, nvmlGpmSampleFree=lambda sample: None,
        nvmlGpmSampleGet=lambda handle, sample: sample, nvmlGpmMetricsGet=metrics_get)


def _sample(nvml: object, seconds: float = 0.05) -> NvmlSummary:
    import time

    with NvmlSampler(uuid="abc", interval_s=0.01, nvml=nvml) as sampler:
        time.sleep(seconds)
    return sampler.summary()


def test_missing_pynvml_is_reported_as_unavailable_not_raised(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml → ImportError
    summary = _sample(None)
    assert not summary.available and "nvidia-ml-py" in summary.reason
    assert all(m.mean is None and m.reason for m in summary.metrics.values())


def test_nvml_that_fails_to_start_is_reported_with_its_reason():
    summary = _sample(_fake_nvml(init_fails=True))
    assert not summary.available and "nvmlInit failed" in summary.reason and summary.timeline == []


def test_unsupported_metrics_are_null_with_a_reason_never_zero():
    summary = _sample(_fake_nvml(utilization=False, gpm=False))
    assert summary.available
    assert summary.metrics["used_memory_bytes"].mean == 3 << 30
    for key in ("gpu_util_percent", "memory_util_percent"):
        assert summary.metrics[key].mean is None and "NOT_SUPPORTED" in summary.metrics[key].reason
    assert "Hopper" in summary.metrics["dram_bw_util_percent"].reason
    assert all(entry["gpu_util_percent"] is None for entry in summary.timeline)


def test_gpm_dram_bandwidth_utilization_comes_from_sample_pairs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nvml_module, "GPM_MIN_INTERVAL_S", 0.02)
    summary = _sample(_fake_nvml(gpm=True), seconds=0.15)
    dram = summary.metrics["dram_bw_util_percent"]
    assert dram.mean == pytest.approx(42.5) and dram.samples >= 2
    assert summary.metrics["gpu_util_percent"].max == 87
    assert any("whole window" in note for note in summary.notes)


def test_the_real_nvml_here_never_raises():
    summary = _sample(None, seconds=0.02)
    assert summary.available or summary.reason.startswith("NVML unavailable")


# --- peaks -----------------------------------------------------------------------------------------------------------

def test_peaks_cache_keeps_each_device_and_survives_a_damaged_file(tmp_path: Path):
    path = tmp_path / "sub" / "peaks.json"
    h100 = DevicePeaks("NVIDIA H100 80GB HBM3", "cuda", 2.9e12, 5.1e13, 3.8e14, 3.0e14, "test", {"date": "d"})
    cpu = DevicePeaks("CPU (x86_64), 1 thread", "cpu", 3e10, 1e11)
    assert save_cached(h100, path) is None and save_cached(cpu, path) is None
    assert load_cached(h100.device, path) == h100 and load_cached(cpu.device, path) == cpu
    assert load_cached("NVIDIA H200", path) is None
    path.write_text("{not json")
    assert load_cached(h100.device, path) is None
    assert save_cached(h100, path) is None and load_cached(h100.device, path) == h100


def test_peaks_are_measured_once_then_read_from_the_cache(tmp_path: Path):
    path = tmp_path / "peaks.json"
    first, source = device_peaks(torch.device("cpu"), "CPU test", {"date": "today"}, path)
    assert source.startswith("measured now") and first.copy_bytes_per_s > 0 and first.fp32_flops_per_s > 0
    again, source = device_peaks(torch.device("cpu"), "CPU test", {}, path)
    assert again == first and source == (f"reused from the cache {path}, measured today by an earlier run "
                                          "(--remeasure-peaks measures them again)")


@pytest.fixture
def counted_calibrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """CPU calibrations replaced by a stand-in that records each call (the real one takes a second)."""
    calls: list[str] = []

    def calibrate(device: torch.device, device_name: str, provenance: dict) -> DevicePeaks:
        calls.append(device_name)
        return DevicePeaks(device_name, "cpu", 2e10, 1e11, method="stand-in", provenance={"date": f"call {len(calls)}"})

    monkeypatch.setattr(peaks_module, "measure_cpu_peaks", calibrate)
    return calls


def test_peaks_from_another_calibration_or_asked_again_are_measured_again(tmp_path: Path,
                                                                          counted_calibrations: list[str]):
    path = tmp_path / "peaks.json"
    old = DevicePeaks("CPU test", "cpu", 3e10, 1.9e11, method="1024×1024 fp32 matmul", provenance={"date": "old"})
    path.write_text(json.dumps({old.device: asdict(old)}))  # written by the first calibration: no version
    assert load_cached(old.device, path) is None
    peaks, source = device_peaks(torch.device("cpu"), old.device, {}, path)
    assert counted_calibrations == [old.device] and source == f"measured now; cached in {path}"
    assert json.loads(path.read_text())[old.device][VERSION_KEY] == CALIBRATION_VERSION
    assert device_peaks(torch.device("cpu"), old.device, {}, path) == (
        peaks, f"reused from the cache {path}, measured call 1 by an earlier run (--remeasure-peaks measures them "
               "again)")
    again, source = device_peaks(torch.device("cpu"), old.device, {}, path, remeasure=True)
    assert len(counted_calibrations) == 2 and again.provenance["date"] == "call 2"
    assert source == f"measured now (--remeasure-peaks); cached in {path}"


def test_cli_says_where_the_peaks_came_from_and_remeasures_them_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        counted_calibrations: list[str]):
    monkeypatch.setenv("PROFILER_CACHE_DIR", str(tmp_path))
    run = ["bandwidth", "lenet", "--batch", "2", "--steps", "2", "--warmup", "0", "--device", "cpu"]
    lines = []
    for extra in ([], [], ["--remeasure-peaks"]):
        assert main([*run, *extra]) == 0
        lines.append(capsys.readouterr().out.splitlines()[1])
    assert lines == [f"device peaks measured now; cached in {tmp_path / 'peaks.json'}",
                     f"device peaks reused from the cache {tmp_path / 'peaks.json'}, measured call 1 by an earlier "
                     "run (--remeasure-peaks measures them again)",
                     f"device peaks measured now (--remeasure-peaks); cached in {tmp_path / 'peaks.json'}"]
    assert len(counted_calibrations) == 2
    assert main(["bandwidth", "lenet", "--predict", "--remeasure-peaks"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop --remeasure-peaks" in err


def test_the_cpu_roof_is_the_best_of_its_convolutions_and_matmuls(monkeypatch: pytest.MonkeyPatch):
    assert {kernel.op for kernel in CPU_KERNELS} == {OpClass.CONV_FORWARD, OpClass.MATMUL}
    rates = {kernel.label: 2e11 if kernel.op is OpClass.CONV_FORWARD and kernel.shape[3] == 5 else 1e11
             for kernel in CPU_KERNELS}
    monkeypatch.setattr(peaks_module, "_cpu_kernel_rates", lambda kernels: rates)
    peaks = measure_cpu_peaks(torch.device("cpu"), "CPU test", {})
    assert peaks.fp32_flops_per_s == 2e11
    assert "FP32 roof = the best of 6 convolutions and matmuls, 5×5 conv 8×96×12×12 → 256 (GFLOP/s:" in peaks.method


@pytest.mark.parametrize("kernel", CPU_KERNELS, ids=lambda kernel: kernel.label)
def test_each_calibration_kernel_counts_what_the_static_counter_counts(kernel: CpuKernel):
    if kernel.op is OpClass.MATMUL:
        m, k, n = kernel.shape
        layer, shape = nn.Linear(k, n, bias=False), (m, k)
    else:
        batch, c_in, c_out, size_k, size = kernel.shape
        layer, shape = nn.Conv2d(c_in, c_out, size_k, padding=size_k // 2, bias=False), (batch, c_in, size, size)
    assert count_layer(layer, shape).flops == kernel.flops
    assert tuple(kernel.work()().shape) == count_model(layer.to("meta"), shape).layers[-1].output_shape


def test_calibration_kernel_rates_are_measured_for_every_kernel():
    small = (CpuKernel(OpClass.MATMUL, (64, 64, 64)), CpuKernel(OpClass.CONV_FORWARD, (1, 4, 4, 3, 8)))
    rates = _cpu_kernel_rates(small, rounds=2)
    assert list(rates) == [kernel.label for kernel in small] and all(rate > 0 for rate in rates.values())


def test_step_spread_is_the_larger_interquartile_range_in_percent_of_the_step():
    # inclusive quartiles of 3 values: halfway between the first two and between the last two
    assert step_spread_percent([10.0, 11.0, 12.0], [10.0, 10.0, 10.0]) == pytest.approx(100 * 1.0 / 11.0)
    # of 4 values: at positions 0.75 and 2.25 of the sorted list, 9.75 and 12.25; the first list's median is 10
    assert step_spread_percent([10.0, 10.0, 10.0, 10.0], [9.0, 10.0, 12.0, 13.0]) == pytest.approx(100 * 2.5 / 10)
    assert step_spread_percent([10.0], [10.0, 11.0]) is None


@pytest.mark.parametrize(("overhead", "spread", "words"), [
    (-2.0, 4.0, "profiler overhead -2.0 %, within noise: smaller than the step times' spread (4.0 %, interquartile "
                "range)"),
    (3.5, 4.0, "profiler overhead +3.5 %, within noise"),
    (-12.0, 3.0, "profiler overhead -12.0 %: the profiled steps ran faster than the unprofiled ones by more than the "
                 "step times' spread (3.0 %, interquartile range); the machine's load or clock changed during the "
                 "run: run again on a quiet machine"),
    (30.0, 2.0, "profiler overhead +30.0 %, beyond the step times' spread (2.0 %, interquartile range)"),
    (-1.0, None, "profiler overhead -1.0 % (too few steps to tell it from noise: raise --steps)"),
])
def test_the_overhead_says_whether_it_is_within_the_noise(cpu_inference: BandwidthResult, overhead: float,
                                                          spread: float | None, words: str):
    result = replace(cpu_inference, overhead_percent=overhead, step_spread_percent=spread)
    assert result.overhead_within_noise == (spread is not None and abs(overhead) <= spread)
    assert words in format_bandwidth([result], "table")


def test_a_real_run_names_every_row_above_a_roof_in_its_notes(cpu_train: BandwidthResult):
    # on a quiet machine no row is above (the CPU roof is the best of the layers' own kinds of kernel); on a busy
    # one the calibration can run slow, and then the output must say so rather than show the row silently
    above = [r.name for r in cpu_train.layers if (r.compute_peak_fraction or 0) > ROOF_TOLERANCE]
    cached = [r.name for r in cpu_train.layers if (r.bandwidth_peak_fraction or 0) > ROOF_TOLERANCE]
    assert cpu_train.notes[1:] == beyond_roof_notes(cpu_train.layers, cuda=False)  # after the training-step note
    assert bool(above) == any("above the measured compute roof" in note for note in cpu_train.notes)
    assert bool(cached) == any("stayed in the CPU's caches" in note for note in cpu_train.notes)


def test_a_measured_run_reports_its_step_spread(cpu_inference: BandwidthResult):
    assert cpu_inference.step_spread_percent is not None and cpu_inference.step_spread_percent >= 0
    assert json.loads(format_bandwidth([cpu_inference], "json"))[0]["step_spread_percent"] is not None


def _timed(name: str, compute: float | None, bandwidth: float | None, nbytes: int = 3 << 20) -> LayerTiming:
    return LayerTiming(name, "Conv2d", "conv", 1.0, bytes=nbytes, compute_peak_fraction=compute,
                       bandwidth_peak_fraction=bandwidth)


def test_layers_above_a_roof_are_named_with_the_reason():
    rows = [_timed("a", 1.04, 0.5), _timed("b", 1.31, 0.2), _timed("c", 0.5, 2.14, 2 << 20), _timed("d", None, None)]
    compute, cached = beyond_roof_notes(rows, cuda=False)
    assert compute.startswith("1 layer(s) ran above the measured compute roof (b Conv2d 131 % of it): the "
                              "calibration ran slower") and compute.endswith("(--remeasure-peaks)")
    assert cached.startswith("1 layer(s) moved their counted bytes faster than the measured copy bandwidth (c Conv2d "
                             "214 % of it; at most 2.0 MiB counted): their tensors stayed in the CPU's caches")
    assert beyond_roof_notes(rows[:1], cuda=True) == []
    assert "the GPU's L2 cache" in beyond_roof_notes([_timed("c", None, 1.2)], cuda=True)[0]


def test_cache_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PROFILER_CACHE_DIR", str(tmp_path))
    assert cache_file() == tmp_path / "peaks.json"
    monkeypatch.delenv("PROFILER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_file() == tmp_path / "xdg" / "profiler" / "peaks.json"


@pytest.mark.parametrize(("device", "name", "bandwidth"), [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", 3.35e12), ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe", 2.0e12),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL", 3.9e12), ("NVIDIA H200", "NVIDIA H200", 4.8e12),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", 2.039e12),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100-SXM4-40GB", 1.555e12), ("NVIDIA A10", "NVIDIA A10", 0.6e12)])
def test_datasheet_entry_is_found_by_device_name(device: str, name: str, bandwidth: float):
    sheet = datasheet_for(device)
    assert sheet.name == name and sheet.bytes_per_s == bandwidth and "datasheet" in sheet.source
    assert sheet.tf32_flops_per_s > sheet.fp32_flops_per_s


def test_unknown_gpus_have_no_datasheet_entry():
    assert datasheet_for("NVIDIA GeForce GTX 1080") is None and datasheet_for("CPU (x86_64)") is None


# --- formatting and plotting a GPU result (synthetic records: no GPU needed) -----------------------------------------

def _gpu_result(cpu: BandwidthResult) -> BandwidthResult:
    """The CPU result dressed as an H100 one, to exercise the GPU formatting and roofs."""
    peaks = DevicePeaks("NVIDIA H100 80GB HBM3", "cuda", 2.95e12, 5.2e13, 3.7e14, 3.1e14, "test", {})
    nvml = NvmlSummary(True, interval_s=0.02, window_s=0.4, metrics={
        "used_memory_bytes": MetricSummary("bytes", 1 << 30, 1.5 * (1 << 30), 2 << 30, 20),
        "gpu_util_percent": MetricSummary("%", 10, 50, 90, 20),
        "memory_util_percent": MetricSummary("%", 5, 20, 30, 20),
        "dram_bw_util_percent": MetricSummary("%", reason="not supported: GPM metrics need a Hopper or newer GPU")})
    return replace(cpu, device_kind="cuda", device_name=peaks.device, peaks=peaks, idle_ms=0.1, nvml=nvml,
                   datasheet=datasheet_for(peaks.device), settings={"float32_matmul_precision": "highest",
                   "cudnn_allow_tf32": True, "cudnn_benchmark": False, "cpu_threads": 1},
                   provenance={"device": peaks.device, "driver": "550", "torch": "2.11", "cuda": "13.0",
                               "cudnn": "91900", "date": "today"})


def test_gpu_results_name_the_gpu_and_show_measured_peaks_beside_the_datasheet(cpu_train: BandwidthResult):
    text = format_bandwidth([_gpu_result(cpu_train)], "table")
    assert text.startswith("measured on NVIDIA H100 80GB HBM3 (CUDA)")
    assert "kernel ms/step" in text and "2.95 TB/s (datasheet 3.35 TB/s)" in text
    assert "DRAM bandwidth utilization (GPM): n/a (not supported" in text
    assert "GPU utilization 10 / 50.0 / 90 %" in text


def test_roofline_png_is_drawn_for_cpu_and_gpu_results(cpu_train: BandwidthResult, tmp_path: Path):
    path = tmp_path / "roofline.png"
    roofline_plot([cpu_train, _gpu_result(cpu_train)], path)
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 20_000


def test_every_text_of_the_roofline_lies_inside_the_png(cpu_train: BandwidthResult):
    note = "a provenance line as long as benchmarks/gpu_bandwidth.py writes: " + "--sizes 96 224 --batch 128 " * 6
    figure = roofline_figure([cpu_train, _gpu_result(cpu_train)], columns=1, note=note)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    width, height = figure.get_size_inches()
    tight = figure.get_tightbbox(renderer)  # every drawn artist (ticks in view, legends, annotations), in inches
    assert tight.x0 >= 0 and tight.y0 >= 0 and tight.x1 <= width and tight.y1 <= height, tight
    texts = [*figure.texts, *(t for ax in figure.axes for t in (*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label,
                                                                *ax.get_legend().get_texts()))]

    def inside(text) -> bool:  # a matplotlib Text
        box, page = text.get_window_extent(renderer), figure.bbox
        return page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1

    outside = [t.get_text() for t in texts if t.get_text() and not inside(t)]
    assert not outside and len(texts) > 20
    footnotes = [t.get_text() for t in texts if "layers drawn" in t.get_text()]
    assert len(footnotes) == 2 and all(t.endswith("rows not drawn (no counted FLOPs, bytes or time)")
                                       for t in footnotes)


def test_a_result_without_drawable_layers_still_gives_a_png(cpu_train: BandwidthResult, tmp_path: Path):
    empty = replace(cpu_train, layers=[LayerTiming("x", "ReLU", "elementwise", 1.0)])
    roofline_plot([empty], tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)


# --- CUDA ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cuda_peaks_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peaks cache of its own, so that the CUDA tests calibrate this GPU once and never read the user's cache."""
    return tmp_path_factory.mktemp("cuda_cache") / "peaks.json"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: kernel attribution, NVML, GPU peaks")
def test_cuda_kernels_are_attributed_to_layers(cuda_peaks_path: Path):
    # a configuration of the reference (ResNet-18, 96×96, batch 128, training), where issue 10's checks apply
    [result] = run_bandwidth(["resnet"], [96], batch=128, train=True, steps=10, warmup=5, device="cuda",
                             peaks_path=cuda_peaks_path, min_profiled_s=0.3)
    assert result.device_kind == "cuda" and result.peaks.kind == "cuda" and result.idle_ms is not None
    assert result.busy_ms is not None and 0 < result.busy_ms <= result.profiled_mean_step_ms
    assert bandwidth_problems(json.loads(format_bandwidth([result], "json"))[0], asdict(result.peaks)) == []
    assert result.nvml is not None and (result.nvml.available or result.nvml.reason)
    assert format_bandwidth([result], "table").startswith(f"measured on {result.device_name} (CUDA)")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: peak calibration")
def test_cuda_peaks_are_plausible(cuda_peaks_path: Path):
    peaks, _ = device_peaks(torch.device("cuda"), torch.cuda.get_device_name(), {}, cuda_peaks_path)
    assert 1e11 < peaks.copy_bytes_per_s < 1e13
    assert 1e12 < peaks.fp32_flops_per_s < peaks.tensor_core_flops_per_s < 2e15


# --- committed GPU results --------------------------------------------------------------------------------------------

def _sound_gpu_run(cpu: BandwidthResult) -> dict:
    """The CPU result dressed as a GPU run that passes every check: no kernel outside a layer, the rows equal to the
    busy time, a 2 % overhead, and peaks far above every layer."""
    run = json.loads(format_bandwidth([_gpu_result(cpu)], "json"))[0]
    run["provenance"]["l2_cache_bytes"] = 0
    run["layers"][-1]["ms_per_step"] = 0.0  # (other)
    run["attributed_ms"] = run["busy_ms"] = sum(layer["ms_per_step"] for layer in run["layers"])
    run["overhead_percent"] = 2.0
    return run


FAST_PEAKS = {"fp32_flops_per_s": 1e15, "tf32_flops_per_s": 1e15, "conv_flops_per_s": None, "copy_bytes_per_s": 1e15}


def test_physical_sense_check_flags_a_layer_above_its_roof(cpu_train: BandwidthResult):
    run = _sound_gpu_run(cpu_train)
    assert bandwidth_problems(run, FAST_PEAKS) == []
    slow = bandwidth_problems(run, dict(FAST_PEAKS, fp32_flops_per_s=1.0))
    assert slow and all("above the measured fp32 roof 1" in p for p in slow)
    assert any("above the measured copy bandwidth" in p for p in bandwidth_problems(
        run, dict(FAST_PEAKS, copy_bytes_per_s=1.0)))


def test_physical_sense_check_wants_95_percent_of_busy_time_on_layers(cpu_train: BandwidthResult):
    run = _sound_gpu_run(cpu_train)
    run["layers"][-1]["ms_per_step"] = 0.06 * run["busy_ms"]  # kernels no layer claimed, counted in the rows
    run["attributed_ms"] = run["busy_ms"]
    [problem] = bandwidth_problems(run, FAST_PEAKS)
    assert problem.startswith("94.0 % of GPU busy time attributed to a layer")


def test_physical_sense_check_wants_the_rows_to_add_up_to_the_busy_time(cpu_train: BandwidthResult):
    run = _sound_gpu_run(cpu_train)
    run["busy_ms"] = run["attributed_ms"] / 0.9  # kernels the rows missed
    problems = bandwidth_problems(run, FAST_PEAKS)
    assert len(problems) == 2 and "more than 5 % apart" in problems[1]
    run["busy_ms"] = run["attributed_ms"] / 0.96
    assert bandwidth_problems(run, FAST_PEAKS) == []


def test_physical_sense_check_wants_an_overhead_of_at_most_5_percent(cpu_train: BandwidthResult):
    run = dict(_sound_gpu_run(cpu_train), overhead_percent=5.5)
    assert bandwidth_problems(run, FAST_PEAKS) == ["profiler overhead 5.5 % (at most 5 %)"]
    assert bandwidth_problems(dict(run, busy_ms=None), FAST_PEAKS)[0].startswith("no GPU busy time recorded")


def test_committed_gpu_results_make_physical_sense():
    paths = sorted(DATA_DIR.glob("bandwidth_*.json"))
    runs = [(path, doc, run) for path in paths for doc in [json.loads(path.read_text())] for run in doc["runs"]
            if run["device_kind"] == "cuda"]
    if not runs:
        pytest.skip("no GPU bandwidth result committed under reports/data/ yet: run `PYTHONPATH=. python "
                    "benchmarks/gpu_bandwidth.py --out reports/data` on a GPU and commit bandwidth_<gpu>.json")
    problems = {}
    for path, doc, run in runs:
        assert doc["provenance"]["device"] and doc["provenance"]["driver"] and doc["provenance"]["date"], path.name
        found = bandwidth_problems(run, doc["peaks"])
        if found:
            problems[f"{path.name}: {run['model']} {run['input_shape']} {run['mode']}"] = found
    assert not problems


def test_measured_runs_take_the_optimizer_and_dtype_of_the_step_protocol():
    from profiler.bandwidth.runner import run_bandwidth

    [result] = run_bandwidth(["lenet"], [28], batch=2, train=True, steps=2, warmup=1, device="cpu",
                             optimizer="adam", dtype="bfloat16")
    assert (result.optimizer, result.dtype) == ("adam", "bfloat16")
    update = next(row for row in result.layers if row.name == OPTIMIZER_ROW)
    assert update.type == "Adam" and update.ms_per_step > 0
    assert "Adam lr 0.001" in " ".join(result.notes)
