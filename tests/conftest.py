"""Shared fixtures: zoo models built once per session, counts computed once, and a folder of user factories.

Models are built on the meta device (no storage), so caching them costs nothing; counting never changes a model
(``count_model`` restores its train/eval mode), so tests may share them.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run from anywhere imports the tree, not an installed copy
    sys.path.insert(0, str(ROOT))

from profiler.counting import ModelStats, count_model  # noqa: E402
from profiler.models import build, resolve  # noqa: E402


@cache
def _built(name: str, size: int) -> nn.Module:
    return build(resolve(name), size)


@cache
def _counted(name: str, size: int, train: bool, batch: int) -> ModelStats:
    spec = resolve(name)
    # A training count gets a model of its own: count_model(train=True) leaves gradients on the parameters
    # (see test_training_count_does_not_depend_on_earlier_counts), which would change a later training count.
    model = build(spec, size) if train else _built(name, size)
    return count_model(model, spec.input_shape(batch, size), name=spec.name, train=train)


@pytest.fixture(scope="session")
def text_box() -> Callable[[Any, Any], Any]:
    """``text_box(annotation, renderer)``: a matplotlib annotation's text as drawn (display pixels), without the line
    to its point — what must not cover another label."""
    from matplotlib.text import Text

    def box(annotation: Any, renderer: Any) -> Any:
        annotation.update_positions(renderer)
        return Text.get_window_extent(annotation, renderer)
    return box


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[str, int], nn.Module]:
    """``zoo_model(name, size)``: the zoo model on meta, lazy layers sized for ``size``, built once per session."""
    return _built


@pytest.fixture(scope="session")
def zoo_counts() -> Callable[..., ModelStats]:
    """``zoo_counts(name, size, train=False, batch=1)``: our counter's result for a zoo model, computed once."""
    def counts(name: str, size: int, train: bool = False, batch: int = 1) -> ModelStats:
        return _counted(name, size, train, batch)
    return counts


def _flop_counter_macs(name: str, size: int, train: bool = False) -> int:
    model = build(resolve(name), size)          # a fresh model: a training step leaves gradients behind
    model.train(train)
    x = torch.empty(1, 1, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        if train:
            F.cross_entropy(model(x), torch.zeros(1, dtype=torch.long, device="meta")).backward()
        else:
            with torch.no_grad():
                model(x)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


@pytest.fixture(scope="session")
def flop_counter_macs() -> Callable[..., int]:
    """``flop_counter_macs(name, size, train=False)``: torch's FlopCounterMode FLOPs / 2 for a zoo model at batch 1,
    1 channel — one meta forward (eval, no grad), or a training step (train mode, forward, cross-entropy against
    class 0, backward). The independent reference for our MACs."""
    return _flop_counter_macs


FACTORIES = '''
"""Factories for the tests of ``module.path:callable`` models (called with no arguments)."""
import torch
from torch import nn


class Cumulative(nn.Module):
    """Runs aten.cumsum, an op the counter has no MAC/other-ops rule for."""

    def forward(self, x):
        return torch.cumsum(x, dim=1)


def build():
    """The issue's `mypkg.nets:build`: a small 3-channel net with a lazy head and 5 classes."""
    return nn.Sequential(nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.LazyLinear(5))


def with_cumsum():
    return nn.Sequential(nn.Conv2d(3, 4, kernel_size=3), Cumulative())


class NeedsRealTensors(nn.Module):
    """Its constructor computes with tensor values, which fails on the meta device (like torchvision's RegNet)."""

    def __init__(self):
        super().__init__()
        widths = torch.tensor([4.0, 8.0])
        self.conv = nn.Conv2d(3, int(widths.sum().item()), kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class MakesItsOwnTensors(nn.Module):
    """Creates a tensor in forward without naming a device, as user code often does."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :12] + torch.zeros(x.shape[0], 12))


def compiled():
    """The issue's build() wrapped by torch.compile (nothing is compiled until it runs)."""
    return torch.compile(build())


def explodes():
    raise RuntimeError("factory exploded on purpose")


def not_a_module():
    return {"weights": 1}
'''


@pytest.fixture(scope="session")
def factory_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder holding package ``mypkg`` (module ``mypkg.nets``, the factories above), ``mypkg.missing_dep`` (its
    import fails) and ``mypkg.broken`` (raises while importing); it is on ``sys.path`` for the session — pass it on
    ``PYTHONPATH`` to subprocesses."""
    folder = tmp_path_factory.mktemp("factories")
    package = folder / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent(FACTORIES))
    (package / "missing_dep.py").write_text("import no_such_dependency_anywhere  # noqa\n")
    (package / "broken.py").write_text("RATIO = 1 / 0\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]
