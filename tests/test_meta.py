"""The meta-kernel cache and the fast batch-norm kernels give exactly what torch's own meta kernels give."""

from __future__ import annotations

import pytest
import torch

from profiler import meta
from profiler.counting import count_model
from profiler.models import build, resolve

aten = torch.ops.aten


def _layout(out: object) -> object:
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape), out.stride(), out.dtype, out.storage_offset(), out.untyped_storage().nbytes())
    if isinstance(out, (list, tuple)):
        return [_layout(o) for o in out]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 8, 5, 5), (4, 8), (2, 3, 7), (4, 8, 5, 5, "channels_last")])
def test_fast_batch_norm_matches_the_meta_kernel(dtype: torch.dtype, training: bool, shape: tuple):
    channels_last = shape[-1] == "channels_last"
    dims = shape[:-1] if channels_last else shape
    x = torch.empty(dims, device="meta", dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    c = dims[1]
    w, b, rm, rv = (torch.empty(c, device="meta", dtype=dtype) for _ in range(4))
    args = (x, w, b, rm, rv, training, 0.1, 1e-5)
    forward = aten.native_batch_norm.default(*args)
    assert _layout(meta._batch_norm(*args)) == _layout(forward)
    grad = torch.empty_like(x)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        backward_args = (grad, x, w, rm, rv, forward[1], forward[2], training, 1e-5, mask)
        assert _layout(meta._batch_norm_backward(*backward_args)) == \
            _layout(aten.native_batch_norm_backward.default(*backward_args))


def test_a_cached_op_returns_fresh_tensors_of_the_same_layout():
    x = torch.empty(2, 3, 4, device="meta")
    first = meta.meta_call(aten.relu.default, (x,), {})
    second = meta.meta_call(aten.relu.default, (x,), {})
    assert _layout(first) == _layout(second) == _layout(aten.relu.default(x))
    assert first.untyped_storage()._cdata != second.untyped_storage()._cdata


def test_views_and_in_place_ops_are_never_answered_from_the_cache():
    x = torch.empty(2, 3, device="meta")
    assert meta._plan(aten.view.default) is None and meta._plan(aten.relu_.default) is None
    assert meta.meta_call(aten.view.default, (x, [3, 2]), {}).untyped_storage()._cdata == x.untyped_storage()._cdata


def test_an_op_that_writes_an_input_bumps_its_version_on_a_cache_hit():
    x, mean, var = torch.empty(4, 3, device="meta"), torch.empty(3, device="meta"), torch.empty(3, device="meta")
    args = (x, None, None, mean, var, True, 0.1, 1e-5)
    meta.meta_call(aten._native_batch_norm_legit.default, args, {})
    before = mean._version
    meta.meta_call(aten._native_batch_norm_legit.default, args, {})
    assert mean._version == before + 1


def test_counts_are_the_same_with_and_without_the_cache(monkeypatch: pytest.MonkeyPatch):
    cached = count_model(build(resolve("densenet"), 96), (2, 1, 96, 96), train=True)
    monkeypatch.setattr(meta, "_plan", lambda func: None)
    monkeypatch.setattr(meta, "_FAST_KERNELS", {})
    plain = count_model(build(resolve("densenet"), 96), (2, 1, 96, 96), train=True)
    assert [(r.name, r.macs, r.other_ops, r.bytes) for r in cached.layers] == \
        [(r.name, r.macs, r.other_ops, r.bytes) for r in plain.layers]


def test_tensor_leaves_are_tree_flattens_tensors_in_its_order():
    from collections import OrderedDict, namedtuple

    from torch.utils._pytree import tree_flatten

    from profiler.util.tensors import tensor_leaves

    a, b, c, d = (torch.empty(i + 1, device="meta") for i in range(4))
    pair = namedtuple("pair", "left right")
    trees = [a, None, 3, (a, [b, None, (c,)]), {"z": c, "a": (d, 1.5)}, ((a,), {"k": b}),
             pair(b, [c, a]), OrderedDict(x=d, y=[a]), [torch.nn.Parameter(torch.empty(2, device="meta")), "s"]]
    for tree in trees:
        expected = [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]
        found = tensor_leaves(tree)
        assert [id(t) for t in found] == [id(t) for t in expected], tree
    assert [id(t) for t in tensor_leaves(trees[4])] == [id(c), id(d)]  # insertion order, not sorted keys


_STAND_IN_RUN = """
import json, sys
from profiler.counting import count_configs, dynamo_import_skipped
from profiler.memory.runner import predict_config
with dynamo_import_skipped():
    counted = count_configs(["nin"], [96], batch=4, train=True)[0]
    memory = predict_config("nin", 96, 4, train=True, gpu="h200")  # an optimizer step: graph_break()
    # activation checkpointing reads torch._dynamo.config: the config module alone
    saver = predict_config("nin", 96, 4, train=True, gpu="h200", checkpoint=True)
    untouched = type(sys.modules["torch._dynamo"]).__name__ == "_DynamoStandIn"  # (hasattr would hand over)
    import torch._dynamo
    config = torch._dynamo.config
    untouched = untouched and config is sys.modules["torch._dynamo.config"] and "torch._dynamo.eval_frame" not in \
        sys.modules
    optimize = torch._dynamo.optimize  # anything else: the real module, imported now, with the same config module
    real = sys.modules["torch._dynamo"].optimize is optimize and sys.modules["torch._dynamo"].config is config
print(json.dumps([counted.totals.macs, counted.totals.bytes, memory.peak_allocated_bytes, memory.peak_reserved_bytes,
                  saver.peak_allocated_bytes, saver.peak_reserved_bytes, untouched, real]))
"""


def test_the_dynamo_stand_in_changes_no_number_and_hands_over_when_more_is_asked():
    import json
    import subprocess
    import sys
    from pathlib import Path

    from profiler.counting import count_configs
    from profiler.memory.runner import predict_config

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _STAND_IN_RUN], cwd=root, capture_output=True, text=True,
                          check=True, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    *numbers, untouched, real = json.loads(done.stdout.strip().splitlines()[-1])
    counted = count_configs(["nin"], [96], batch=4, train=True)[0]
    memory = predict_config("nin", 96, 4, train=True, gpu="h200")
    saver = predict_config("nin", 96, 4, train=True, gpu="h200", checkpoint=True)
    assert numbers == [counted.totals.macs, counted.totals.bytes, memory.peak_allocated_bytes,
                       memory.peak_reserved_bytes, saver.peak_allocated_bytes, saver.peak_reserved_bytes]
    assert untouched and real


def test_a_model_already_in_the_step_dtype_is_not_cast_and_any_other_is():
    from torch import nn

    from profiler.step import in_dtype

    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    weight = model[0].weight
    assert in_dtype(model, torch.float32) is model and model[0].weight is weight
    model[1].running_mean = model[1].running_mean.to(torch.bfloat16)  # one buffer off: the whole model is cast
    in_dtype(model, torch.float32)
    assert model[1].running_mean.dtype == torch.float32
    assert model[1].num_batches_tracked.dtype == torch.long  # integer buffers are left alone, as by to()
    in_dtype(model, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_the_dry_forward_under_the_meta_cache_sizes_lazy_layers_and_fails_where_the_plain_one_does():
    from torch import nn

    from profiler.meta import CachedMeta

    def net() -> nn.Module:
        with torch.device("meta"):
            return nn.Sequential(nn.Conv2d(1, 8, 5), nn.BatchNorm2d(8), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.LazyLinear(3))

    plain, cached = net().eval(), net().eval()
    x = torch.empty(2, 1, 13, 13, device="meta")
    with torch.no_grad():
        expected = plain(x)
        with CachedMeta():
            out = cached(x)
    assert out.shape == expected.shape == (2, 3)
    assert cached[4].weight.shape == plain[4].weight.shape == (3, 8 * 4 * 4)
    small = torch.empty(2, 1, 4, 4, device="meta")
    with pytest.raises(RuntimeError) as plain_error, torch.no_grad():
        plain(small)
    with pytest.raises(RuntimeError) as cached_error, torch.no_grad(), CachedMeta():
        cached(small)
    assert str(cached_error.value) == str(plain_error.value)
