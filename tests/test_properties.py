"""Property tests: on random small conv nets, our meta-tensor counts agree with a real CPU run.

Each example draws a net — convolutions (kernel, stride, padding, dilation, groups, bias), max/avg pooling, batch
norm, ReLU, residual additions, channel concatenations, and a linear head after flattening or adaptive pooling — and
runs it for real on tiny CPU tensors under torch's FlopCounterMode. Our counter, on a meta copy of the same net, must
give the same MACs (FLOPs / 2), parameters equal to the sum of ``numel``, and per-layer output shapes equal to the
real forward's. Examples are derandomized (the same nets every run) so CI is repeatable.
"""

from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from profiler.counting import count_model

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)


class Residual(nn.Module):
    """y = relu(x + conv(x)) with a same-size convolution: a residual add inside forward."""

    def __init__(self, channels: int, kernel: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv(x))


class Concat(nn.Module):
    """y = cat(x, conv1×1(x)) on the channel axis: a functional concatenation inside forward."""

    def __init__(self, channels: int, extra: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, extra, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), dim=1)


@st.composite
def conv_nets(draw: st.DrawFn, grouped: bool = True) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """A random net and its input shape (batch, channels, side, side); every layer fits the map it gets.
    ``grouped=False`` keeps every convolution at groups=1."""
    batch, channels, side = draw(st.integers(2, 3)), draw(st.integers(1, 6)), draw(st.integers(3, 12))
    shape = (batch, channels, side, side)
    layers: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "pool", "bn", "relu", "residual", "concat"]))
        if kind == "conv":
            groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0 and (grouped or g == 1)]))
            out = groups * draw(st.integers(1, 3))
            padding, dilation, stride = draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
            largest = (side + 2 * padding - 1) // dilation + 1          # dilation·(k - 1) + 1 ≤ side + 2·padding
            kernel = draw(st.integers(1, min(4, largest)))
            layers.append(nn.Conv2d(channels, out, kernel, stride, padding, dilation, groups,
                                    bias=draw(st.booleans())))
            side = (side + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
            channels = out
        elif kind == "pool":
            kernel = draw(st.integers(1, min(3, side)))
            stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, kernel // 2))
            pool = draw(st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))
            layers.append(pool(kernel, stride, padding))
            side = (side + 2 * padding - kernel) // stride + 1
        elif kind == "bn":
            layers.append(nn.BatchNorm2d(channels))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "residual":
            layers.append(Residual(channels, draw(st.sampled_from([1, 3])), draw(st.booleans())))
        else:
            extra = draw(st.integers(1, 3))
            layers.append(Concat(channels, extra))
            channels += extra
    if draw(st.booleans()):
        pooled = draw(st.integers(1, min(3, side)))
        layers.append(nn.AdaptiveAvgPool2d(pooled))
        side = pooled
    layers += [nn.Flatten(), nn.Linear(channels * side * side, draw(st.integers(2, 5)), bias=draw(st.booleans()))]
    return nn.Sequential(*layers), shape


def real_cpu_run(model: nn.Module, shape: tuple[int, ...], train: bool) -> tuple[int, dict[str, tuple[int, ...]]]:
    """FlopCounterMode's FLOPs of a real CPU forward (or forward + cross-entropy + backward), and each module's
    output shape from forward hooks."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [module.register_forward_hook(lambda m, args, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
               for name, module in model.named_modules()]
    model.train(train)
    x = torch.randn(shape)
    with FlopCounterMode(display=False) as counter:
        if train:
            out = model(x)
            F.cross_entropy(out, torch.zeros(shape[0], dtype=torch.long)).backward()
        else:
            with torch.no_grad():
                model(x)
    for handle in handles:
        handle.remove()
    return counter.get_total_flops(), shapes


def check_against_real_run(net: tuple[nn.Module, tuple[int, ...]], train: bool) -> None:
    model, shape = net
    torch.manual_seed(0)
    flops, shapes = real_cpu_run(model, shape, train)
    stats = count_model(copy.deepcopy(model).to("meta"), shape, train=train)
    assert 2 * stats.totals.macs == flops
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert sum(layer.params for layer in stats.layers) == stats.params
    assert stats.uncounted_ops == {}
    for layer in stats.layers:
        if layer.name != "loss":             # the training step's cross-entropy row is not a module of the net
            assert layer.output_shape == shapes[layer.name], layer.name


@SETTINGS
@given(conv_nets())
def test_random_net_inference_matches_a_real_cpu_forward(net):
    check_against_real_run(net, train=False)


@SETTINGS
@given(conv_nets(grouped=False))
def test_random_net_training_step_macs_match_a_real_cpu_backward(net):
    # Without grouped convolutions: FlopCounterMode counts a grouped conv's weight gradient `groups` times over
    # (see test_grouped_conv_weight_gradient_costs_one_forward in test_counting.py and docs/peers.md).
    check_against_real_run(net, train=True)


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of distinct storages, each rounded up to 512 as the CUDA caching allocator hands out blocks."""
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(-(-n // 512) * 512 for n in sizes.values() if n)


@SETTINGS
@given(conv_nets(), st.sampled_from(["sgd", "sgd-momentum", "adam"]))
def test_predicted_weight_gradient_and_optimizer_bytes_equal_the_real_tensors(net, optimizer):
    from profiler.memory.trace import trace_step
    from profiler.step import StepConfig, make_optimizer

    model, shape = net
    trace = trace_step(copy.deepcopy(model).to("meta"), shape, StepConfig.make(train=True, optimizer=optimizer))
    live: dict[int, tuple[str, int]] = {}
    for event in trace.events:
        if event.kind == "alloc":
            live[event.key] = (event.category, -(-event.nbytes // 512) * 512)
        elif event.kind == "free":
            live.pop(event.key, None)
    predicted = {c: sum(size for cat, size in live.values() if cat == c)
                 for c in ("weights", "gradients", "optimizer")}

    real = copy.deepcopy(model).train()
    opt = make_optimizer(optimizer, list(real.parameters()))
    x = torch.randn(shape)
    for _ in range(2):  # the trace ends after two steps too
        opt.zero_grad(set_to_none=True)
        out = real(x)
        F.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long)).backward()
        opt.step()
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim() > 0]
    assert predicted == {
        "weights": _storage_bytes([*real.parameters(), *real.buffers()]),
        "gradients": _storage_bytes([p.grad for p in real.parameters() if p.grad is not None]),
        "optimizer": _storage_bytes(state),
    }
