"""The Python API: the same records the commands print, for names and for modules handed over, which stay untouched."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import profiler
from profiler import ProfilerError
from profiler.format.counts import format_stats
from profiler.kinds import SCHEMA_VERSION


def test_count_by_name_is_the_flops_command_record():
    stats = profiler.count("nin", size=224)
    assert (stats.params, stats.totals.macs) == (1_992_166, 762_297_352)   # the hand counts of tests/test_counting.py
    assert json.loads(format_stats([stats], "json")) == [stats.to_dict()]
    assert stats.to_dict()["schema_version"] == SCHEMA_VERSION
    assert repr(stats).startswith("ModelStats(nin, input 1×1×224×224 float32, inference: 1,992,166 params, "
                                  "762,297,352 MACs")


def test_input_shape_wins_over_size_batch_and_channels():
    stats = profiler.count("nin", (8, 3, 96, 96), size=224, batch=1, channels=1)
    assert stats.input_shape == (8, 3, 96, 96)
    assert stats.totals.macs == 8 * profiler.count("nin", size=96, channels=3).totals.macs


def test_a_module_handed_over_is_counted_on_a_copy_and_left_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 3, 10, 10))  # sizes the lazy layer: 8·8·8 inputs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    stats = profiler.count(model, (2, 3, 10, 10), train=True)
    assert model.training and all(p.device.type == "cpu" and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # conv: 8·3·3·3 weights × 8·8 positions × 2 samples; linear: 512·4 × 2 — forward MACs of the step
    assert stats.phases["forward"].macs == 8 * 27 * 64 * 2 + 512 * 4 * 2
    assert stats.model == "Sequential" and "(a module)" in stats.model_source


def test_a_module_whose_input_is_not_an_image_takes_its_shape_as_given():
    stats = profiler.count(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)), (4, 16))
    assert stats.input_shape == (4, 16) and stats.totals.macs == 4 * (16 * 32 + 32 * 5)


def test_a_compiled_module_counts_as_the_module_it_wraps():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
    assert profiler.count(torch.compile(model), (4, 16)).totals.macs == profiler.count(model, (4, 16)).totals.macs


def test_peak_memory_and_layer_times_predict_without_a_gpu_and_say_so():
    if torch.cuda.is_available():
        pytest.skip("predicting without a GPU: this machine has one")
    memory = profiler.peak_memory("nin", size=96, batch=8, gpu="h200")
    assert memory.source == "predicted" and memory.device == "NVIDIA H200" and memory.verdict.fits
    assert "predicted for NVIDIA H200" in repr(memory) and memory.to_dict()["fits"] is True
    times = profiler.layer_times("nin", size=96, batch=8, gpu="a100-40gb")
    assert times.source == "predicted" and times.gpu == "a100-40gb" and times.step_ms > 0
    assert "predicted for NVIDIA A100-SXM4-40GB" in repr(times)


def test_gpus_lists_the_catalogue_with_a_source_for_every_figure():
    cards = {spec.key: spec for spec in profiler.gpus()}
    wanted = {"h100", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l4", "l40s", "a10", "t4", "v100-16gb",
              "v100-32gb", "rtx3090", "rtx4090"}
    assert wanted <= set(cards)
    for spec in cards.values():
        assert {"total_bytes", "bandwidth_bytes_per_s", "fp32_flops_per_s", "compute_capability",
                "cublas_workspace_bytes"} <= set(spec.sources), spec.key
        assert spec.has_tf32 == (spec.compute_capability >= (8, 0))


@pytest.mark.parametrize("model", [42, None, ["nin"]])
def test_a_model_that_is_neither_a_name_nor_a_module_is_a_user_error(model):
    with pytest.raises(ProfilerError, match="must be a name .* or an nn.Module"):
        profiler.count(model)


def test_a_non_square_image_shape_for_a_zoo_model_is_a_user_error():
    with pytest.raises(ProfilerError, match="square"):
        profiler.count("nin", (1, 1, 96, 128))


def test_the_readme_notebook_example_runs_as_written():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## In a notebook"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["stats"].totals.macs == 762_297_352
