"""Resolve a model name, build it without real memory, size its lazy layers, and find the smallest input it takes.

Models are built on the meta device (shapes, no storage), so a VGG at 224 costs nothing to create. Constructors that
compute with tensors (torchvision's RegNet) fail on meta; they are built on the CPU and moved to meta. A dry forward
at batch 1 sizes the ``nn.LazyLinear`` layers and shows whether the input is large enough.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from profiler.errors import ProfilerError
from profiler.kinds import ROOT_ROW
from profiler.meta import CachedMeta
from profiler.models.zoo import ZOO
from profiler.scopes import ModuleScopes, named_modules

#: Largest accepted input height/width. Beyond it a single fp32 activation of a 64-channel layer passes 16 GiB.
MAX_SIZE = 8192

TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model name. ``make(channels, classes)`` constructs it on the current default device; for
    torchvision models and factories the channels only shape the input, and ``classes`` is None unless asked."""

    name: str
    family: str
    source: str
    default_size: int
    default_channels: int
    make: Callable[[int, int | None], nn.Module]
    external: bool = False
    #: Whether :func:`resolve` rebuilds it from ``name`` (False for a module handed to the Python API).
    by_name: bool = True
    #: The shape of one sample when the model's input is not (channels, size, size) (a module of the Python API).
    sample_shape: tuple[int, ...] | None = None

    def input_shape(self, batch: int, size: int, channels: int | None = None) -> tuple[int, ...]:
        """(batch, channels, size, size) with this model's default channel count where none is given; (batch,
        *sample_shape) for a model with a fixed sample shape."""
        if self.sample_shape is not None:
            return (batch, *self.sample_shape)
        return (batch, channels or self.default_channels, size, size)


def zoo_names() -> list[str]:
    """Every name the zoo answers to, aliases included, sorted."""
    return sorted([*ZOO, *(a for e in ZOO.values() for a in e.aliases)])


def resolve(name: str | ModelSpec) -> ModelSpec:
    """Turn a zoo name, ``torchvision:NAME`` or ``module.path:callable`` into a :class:`ModelSpec` (a spec is
    returned as it is).

    Raises :class:`ProfilerError` naming the closest zoo names for an unknown one.
    """
    if isinstance(name, ModelSpec):
        return name
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_spec(name[len(TORCHVISION_PREFIX):])
    if ":" in name:
        return _factory_spec(name)
    for entry in ZOO.values():
        if name == entry.name or name in entry.aliases:
            return _zoo_spec(entry.name)
    close = difflib.get_close_matches(name.lower(), zoo_names(), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ProfilerError(f"unknown model '{name}': {hint}`python -m profiler models` lists the zoo; "
                        "torchvision:NAME and module.path:callable also work")


@cache
def _zoo_spec(name: str) -> ModelSpec:
    """The one spec of a zoo model (one per process: :func:`build` recognises it, see :func:`_copy_of`)."""
    entry = ZOO[name]
    return ModelSpec(entry.name, entry.family, entry.source, entry.default_size, 1,
                     lambda channels, classes, b=entry.builder: b(channels, 10 if classes is None else classes))


def _torchvision_spec(arch: str) -> ModelSpec:
    import torchvision.models

    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        close = difflib.get_close_matches(arch, available, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join('torchvision:' + c for c in close)}? " if close else ""
        raise ProfilerError(f"torchvision has no classification model '{arch}': {hint}"
                            "see torchvision.models.list_models(module=torchvision.models)")
    return _torchvision_spec_of(arch)


@cache
def _torchvision_spec_of(arch: str) -> ModelSpec:
    import torchvision.models

    def make(channels: int, classes: int | None) -> nn.Module:
        kwargs = {} if classes is None else {"num_classes": classes}
        with warnings.catch_warnings():  # e.g. inception_v3's notice about its future default initialization
            warnings.simplefilter("ignore", FutureWarning)
            return torchvision.models.get_model(arch, **kwargs)

    crops = [int(getattr(w.transforms, "keywords", {}).get("crop_size", 224))
             for w in torchvision.models.get_model_weights(arch)]
    spec = ModelSpec(f"torchvision:{arch}", "torchvision", f"torchvision.models.{arch}", crops[0], 3, make,
                     external=True)
    if len(set(crops)) == 1:
        return spec
    # weights of one architecture may be trained at several sizes (vit_h_14: 518 and 224), while the model built
    # without weights takes one of them only (a ViT's image_size): the default is the first crop it accepts
    for crop in dict.fromkeys(crops):
        if _works(spec, spec.input_shape(1, crop), None):
            return replace(spec, default_size=crop)
    return spec


def _factory_spec(name: str) -> ModelSpec:
    module_path, _, attr = name.partition(":")
    if not module_path or not attr:
        raise ProfilerError(f"'{name}' is not a model: write a zoo name, torchvision:NAME or module.path:callable")
    try:
        module = importlib.import_module(module_path)
    except ImportError as err:
        raise ProfilerError(f"cannot import '{module_path}' for {name}: {err}; check the module path and "
                            "PYTHONPATH (run from the folder that holds the package)") from None
    except Exception as err:  # the user's module failed while importing
        raise ProfilerError(f"importing '{module_path}' for {name} raised {type(err).__name__}: "
                            f"{_first_line(err)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ProfilerError(f"module '{module_path}' has no callable '{attr}'; name a function or class that "
                            "returns an nn.Module and takes no arguments")

    def make(channels: int, classes: int | None) -> nn.Module:
        if classes is not None:
            raise ProfilerError(f"--classes cannot be applied to {name}: the factory decides its classes; "
                                "leave --classes out")
        return factory()

    return ModelSpec(name, "factory", f"{module_path}.{attr}()", 224, 3, make, external=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


#: Zoo models this process has constructed or built: key → the untouched original that :func:`_copy_of` hands out
#: deep copies of (at most :data:`PROTOTYPE_LIMIT`, the oldest dropped first).
_PROTOTYPES: dict[tuple, nn.Module] = {}
PROTOTYPE_LIMIT = 64


def _copy_of(spec: ModelSpec, key: tuple, make: Callable[[], nn.Module]) -> nn.Module:
    """A new ``make()`` — for a zoo model, a deep copy of the first one made in this process: copying a meta model
    costs a quarter to a twentieth of constructing it (module constructors, weight initialisation, the lazy layers' dry
    forward), and a report builds each model a dozen times. A zoo model is a function of its key, and the original
    is never handed out, so no caller can change what the next one gets. Other models (torchvision, factories, the
    Python API's modules) are made anew every time: their constructors are not ours to assume pure."""
    if spec.name not in ZOO or spec is not _zoo_spec(spec.name):
        return make()
    key = (spec.name, *key)
    prototype = _PROTOTYPES.get(key)
    if prototype is None:
        prototype = make()
        if len(_PROTOTYPES) >= PROTOTYPE_LIMIT:
            del _PROTOTYPES[next(iter(_PROTOTYPES))]
        _PROTOTYPES[key] = prototype
    return _copy_module(prototype, {})


def _copy_module(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """``copy.deepcopy(module)``, a few times faster: the module tree, parameters and buffers are copied directly
    and the empty hook dictionaries (a dozen per module) made anew, instead of each going through ``__reduce_ex__``;
    anything else in a module's ``__dict__`` is deep-copied, all with one ``memo`` (shared modules and tied weights
    stay shared)."""
    copied = memo.get(id(module))
    if copied is not None:
        return copied
    copied = object.__new__(type(module))
    memo[id(module)] = copied
    state = {}
    for key, value in module.__dict__.items():
        if key == "_modules":
            state[key] = {name: None if child is None else _copy_module(child, memo) for name, child in value.items()}
        elif key in ("_parameters", "_buffers"):
            state[key] = {name: copy.deepcopy(tensor, memo) for name, tensor in value.items()}
        elif type(value) in _EMPTY_COPIES and not value:
            state[key] = type(value)()
        else:
            state[key] = copy.deepcopy(value, memo)
    copied.__dict__.update(state)
    return copied


_EMPTY_COPIES = (dict, OrderedDict, set)


def _construct(spec: ModelSpec, channels: int, classes: int | None) -> nn.Module:
    """Construct on meta (see :func:`_copy_of`)."""
    return _copy_of(spec, ("constructed", channels, classes), lambda: _construct_new(spec, channels, classes))


def _construct_new(spec: ModelSpec, channels: int, classes: int | None) -> nn.Module:
    """Construct on meta; if the constructor computes with tensors, construct on the CPU and move to meta."""
    try:
        with torch.device("meta"):
            model = spec.make(channels, classes)
    except ProfilerError:
        raise
    except Exception:
        if not spec.external:
            raise
        try:
            model = spec.make(channels, classes)
        except ProfilerError:
            raise
        except Exception as err:
            raise ProfilerError(f"{spec.name} raised {type(err).__name__} while building: {_first_line(err)}") \
                from None
        model = model.to("meta")
    if not isinstance(model, nn.Module):
        raise ProfilerError(f"{spec.name} returned {type(model).__name__}, not a torch.nn.Module; make the factory "
                            "return the model")
    return unwrap_compiled(model)


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) wraps, else ``model``: the costs are those of
    the module's own ops, which compilation fuses but does not change."""
    original = getattr(model, "_orig_mod", None)
    return original if type(model).__name__ == "OptimizedModule" and isinstance(original, nn.Module) else model


class ForwardFailed(Exception):
    """A model's forward raised: ``layer`` (qualified name) and ``layer_type`` say where, ``str()`` the cause."""

    def __init__(self, layer: str, layer_type: str, cause: BaseException) -> None:
        super().__init__(_first_line(cause))
        self.layer, self.layer_type = layer, layer_type


@contextmanager
def tracked_forward(scopes: ModuleScopes, model: nn.Module) -> Iterator[None]:
    """Turn an exception raised inside the block into :class:`ForwardFailed` naming the module that was running."""
    try:
        yield
    except ProfilerError:
        raise
    except Exception as err:
        layer = scopes.stack[-1] if scopes.stack else ""
        raise ForwardFailed(layer or ROOT_ROW, scopes.types.get(layer, type(model).__name__), err) from err


def _dry_forward(spec: ModelSpec, shape: tuple[int, ...], classes: int | None) -> nn.Module:
    """Construct and run one meta forward at ``shape`` (eval mode, no grad), sizing lazy layers."""
    return _forward_once(_construct(spec, shape[1], classes), shape)


def _forward_once(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    scopes = ModuleScopes(named_modules(model))
    training = model.training
    model.eval()
    try:
        with (torch.device("meta"), torch.no_grad(), scopes.attached(), tracked_forward(scopes, model),
              CachedMeta()):
            model(torch.empty(shape, device="meta"))
    finally:
        model.train(training)
    return model


def build(spec: ModelSpec, size: int, channels: int | None = None, classes: int | None = None) -> nn.Module:
    """The model on the meta device, lazy layers sized for ``size``×``size`` inputs by one batch-1 meta forward
    (models without lazy layers skip it: the caller's own forward will show any problem, see :func:`explain`).

    Raises :class:`ProfilerError` when that forward fails (see :func:`explain`).
    """
    shape = spec.input_shape(1, size, channels)
    try:
        return _copy_of(spec, ("built", shape, classes), lambda: _sized(_construct(spec, shape[1], classes), shape))
    except ForwardFailed as failure:
        raise explain(spec, size, channels, classes, failure) from None


def _sized(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """``model`` with its lazy layers sized by a dry forward at ``shape`` (a model without any is returned as it is)."""
    if not any(isinstance(m, LazyModuleMixin) for m in model.modules()):
        return model
    return _forward_once(model, shape)


def explain(spec: ModelSpec, size: int, channels: int | None, classes: int | None,
            failure: ForwardFailed) -> ProfilerError:
    """The user-facing error for a forward that failed at ``size``: if a larger input works, the input is too small
    and the message names the layer where the feature map collapsed and the smallest size that works."""
    shape = spec.input_shape(1, size, channels)
    where = f"at layer {failure.layer} ({failure.layer_type})"
    if _works(spec, shape, classes):
        return ProfilerError(f"{spec.name}: the forward failed on input {list(shape)} {where}: {failure}")
    smallest = _smallest_working(spec, shape, classes, start=size + 1)
    if smallest is not None:
        return ProfilerError(f"{spec.name}: a {size}×{size} input is too small, the feature map collapses {where}; "
                             f"the smallest size that works is {smallest} (use --size {smallest} or more)")
    return ProfilerError(f"{spec.name}: the forward failed on input {list(shape)} {where}: {failure}; "
                         "check --channels and --size")


def _works(spec: ModelSpec, shape: tuple[int, ...], classes: int | None) -> bool:
    try:
        _dry_forward(spec, shape, classes)
        return True
    except ForwardFailed:
        return False


def _smallest_working(spec: ModelSpec, shape: tuple[int, ...], classes: int | None, start: int) -> int | None:
    """Smallest size ≥ ``start`` whose forward works, or None up to MAX_SIZE. Feature maps never shrink as the
    input grows (floor-division arithmetic), so whether a size works is monotone and bisection is exact."""
    batch, channels = shape[0], shape[1]
    low, high = start - 1, start
    while not _works(spec, (batch, channels, high, high), classes):
        if high >= MAX_SIZE:
            return None
        low, high = high, min(2 * high, MAX_SIZE)
    while high - low > 1:
        mid = (low + high) // 2
        if _works(spec, (batch, channels, mid, mid), classes):
            high = mid
        else:
            low = mid
    return high


def smallest_input_size(spec: ModelSpec, channels: int | None = None, classes: int | None = None) -> int | None:
    """The smallest square input size the model accepts (None if none up to :data:`MAX_SIZE`)."""
    return _smallest_working(spec, spec.input_shape(1, 1, channels), classes, start=1)


def logits_of(output: object) -> torch.Tensor:
    """A model's logits: its output, or the first element where it returns several (torchvision's auxiliary heads
    in training mode)."""
    return output if isinstance(output, torch.Tensor) else next(iter(output))


def output_classes(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """How many logits a meta-device model returns, from a no-grad eval forward at ``input_shape`` (batch 1 is
    enough) in the dtype of its parameters; the model's training mode is restored."""
    training = model.training
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    try:
        with torch.device("meta"), torch.no_grad():
            out = model.eval()(torch.empty(input_shape, device="meta", dtype=dtype))
    finally:
        model.train(training)
    return int(logits_of(out).shape[-1])


def to_device(model: nn.Module, device: torch.device | str, seed: int = 0) -> nn.Module:
    """Give a meta model real, freshly initialized storage on ``device``. Values come from each module's
    ``reset_parameters`` (others: N(0, 0.02) weights, zero buffers); they do not change any cost measured here."""
    torch.manual_seed(seed)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            elif hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            else:
                for p in module.parameters(recurse=False):
                    p.normal_(0.0, 0.02)
                for b in module.buffers(recurse=False):
                    b.zero_()
    return model
