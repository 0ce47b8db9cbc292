"""The time model (profiler/bandwidth/{kernels,timemodel,fit,predict}.py): what is exact by construction — the
roofline per kernel, the roof PyTorch's defaults choose per dtype and card, rows adding up to the step, the step
simulation with host costs, the kernels each op launches and their bytes, the optimizer's update — the command line,
and the accuracy of the committed fit, recomputed here from the committed measurements (leave-one-model-out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from profiler.bandwidth.fit import (
    Problem,
    bandwidth_measurements,
    committed_copy_roof,
    committed_measurements,
    fit_and_check,
)
from profiler.bandwidth.kernels import (
    CHUNK_ELEMENTS,
    MAX_BLOCKS_PER_LAUNCH,
    Kernel,
    foreach_launches,
    nhwc_convolutions,
    optimizer_kernels,
    step_kernels,
)
from profiler.bandwidth.predict import config_kernels, count_and_predict_step, predict_step
from profiler.bandwidth.timemodel import (
    COEFFICIENTS,
    NAMES,
    Calibration,
    CopyRoof,
    committed_calibration,
    host_seconds,
    kernel_seconds,
    pack,
    roof_precision,
    simulate_steps,
    wave_share,
)
from profiler.catalogue import GPUS, Precision, gpu_spec
from profiler.cli import main
from profiler.counting import count_model
from profiler.format.bandwidth import format_bandwidth
from profiler.format.plots import roofline_plot
from profiler.kinds import OPTIMIZER_ROW, Bound, OpClass, Phase
from profiler.models import build, resolve

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "reports" / "data"
FP32 = 4


#: A streaming roof for tests: a copy at 4.2 of the H200's 4.8 TB/s (share 0.875).
COPY = CopyRoof("h200", 4.2e12, 4.8e12, "test")


def calibration(**values: float) -> Calibration:
    """Coefficients for a test: every efficiency 0.5, no floor, 10 µs per host call, unless given."""
    base = {name: 0.5 for name in NAMES} | {"kernel_floor_us": 0.0, "host_inference_call_us": 10.0,
                                            "host_forward_call_us": 10.0, "host_backward_call_us": 10.0}
    return Calibration(base | values, ["test"], "test", "today", COPY)


def kernel(op_class: OpClass, flops: int = 0, nbytes: int = 0, host_calls: int = 1,
           phase: Phase = Phase.FORWARD, layer: str = "x", recorded: bool = False,
           gemm: tuple[int, int, int] | None = None) -> Kernel:
    return Kernel("test", op_class, layer, phase, flops, nbytes, host_calls, recorded, gemm)


# --------------------------------------------------------------------------------------------- the roofline

def test_twice_the_flops_on_the_compute_roof_takes_twice_the_time():
    h100 = gpu_spec("h100")
    flops = 10**12  # 1 TFLOP against 2 kB: far above the ridge point, on the compute roof
    arrays = pack([([kernel(OpClass.CONV_FORWARD, flops, 2048), kernel(OpClass.CONV_FORWARD, 2 * flops, 2048)],
                    h100, "float32")], COPY)
    seconds, compute_bound = kernel_seconds(arrays, calibration().vector())
    assert compute_bound.tolist() == [True, True]
    assert seconds[1] == pytest.approx(2 * seconds[0], rel=1e-12)
    assert seconds[0] == pytest.approx(flops / (0.5 * 494.5e12), rel=1e-12)  # H100 dense TF32, efficiency 0.5


def test_a_bandwidth_kernel_takes_its_bytes_over_the_efficient_streaming_bandwidth_plus_the_floor():
    h200, h100 = gpu_spec("h200"), gpu_spec("h100")
    big = kernel(OpClass.ELEMENTWISE, 0, 42 * 10**9)
    arrays = pack([([big], h200, "float32"), ([big], h100, "float32")], COPY)
    seconds, compute_bound = kernel_seconds(arrays, calibration(e_elementwise=0.8, kernel_floor_us=3.0).vector())
    assert not compute_bound.any()
    assert seconds[0] == pytest.approx(42e9 / (0.8 * 4.2e12) + 3e-6, rel=1e-12)  # 12.5 ms + 3 µs
    # the H100 streams at the same share (0.875) of its datasheet 3.35 TB/s
    assert seconds[1] == pytest.approx(42e9 / (0.8 * 0.875 * 3.35e12) + 3e-6, rel=1e-12)


def test_the_optimizer_update_streams_at_the_elementwise_efficiency():
    h200 = gpu_spec("h200")
    arrays = pack([([kernel(OpClass.OPTIMIZER, 0, 42 * 10**9, phase=Phase.OPTIMIZER)], h200, "float32")], COPY)
    [seconds], _ = kernel_seconds(arrays, calibration(e_elementwise=0.8).vector())
    assert seconds == pytest.approx(42e9 / (0.8 * 4.2e12), rel=1e-12)
    assert "e_optimizer" not in NAMES and len(COEFFICIENTS) == 12


def test_committed_streaming_roof_is_the_copy_measured_on_the_h200():
    reference = json.loads((DATA / "reference_h200_batch128.json").read_text())
    copy = committed_copy_roof(DATA)
    assert (copy.card, copy.copy_bytes_per_s, copy.datasheet_bytes_per_s) == (
        "h200", reference["copy_bandwidth_Bps"], 4.8e12)
    assert copy.share == pytest.approx(4.219091e12 / 4.8e12, rel=1e-6)
    assert committed_calibration().copy == copy


# ------------------------------------------------------------------------------------------- wave share

def test_wave_share_counts_128_by_128_tiles_over_the_sms():
    assert wave_share((1, 128, 4096), 132) == pytest.approx(32 / 132)  # AlexNet's classifier: 32 tiles
    assert wave_share((1, 128, 4097), 132) == pytest.approx(33 / 132)
    assert wave_share((1, 128 * 12, 128 * 11), 132) == 1.0            # 132 tiles: one full wave
    assert wave_share((1, 128 * 133, 128), 132) == pytest.approx(133 / 264)  # a second wave of one tile
    assert wave_share((3, 1, 1), 108) == pytest.approx(3 / 108)       # batched: one tile per batch
    assert wave_share(None, 132) == 1.0


def test_sm_counts_are_the_catalogues_and_the_h200s_was_measured():
    reference = json.loads((DATA / "reference_h200_batch128.json").read_text())
    assert GPUS["h200"].sm_count == reference["provenance"]["sm_count"] == 132
    # CUDA cores ÷ FP32 cores per SM
    assert [GPUS[key].sm_count for key in ("h100-pcie", "a100-40gb", "l4", "t4", "v100-16gb", "rtx3090")] == [
        114, 108, 58, 40, 80, 82]
    assert all(spec.sources["sm_count"] for spec in GPUS.values())


def test_a_gemm_of_few_tiles_runs_at_its_share_of_the_sms():
    h200 = gpu_spec("h200")
    flops = 2 * 128 * 4096 * 4096
    arrays = pack([([kernel(OpClass.MATMUL, flops, 4096, gemm=(1, 128, 4096)),
                     kernel(OpClass.MATMUL, flops, 4096)], h200, "float32")], COPY)
    seconds, compute_bound = kernel_seconds(arrays, calibration().vector())
    assert compute_bound.all()
    assert seconds[0] == pytest.approx(flops / (0.5 * 32 / 132 * 67e12), rel=1e-12)  # FP32 CUDA cores
    assert seconds[0] == pytest.approx(seconds[1] * 132 / 32, rel=1e-12)


def test_matrix_products_and_convolutions_carry_their_gemm_output():
    kernels = step_kernels(_Net().to("meta"), (2, 1, 8, 8), train=True)
    gemm = {k.op: k.gemm for k in kernels}
    assert gemm["convolution"] == (1, 2 * 6 * 6, 4)      # a row per sample and output position, a column per channel
    assert gemm["addmm"] == (1, 2, 5)
    assert gemm["convolution_backward (weight gradient)"] is None  # split along its reduction, not tiled
    assert gemm["relu"] is None
    grouped = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Flatten()).to("meta")
    kernels = [k for k in step_kernels(grouped, (2, 3, 10, 10), train=True) if k.layer == "1"]
    gemm = {k.op: k.gemm for k in kernels}
    assert gemm["convolution"] == (2, 2 * 8 * 8, 4)  # per group: 4 of the 8 output channels
    assert gemm["convolution_backward (input gradient)"] == (2, 2 * 8 * 8, 2)  # 2 of the 4 input channels


@pytest.mark.parametrize(("card", "dtype", "op_class", "expected"), [
    ("h100", "float32", OpClass.CONV_FORWARD, Precision.TF32),   # cudnn.allow_tf32 is True by default
    ("h100", "float32", OpClass.CONV_WEIGHT_GRAD, Precision.TF32),
    ("h100", "float32", OpClass.MATMUL, Precision.FP32),         # cuda.matmul.allow_tf32 is False by default
    ("h100", "bfloat16", OpClass.CONV_FORWARD, Precision.BF16),
    ("h100", "bfloat16", OpClass.MATMUL, Precision.BF16),
    ("a100-80gb", "float16", OpClass.MATMUL, Precision.FP16),
    ("v100-16gb", "float32", OpClass.CONV_FORWARD, Precision.FP32),  # compute capability 7.0: no TF32
    ("t4", "float32", OpClass.CONV_INPUT_GRAD, Precision.FP32),
    ("t4", "bfloat16", OpClass.MATMUL, Precision.FP32),          # no bf16 tensor cores before 8.0
    ("t4", "float16", OpClass.CONV_FORWARD, Precision.FP16),
])
def test_roof_follows_pytorch_defaults_per_dtype_and_card(card: str, dtype: str, op_class: OpClass,
                                                          expected: Precision):
    assert roof_precision(GPUS[card], dtype, op_class) is expected


def test_bandwidth_classes_have_no_compute_roof():
    for op_class in (OpClass.NORMALIZATION, OpClass.ELEMENTWISE, OpClass.POOLING, OpClass.REDUCTION,
                     OpClass.OPTIMIZER):
        assert roof_precision(GPUS["h100"], "float32", op_class) is None


def test_predicted_rows_name_the_roof_of_their_card():
    on_h100 = {r.name: r for r in predict_step("alexnet", 96, batch=8, gpu="h100", calibration=calibration()).layers}
    on_v100 = {r.name: r for r in predict_step("alexnet", 96, batch=8, gpu="v100-16gb",
                                               calibration=calibration()).layers}
    assert (on_h100["0"].compute_roof, on_h100["14"].compute_roof) == ("tf32", "fp32")  # conv, linear
    assert (on_v100["0"].compute_roof, on_v100["14"].compute_roof) == ("fp32", "fp32")
    assert on_h100["0"].compute_peak_fraction == pytest.approx(on_h100["0"].flops_per_s / 494.5e12)


# ------------------------------------------------------------------------------------------ steps and rows

def test_gpu_bound_steps_queue_up_and_take_the_sum_of_their_kernels():
    kernel_s = np.array([10e-6, 20e-6, 30e-6])
    host_s = np.array([1e-6, 1e-6, 1e-6])
    steps = simulate_steps(np.array([0]), kernel_s, host_s)
    assert steps.step_s[0] == pytest.approx(60e-6) and steps.busy_s[0] == pytest.approx(60e-6)
    assert steps.host_s[0] == pytest.approx(3e-6)


def test_host_bound_steps_take_the_host_time_in_steady_state():
    # launches at 10, 20, 30 µs, kernels of 1 µs: the first step ends at 31 µs, leaving the GPU 1 µs behind the host
    # when the next begins, so every later step lasts 30 µs: the host's time
    steps = simulate_steps(np.array([0]), np.full(3, 1e-6), np.full(3, 10e-6))
    assert steps.step_s[0] == pytest.approx(30e-6)
    assert steps.busy_s[0] == pytest.approx(3e-6)


def test_host_prices_calls_by_whether_autograd_records_them():
    kernels = [kernel(OpClass.ELEMENTWISE, host_calls=2), kernel(OpClass.ELEMENTWISE, host_calls=3, recorded=True),
               kernel(OpClass.ELEMENTWISE, host_calls=1, phase=Phase.BACKWARD),
               kernel(OpClass.OPTIMIZER, host_calls=4, phase=Phase.OPTIMIZER)]
    arrays = pack([(kernels, gpu_spec("h200"), "float32")], COPY)
    costs = calibration(host_inference_call_us=5.0, host_forward_call_us=30.0, host_backward_call_us=7.0)
    assert host_seconds(arrays, costs.vector()) == pytest.approx([10e-6, 90e-6, 7e-6, 20e-6])


def test_steps_of_several_configurations_are_simulated_apart():
    kernel_s = np.array([10e-6, 20e-6, 1e-6, 1e-6, 1e-6])
    host_s = np.array([1e-6, 1e-6, 10e-6, 10e-6, 10e-6])
    steps = simulate_steps(np.array([0, 2]), kernel_s, host_s)
    assert steps.step_s == pytest.approx([30e-6, 30e-6])


def test_layers_add_up_to_the_step():
    result = predict_step("resnet", 96, batch=32, train=True, gpu="h100")
    rows = sum(r.ms_per_step for r in result.layers)
    assert rows == pytest.approx(result.attributed_ms, rel=1e-12)
    assert result.attributed_ms + result.idle_ms == pytest.approx(result.step_ms, rel=1e-12)
    assert sum(r.share for r in result.layers) == pytest.approx(1.0)
    for row in result.layers:
        if row.name != OPTIMIZER_ROW:
            assert row.forward_ms + row.backward_ms == pytest.approx(row.ms_per_step, abs=1e-12)


def test_a_large_gpu_bound_step_is_its_rows():
    result = predict_step("vgg", 224, batch=128, gpu="h100")
    assert result.bound in (Bound.COMPUTE, Bound.MEMORY) and result.idle_ms == pytest.approx(0.0, abs=1e-9)
    assert sum(r.ms_per_step for r in result.layers) == pytest.approx(result.step_ms, rel=1e-12)


def test_a_tiny_model_at_batch_1_is_host_bound():
    result = predict_step("lenet", 28, batch=1, gpu="h100")
    assert result.bound == Bound.HOST
    assert result.host_ms > result.attributed_ms and result.idle_ms > 0
    assert result.step_ms >= result.host_ms


def test_predicted_rows_carry_the_static_counts():
    spec_counts = count_model(build(resolve("nin"), 96), (16, 1, 96, 96), train=True)
    result = predict_step("nin", 96, batch=16, train=True, gpu="h200")
    rows = {r.name: r for r in result.layers}
    assert [r.name for r in result.layers] == [*(s.name for s in spec_counts.layers), OPTIMIZER_ROW]
    for layer in spec_counts.layers:
        assert (rows[layer.name].flops, rows[layer.name].bytes) == (layer.flops, layer.bytes)
    assert result.flops == spec_counts.totals.flops and result.bytes == spec_counts.totals.bytes


# -------------------------------------------------------------------------------------- kernels per op

class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).flatten(1))


def test_kernels_per_op_follow_the_stated_convention():
    kernels = step_kernels(_Net().to("meta"), (2, 1, 8, 8), train=True)
    by_layer: dict[tuple[str, Phase], list[str]] = {}
    for k in kernels:
        by_layer.setdefault((k.layer, k.phase), []).append(k.op)
    # a 1-channel input and filter are channels-last already: no layout transform in forward
    assert by_layer[("conv", Phase.FORWARD)] == ["convolution", "convolution (bias add)"]
    # the input needs no gradient: weight and bias gradients only; the 4-channel grad_output is transposed
    assert by_layer[("conv", Phase.BACKWARD)] == ["convolution_backward (grad_output to channels-last)",
                                                  "convolution_backward (weight gradient)",
                                                  "convolution_backward (bias gradient)"]
    assert by_layer[("norm", Phase.FORWARD)] == ["add_",  # num_batches_tracked += 1
                                                 "native_batch_norm (statistics)", "native_batch_norm (normalize)"]
    assert len(by_layer[("norm", Phase.BACKWARD)]) == 2
    conv, bias = kernels[0], kernels[1]
    x, w, out = 2 * 1 * 8 * 8 * FP32, 4 * 1 * 3 * 3 * FP32, 2 * 4 * 6 * 6 * FP32
    assert (conv.op_class, conv.flops, conv.bytes) == (OpClass.CONV_FORWARD, 2 * 2 * 4 * 9 * 36, x + w + out)
    assert (bias.op_class, bias.flops, bias.bytes, bias.host_calls) == (OpClass.ELEMENTWISE, 0, 2 * out + 4 * FP32,
                                                                         0)
    assert by_layer[(OPTIMIZER_ROW, Phase.OPTIMIZER)] == ["_foreach_add_(params, grads, alpha=-lr)"]


def test_inference_batch_norm_is_one_elementwise_kernel_and_views_launch_none():
    kernels = step_kernels(_Net().to("meta"), (2, 1, 8, 8), train=False)
    assert [k.op for k in kernels] == ["convolution", "convolution (bias add)", "native_batch_norm", "relu", "addmm"]
    assert kernels[2].op_class is OpClass.ELEMENTWISE  # running statistics: a per-channel scale and shift
    assert sum(k.host_calls for k in kernels) > len([k for k in kernels if k.host_calls])  # flatten, t: views
    assert not any(k.recorded for k in kernels)


def test_cudnn_transposes_each_channels_first_operand_of_its_tensor_core_convolutions():
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 4, 1),
                        nn.Flatten()).to("meta")
    kernels = step_kernels(net, (2, 1, 6, 6), train=True)
    ops = {(layer, phase): [k.op.removeprefix("convolution").removeprefix("_backward") for k in kernels
                            if (k.layer, k.phase) == (layer, phase)] for layer in "012" for phase in Phase}
    assert ops[("0", Phase.FORWARD)] == ["", " (bias add)"]  # 1-channel image and filter: laid out alike
    assert ops[("1", Phase.FORWARD)] == [" (input to channels-last)", " (weight to channels-last)", "", " (bias add)"]
    assert ops[("2", Phase.FORWARD)] == [" (input to channels-last)", "", " (bias add)"]  # a 1×1 filter: alike
    assert ops[("1", Phase.BACKWARD)] == [" (grad_output to channels-last)", " (weight to channels-last)",
                                          " (input gradient)", " (input to channels-last)",
                                          " (grad_output to channels-last)", " (weight gradient)", " (bias gradient)"]
    transposes = [k for k in kernels if k.layer == "1" and k.phase is Phase.FORWARD][:2]
    assert [(k.op_class, k.bytes, k.host_calls) for k in transposes] == [
        (OpClass.ELEMENTWISE, 2 * 2 * 8 * 36 * FP32, 1), (OpClass.ELEMENTWISE, 2 * 16 * 8 * 9 * FP32, 0)]
    plain = step_kernels(net, (2, 1, 6, 6), train=True, nhwc=False)
    assert not any("channels-last" in k.op for k in plain)
    # forward 2 + 1, backward: layer 2 grad_output for its input gradient, input and grad_output for its weight
    # gradient, layer 1 the four above, layer 0 grad_output (its 1-channel input needs none, nor a gradient)
    assert len(plain) == len(kernels) - (3 + 3 + 4 + 1)
    assert sum(k.host_calls for k in plain) == sum(k.host_calls for k in kernels)


@pytest.mark.parametrize(("card", "dtype", "nhwc"), [
    ("h200", "float32", True), ("a100-40gb", "bfloat16", True), ("v100-16gb", "float32", False),
    ("v100-16gb", "float16", True), ("t4", "float32", False)])
def test_convolutions_run_channels_last_where_they_run_on_tensor_cores(card: str, dtype: str, nhwc: bool):
    assert nhwc_convolutions(GPUS[card], dtype) is nhwc


class _Dense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def test_host_calls_are_the_eager_steps_calls_not_the_dispatch_modes_detaches():
    kernels = step_kernels(_Dense().to("meta"), (4, 3), train=True)
    # forward: t, addmm, relu, _log_softmax, nll_loss_forward, ones_like (the seed gradient); backward:
    # nll_loss_backward, _log_softmax_backward_data, threshold_backward, t, mm, t, sum, view, detach (AccumulateGrad
    # of the weight), t, detach (of the bias); the update: one foreach call. Not counted: the detaches of relu's and
    # log_softmax's outputs when autograd saves them and when their backward unpacks them
    assert sum(k.host_calls for k in kernels) == 6 + 11 + 1
    assert [k.recorded for k in kernels] == [k.phase is Phase.FORWARD for k in kernels]
    assert [sum(k.host_calls for k in kernels if k.phase is phase) for phase in Phase] == [6, 7, 5]
    # eagerly, only AccumulateGrad detaches: one per parameter
    dense = _Dense()
    loss = nn.functional.cross_entropy(dense(torch.randn(4, 3)), torch.zeros(4, dtype=torch.long))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss.backward()
    assert sum(1 for e in prof.events() if e.name == "aten::detach") == 2


def test_sgd_reads_parameter_and_gradient_and_writes_the_parameter():
    numels = [10, 20]
    [update] = optimizer_kernels(numels, FP32, "sgd")
    assert update.bytes == 3 * 30 * FP32
    momentum = optimizer_kernels(numels, FP32, "sgd-momentum")
    assert [k.bytes for k in momentum] == [2 * 30 * FP32, 3 * 30 * FP32, 3 * 30 * FP32]
    adam = optimizer_kernels(numels, 2, "adam")
    assert sum(k.bytes for k in adam) == 18 * 30 * 2 and len(adam) == 7
    assert all(k.phase is Phase.OPTIMIZER and k.layer == OPTIMIZER_ROW and k.host_calls == 1 for k in adam)


def test_foreach_launches_pack_chunks_as_multi_tensor_apply():
    assert foreach_launches([5, 7], depth=2) == [12]
    big = MAX_BLOCKS_PER_LAUNCH * CHUNK_ELEMENTS + 3
    assert foreach_launches([big], depth=2) == [MAX_BLOCKS_PER_LAUNCH * CHUNK_ELEMENTS, 3]
    assert len(foreach_launches([1] * 771, depth=1)) == 2  # 770 tensors per launch at depth 1


# ------------------------------------------------------------------------------------------ command line

def test_predicted_json_has_the_measured_fields_and_says_what_it_assumed(capsys: pytest.CaptureFixture[str]):
    assert main(["bandwidth", "alexnet", "--size", "96", "--predict", "--gpu", "h200", "--train", "--optimizer",
                 "adam", "--dtype", "bfloat16", "--batch", "16", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert (out["source"], out["gpu"], out["device_name"], out["optimizer"]) == ("predicted", "h200", "NVIDIA H200",
                                                                                 "adam")
    assert out["model_source"].startswith("d2l") and out["predicted_for"].startswith("predicted for NVIDIA H200")
    assert out["bound"] in ("compute", "memory", "host") and out["step_ms"] > 0
    assert out["assumptions"]["roofs"]["conv_forward"]["compute_roof"] == "bf16"
    assert out["assumptions"]["roofs"]["matmul"]["compute_flops_per_s"] == 989.5e12
    assert set(out["assumptions"]) >= {"kernel_floor_us", "host_inference_call_us", "host_forward_call_us",
                                       "host_backward_call_us", "fitted_on", "method"}
    assert out["assumptions"]["streaming_bandwidth_bytes_per_s"] == pytest.approx(4.8e12 * 4.219091e12 / 4.8e12)
    assert (out["assumptions"]["sm_count"], out["assumptions"]["gemm_tile"]) == (132, [128, 128])
    conv = out["layers"][0]
    assert conv["ms_per_step"] > 0 and conv["bound"] in ("compute", "memory")
    assert conv["flops_per_s"] == pytest.approx(conv["flops"] / (conv["ms_per_step"] / 1e3), rel=1e-5)


def test_predicted_table_and_roofline_are_labelled_predicted(tmp_path: Path):
    result = predict_step("resnet", 96, batch=8, train=True, gpu="l4")
    text = format_bandwidth([result], "table")
    assert text.startswith("predicted for NVIDIA L4 (l4) — no GPU ran")
    assert "predicted ms/step" in text and "measured" not in text.split("\n")[0]
    roofline_plot([result], tmp_path / "roofline.png")
    assert (tmp_path / "roofline.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the default without a GPU")
def test_without_cuda_bandwidth_predicts_and_says_so_on_stderr():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "profiler", "bandwidth", "lenet", "--batch", "2"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("predicted for NVIDIA H100 80GB HBM3 (h100)")
    assert proc.stderr.count("\n") == 1 and "no CUDA device here: predicted for" in proc.stderr
    assert "--device cpu" in proc.stderr


def test_gpu_memory_adds_a_note_on_whether_the_step_fits(capsys: pytest.CaptureFixture[str]):
    assert main(["bandwidth", "nin", "--size", "96", "--predict", "--gpu-memory", "1MiB", "--format", "json"]) == 0
    notes = json.loads(capsys.readouterr().out)[0]["notes"]
    assert any("does NOT fit --gpu-memory 1.0 MiB" in note and "device overhead" in note for note in notes)


# ---------------------------------------------------------------------------------- the fit, checked

@pytest.fixture(scope="module")
def committed_fit():
    measurements = committed_measurements(DATA)
    kernels = [config_kernels(m.model, m.size, m.batch, m.train, m.gpu, m.dtype, m.optimizer) for m in measurements]
    return fit_and_check(measurements, kernels, committed_copy_roof(DATA))


@pytest.mark.slow
def test_committed_coefficients_are_the_fit_of_the_committed_measurements(committed_fit):
    committed = committed_calibration()
    for name, value in zip(NAMES, committed_fit.coefficients, strict=True):
        assert committed.values[name] == pytest.approx(value, rel=1e-3), name
    assert "reports/data/reference_h200_batch128.json" in committed.fitted_on


@pytest.mark.slow
def test_step_time_errors_meet_the_mean_targets(committed_fit):
    summary = committed_fit.summary()
    assert len(committed_fit.measurements) >= 24
    assert summary["in_sample_mean_percent"] <= 10.0
    assert summary["lomo_mean_percent"] <= 15.0


@pytest.mark.slow
def test_worst_leave_one_model_out_error_is_within_30_percent(committed_fit):
    assert committed_fit.summary()["lomo_max_percent"] <= 30.0


def test_per_layer_kernel_times_of_a_gpu_bandwidth_file_join_the_fit(tmp_path: Path):
    result = predict_step("lenet", 28, batch=4, gpu="h100")
    layers = [{"name": r.name, "ms_per_step": r.ms_per_step} for r in result.layers]
    layers.append({"name": "(other)", "ms_per_step": 1.0})
    doc = {"provenance": {"device": "NVIDIA H100 80GB HBM3"},
           "runs": [{"model": "lenet", "input_shape": [4, 1, 28, 28], "mode": "inference", "device_kind": "cuda",
                     "step_ms": result.step_ms, "dtype": "float32", "layers": layers}]}
    (tmp_path / "reference_h200_batch128.json").write_text((DATA / "reference_h200_batch128.json").read_text())
    (tmp_path / "gpu_bandwidth_nvidia_h100.json").write_text(json.dumps(doc))
    measurements = committed_measurements(tmp_path)
    [lenet] = [m for m in measurements if m.model == "lenet"]
    assert lenet.gpu.key == "h100" and "(other)" not in lenet.layer_ms and lenet.batch == 4
    problem = Problem.build([lenet], [config_kernels("lenet", 28, 4, False, gpu_spec("h100"))],
                            committed_calibration().copy)
    timed = [r for r in result.layers if r.ms_per_step >= 0.01 * result.step_ms]
    assert len(problem.layer_points) == len(timed)
    # with the committed coefficients this synthetic measurement is exactly its own prediction
    residuals = problem.residuals(np.log(committed_calibration().vector()), np.log(committed_calibration().vector()))
    assert np.abs(residuals).max() < 1e-9
    assert bandwidth_measurements({"provenance": {"device": "NVIDIA H200"}, "runs": [{"device_kind": "cpu"}]},
                                  "x") == []


@pytest.mark.parametrize(("name", "size", "train", "dtype"), [("nin", 96, True, "float32"),
                                                              ("googlenet", 96, False, "float32"),
                                                              ("resnet", 96, True, "bfloat16")])
def test_the_kernels_come_from_the_counters_pass_without_changing_the_count(name: str, size: int, train: bool,
                                                                           dtype: str):
    """The time model collects its kernels from the counter's own pass (``count_model(observe=…)``): the count must
    be what counting alone gives, field by field, and the prediction predict_step's."""
    from profiler.counting import count_configs

    stats, fused = count_and_predict_step(name, size, 4, train=train, gpu="h100", dtype=dtype, optimizer="adam")
    assert stats.to_dict() == count_configs([name], [size], batch=4, train=train, dtype=dtype)[0].to_dict()
    alone = predict_step(name, size, 4, train=train, gpu="h100", dtype=dtype, optimizer="adam")
    assert fused.to_dict() == alone.to_dict()
    assert fused.step_ms > 0 and len(fused.layers) > 5
