"""The model zoo: parameter counts derived by hand from the book's layer shapes, name resolution, torchvision and
user factories, the smallest input each model takes (checked against a real CPU forward), and user errors.

The hand derivations below restate each architecture as plain arithmetic (weights + biases per layer, from the d2l
chapter-7 definitions and the issue's layouts); they never look at the modules the zoo builds.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from profiler.errors import ProfilerError
from profiler.models import ZOO, build, resolve, smallest_input_size
from profiler.models.loading import to_device

CLASSES = 10


# --------------------------------------------------------------------------- hand arithmetic from layer shapes

def conv(c_in: int, c_out: int, k: int) -> int:
    """A k×k convolution with bias: C_out·C_in·k·k weights + C_out biases."""
    return c_out * c_in * k * k + c_out


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def bn(c: int) -> int:
    """Batch norm: a scale and a shift per channel (running statistics are buffers, not parameters)."""
    return 2 * c


def pooled(n: int, k: int, s: int, p: int = 0) -> int:
    """Output side of a k×k, stride-s, padding-p window over an n×n map (floor division, as torch)."""
    return (n + 2 * p - k) // s + 1


def lenet_params(size: int, channels: int = 1, classes: int = CLASSES) -> int:
    side = pooled(size, 5, 1, 2)        # conv 5×5, padding 2: same size
    side = pooled(side, 2, 2)           # avg pool 2/2
    side = pooled(side, 5, 1)           # conv 5×5
    side = pooled(side, 2, 2)           # avg pool 2/2
    return (conv(channels, 6, 5) + conv(6, 16, 5)
            + linear(16 * side * side, 120) + linear(120, 84) + linear(84, classes))


def alexnet_params(size: int, channels: int = 1, classes: int = CLASSES) -> int:
    side = pooled(size, 11, 4, 1)                    # conv1 11×11/4, padding 1
    side = pooled(side, 3, 2)                        # max pool 3/2
    side = pooled(pooled(side, 5, 1, 2), 3, 2)       # conv2 5×5 (same), max pool 3/2
    side = pooled(side, 3, 2)                        # conv3-5 3×3 (same), max pool 3/2
    convs = conv(channels, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
    return convs + linear(256 * side * side, 4096) + linear(4096, 4096) + linear(4096, classes)


VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG16 = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
VGG19 = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


def vgg_params(arch: tuple[tuple[int, int], ...], size: int, channels: int = 1, classes: int = CLASSES) -> int:
    total, c_in, side = 0, channels, size
    for num_convs, c_out in arch:
        for _ in range(num_convs):
            total += conv(c_in, c_out, 3)            # 3×3, padding 1: same size
            c_in = c_out
        side //= 2                                   # max pool 2/2
    return total + linear(512 * side * side, 4096) + linear(4096, 4096) + linear(4096, classes)


def nin_params(channels: int = 1, classes: int = CLASSES) -> int:
    def block(c_in: int, c_out: int, k: int) -> int:
        return conv(c_in, c_out, k) + 2 * conv(c_out, c_out, 1)
    return block(channels, 96, 11) + block(96, 256, 5) + block(256, 384, 3) + block(384, classes, 3)


def inception(c_in: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> int:
    return (conv(c_in, c1, 1)
            + conv(c_in, c2[0], 1) + conv(c2[0], c2[1], 3)
            + conv(c_in, c3[0], 1) + conv(c3[0], c3[1], 5)
            + conv(c_in, c4, 1))                     # the max-pool path has no parameters


def googlenet_params(channels: int = 1, classes: int = CLASSES) -> int:
    b1 = conv(channels, 64, 7)
    b2 = conv(64, 64, 1) + conv(64, 192, 3)
    b3 = inception(192, 64, (96, 128), (16, 32), 32) + inception(256, 128, (128, 192), (32, 96), 64)
    b4 = (inception(480, 192, (96, 208), (16, 48), 64) + inception(512, 160, (112, 224), (24, 64), 64)
          + inception(512, 128, (128, 256), (24, 64), 64) + inception(512, 112, (144, 288), (32, 64), 64)
          + inception(528, 256, (160, 320), (32, 128), 128))
    b5 = inception(832, 256, (160, 320), (32, 128), 128) + inception(832, 384, (192, 384), (48, 128), 128)
    return b1 + b2 + b3 + b4 + b5 + linear(1024, classes)


def basic_block(c_in: int, c: int, projection: bool) -> int:
    """The book's Residual: two 3×3 convs, two BNs, and a 1×1 projection where the shape changes."""
    return conv(c_in, c, 3) + conv(c, c, 3) + bn(c) + bn(c) + (conv(c_in, c, 1) if projection else 0)


def bottleneck_block(c_in: int, c: int, projection: bool) -> int:
    """1×1 → 3×3 → 1×1 (×4 channels), a BN after each, a 1×1 projection where the shape changes."""
    return (conv(c_in, c, 1) + conv(c, c, 3) + conv(c, 4 * c, 1) + bn(c) + bn(c) + bn(4 * c)
            + (conv(c_in, 4 * c, 1) if projection else 0))


def resnet_params(blocks: tuple[int, ...], bottleneck: bool = False, channels: int = 1,
                  classes: int = CLASSES) -> int:
    total = conv(channels, 64, 7) + bn(64)           # the book's stem; its max pool has no parameters
    c_in = 64
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        c_out = 4 * width if bottleneck else width
        for i in range(count):
            # the first block of every stage but the first has stride 2; any shape change needs a projection
            projection = (i == 0 and stage > 0) or c_in != c_out
            total += (bottleneck_block if bottleneck else basic_block)(c_in, width, projection)
            c_in = c_out
    return total + linear(c_in, classes)


def densenet_params(blocks: tuple[int, ...], growth: int = 32, channels: int = 1, classes: int = CLASSES) -> int:
    total = conv(channels, 64, 7) + bn(64)           # stem: 7×7/2 conv, BN, ReLU, max pool
    c = 64
    for i, num_convs in enumerate(blocks):
        for _ in range(num_convs):
            total += bn(c) + conv(c, growth, 3)      # BN → ReLU → 3×3 conv; the output is concatenated
            c += growth
        if i != len(blocks) - 1:
            total += bn(c) + conv(c, c // 2, 1)      # transition: BN → ReLU → 1×1 conv halving channels → avg pool
            c //= 2
    return total + bn(c) + linear(c, classes)


#: Parameters at 224 (LeNet at its native 28), 1 channel, 10 classes: pinned values and their hand derivations.
PARAMS_DEFAULT = {
    "lenet": (61_706, lenet_params(28)),
    "alexnet": (46_764_746, alexnet_params(224)),
    "vgg": (128_806_154, vgg_params(VGG11, 224)),
    "vgg16": (134_300_362, vgg_params(VGG16, 224)),
    "vgg19": (139_610_058, vgg_params(VGG19, 224)),
    "nin": (1_992_166, nin_params()),
    "googlenet": (5_977_530, googlenet_params()),
    "resnet": (11_178_378, resnet_params((2, 2, 2, 2))),
    "resnet34": (21_290_250, resnet_params((3, 4, 6, 3))),
    "resnet50": (23_541_130, resnet_params((3, 4, 6, 3), bottleneck=True)),
    "densenet": (758_226, densenet_params((4, 4, 4, 4))),
    "densenet121": (9_850_890, densenet_params((6, 12, 24, 16))),
    "densenet169": (19_843_210, densenet_params((6, 12, 32, 32))),
    "densenet201": (30_062_986, densenet_params((6, 12, 48, 32))),
}

#: Parameters at 96 where the first fully connected layer is lazy (the others do not depend on the size).
PARAMS_96 = {
    "lenet": (942_986, lenet_params(96)),
    "alexnet": (21_598_922, alexnet_params(96)),       # also an independent reference measurement
    "vgg": (44_920_074, vgg_params(VGG11, 96)),
    "vgg16": (50_414_282, vgg_params(VGG16, 96)),
    "vgg19": (55_723_978, vgg_params(VGG19, 96)),
}

#: The checkpoints issue 3 gives (224, 1 channel, 10 classes; LeNet at 28).
ISSUE_CHECKPOINTS = {"lenet": 61_706, "alexnet": 46_764_746, "vgg": 128_806_154, "nin": 1_992_166,
                     "googlenet": 5_977_530, "resnet": 11_178_378, "densenet": 758_226}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------- parameter counts

def test_pinned_params_equal_their_hand_derivations_and_the_issue_checkpoints():
    for name, (pinned, derived) in {**PARAMS_DEFAULT, **{f"{k}@96": v for k, v in PARAMS_96.items()}}.items():
        assert pinned == derived, name
    assert {name: PARAMS_DEFAULT[name][0] for name in ISSUE_CHECKPOINTS} == ISSUE_CHECKPOINTS


def test_every_zoo_model_has_a_pinned_param_count():
    assert set(PARAMS_DEFAULT) == set(ZOO)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_params_at_default_size_match_hand_count(name, zoo_model):
    size = ZOO[name].default_size
    assert size == (28 if name == "lenet" else 224)
    assert n_params(zoo_model(name, size)) == PARAMS_DEFAULT[name][0]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_params_at_96_match_hand_count(name, zoo_model):
    expected = PARAMS_96.get(name, PARAMS_DEFAULT[name])[0]
    assert n_params(zoo_model(name, 96)) == expected


def test_vgg16_params_are_vgg11_plus_its_five_extra_convolutions():
    # VGG-16 (2,2,3,3,3 convs per block) has one more conv than VGG-11 (1,1,2,2,2) in each of the five blocks,
    # each 3×3 with C_in = C_out = the block's width: weights C·C·9 + biases C.
    extra = [64 * 64 * 9 + 64,          # 36,928
             128 * 128 * 9 + 128,       # 147,584
             256 * 256 * 9 + 256,       # 590,080
             512 * 512 * 9 + 512,       # 2,359,808
             512 * 512 * 9 + 512]       # 2,359,808
    assert sum(extra) == 5_494_208
    assert 128_806_154 + 5_494_208 == 134_300_362 == PARAMS_DEFAULT["vgg16"][0]
    # VGG-19 adds one more conv to blocks 3, 4 and 5 again.
    assert 134_300_362 + (256 * 256 * 9 + 256) + 2 * (512 * 512 * 9 + 512) == 139_610_058


def test_densenet_params_hand_count_with_channels_written_out():
    # The book's DenseNet, growth 32, blocks (4,4,4,4). Each dense conv block: BN(c) + 3×3 conv c→32.
    stem = (64 * 1 * 7 * 7 + 64) + 2 * 64                                   # 3,328
    dense1 = sum(2 * c + 32 * c * 9 + 32 for c in (64, 96, 128, 160))        # 64 → 192 channels
    trans1 = 2 * 192 + (96 * 192 + 96)                                      # 192 → 96
    dense2 = sum(2 * c + 32 * c * 9 + 32 for c in (96, 128, 160, 192))       # 96 → 224
    trans2 = 2 * 224 + (112 * 224 + 112)                                    # 224 → 112
    dense3 = sum(2 * c + 32 * c * 9 + 32 for c in (112, 144, 176, 208))      # 112 → 240
    trans3 = 2 * 240 + (120 * 240 + 120)                                    # 240 → 120
    dense4 = sum(2 * c + 32 * c * 9 + 32 for c in (120, 152, 184, 216))      # 120 → 248
    head = 2 * 248 + (248 * 10 + 10)                                        # final BN, linear 248 → 10
    parts = [stem, dense1, trans1, dense2, trans2, dense3, trans3, dense4, head]
    assert parts == [3_328, 130_048, 18_912, 167_168, 25_648, 185_728, 29_400, 195_008, 2_986]
    assert sum(parts) == 758_226 == PARAMS_DEFAULT["densenet"][0]


def test_resnet34_params_hand_count_by_stage():
    stem = (64 * 7 * 7 + 64) + 2 * 64                                       # 3,328
    def basic(c_in, c, proj):
        return (c * c_in * 9 + c) + (c * c * 9 + c) + 4 * c + ((c * c_in + c) if proj else 0)
    b2 = 3 * basic(64, 64, False)
    b3 = basic(64, 128, True) + 3 * basic(128, 128, False)
    b4 = basic(128, 256, True) + 5 * basic(256, 256, False)
    b5 = basic(256, 512, True) + 2 * basic(512, 512, False)
    fc = 512 * 10 + 10
    assert [stem, b2, b3, b4, b5, fc] == [3_328, 222_336, 1_117_312, 6_825_216, 13_116_928, 5_130]
    assert stem + b2 + b3 + b4 + b5 + fc == 21_290_250 == PARAMS_DEFAULT["resnet34"][0]


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("size", [96, 224])
def test_zoo_model_builds_on_meta_and_returns_one_logit_per_class(name, size, zoo_model):
    model = zoo_model(name, size)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.empty(2, 1, size, size, device="meta"))
    model.train(training)
    assert tuple(out.shape) == (2, CLASSES)


@pytest.mark.parametrize(("alias", "name"), [("vgg11", "vgg"), ("resnet18", "resnet")])
def test_aliases_resolve_to_the_same_model(alias, name):
    spec = resolve(alias)
    assert spec.name == name
    assert n_params(build(spec, 96)) == PARAMS_96.get(name, PARAMS_DEFAULT[name])[0]


@pytest.mark.parametrize(("name", "first", "last"), [
    # (model, first-layer params with 3 channels, last-layer params with 100 classes)
    ("alexnet", 96 * 3 * 11 * 11 + 96, 4096 * 100 + 100),
    ("resnet", 64 * 3 * 7 * 7 + 64, 512 * 100 + 100),
    ("densenet", 64 * 3 * 7 * 7 + 64, 248 * 100 + 100),
    ("nin", 96 * 3 * 11 * 11 + 96, 100 * 100 + 100),    # NiN ends in a 1×1 conv with `classes` channels
])
def test_channels_and_classes_change_first_and_last_layer_params(name, first, last):
    model = build(resolve(name), 224, channels=3, classes=100)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert n_params(layers[0]) == first
    assert n_params(layers[-1]) == last
    derived = {"alexnet": alexnet_params(224, 3, 100), "resnet": resnet_params((2, 2, 2, 2), channels=3, classes=100),
               "densenet": densenet_params((4, 4, 4, 4), channels=3, classes=100), "nin": nin_params(3, 100)}[name]
    assert n_params(model) == derived


def test_channels_and_classes_deltas_for_alexnet_by_hand():
    # 2 more input channels: 96·2·11·11 = 23,232 conv1 weights; 90 more classes: (4096 + 1)·90 = 368,730.
    model = build(resolve("alexnet"), 224, channels=3, classes=100)
    assert n_params(model) == 46_764_746 + 23_232 + 368_730 == 47_156_708


# ------------------------------------------------------------------------------------------ smallest input size

#: Smallest input side per model, with the side of the map that collapses one pixel below it.
SMALLEST = {
    "lenet": 12,      # 12 → conv(p2) 12 → pool 6 → conv5 2 → pool 1;    11 → 11 → 5 → 1 → pool 0
    "alexnet": 65,    # 65 → (65+2-11)//4+1 = 15 → 7 → 7 → 3 → 3 → 1;   64 → 14 → 6 → 2 → pool 0
    "vgg": 32,        # five 2×2 pools: 32 → 16 → 8 → 4 → 2 → 1;        31 → 15 → 7 → 3 → 1 → 0
    "nin": 67,        # 67 → (67-11)//4+1 = 15 → 7 → 3 → 1;              66 → 14 → 6 → 2 → pool 0
    "googlenet": 1,   # every conv and pool is padded so that a 1×1 map stays 1×1: (1+6-7)//2+1 = 1, (1+2-3)//2+1 = 1
    "resnet": 1,      # the same stem as GoogLeNet, padded 3×3 convs, 1×1 strided projections: 1 stays 1
    "densenet": 29,   # 29 → 15 → 8 → avg pools 4 → 2 → 1;                28 → 14 → 7 → 3 → 1 → avg pool 0
}


@pytest.mark.parametrize(("name", "size"), sorted(SMALLEST.items()))
def test_smallest_input_size_matches_hand_count(name, size):
    assert smallest_input_size(resolve(name)) == size


@pytest.mark.parametrize("name", ["lenet", "alexnet", "nin", "densenet"])
def test_smallest_input_size_agrees_with_a_real_cpu_forward(name):
    size = SMALLEST[name]
    model = to_device(build(resolve(name), size), "cpu").eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(1, 1, size, size)).shape) == (1, CLASSES)
        with pytest.raises(RuntimeError):
            model(torch.randn(1, 1, size - 1, size - 1))


def test_too_small_input_names_the_collapsing_layer_and_the_smallest_size():
    with pytest.raises(ProfilerError) as err:
        build(resolve("alexnet"), 64)
    # AlexNet's layer 12 is its third max pool: 64 → 14 → 6 → 6 → 2, and a 3×3 window does not fit in 2×2.
    assert "layer 12 (MaxPool2d)" in str(err.value)
    assert "smallest size that works is 65" in str(err.value)


# ------------------------------------------------------------------------------------------ name resolution

def test_unknown_zoo_name_suggests_the_closest_names():
    with pytest.raises(ProfilerError, match="did you mean alexnet"):
        resolve("alexnt")


def test_torchvision_model_defaults_to_3_channels_and_its_weights_crop_size():
    assert resolve("torchvision:resnet50").input_shape(1, 224) == (1, 3, 224, 224)
    assert resolve("torchvision:resnet50").default_size == 224
    assert resolve("torchvision:inception_v3").default_size == 299   # Inception_V3_Weights crop_size


def test_torchvision_regnet_builds_although_its_constructor_computes_with_tensors():
    # RegNet's constructor derives block widths with tensor arithmetic, which fails on the meta device; the loader
    # builds it on the CPU and moves it. 4,344,144 is the num_params of RegNet_Y_400MF_Weights.IMAGENET1K_V1.
    model = build(resolve("torchvision:regnet_y_400mf"), 224)
    assert n_params(model) == 4_344_144
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_torchvision_unknown_model_is_a_user_error_with_suggestions():
    with pytest.raises(ProfilerError, match="no classification model 'resnet5'.*torchvision:resnet50"):
        resolve("torchvision:resnet5")


def test_factory_builds_with_3_channels_and_sizes_its_lazy_layer(factory_dir):
    spec = resolve("mypkg.nets:build")
    assert (spec.external, spec.input_shape(1, 32)) == (True, (1, 3, 32, 32))
    model = build(spec, 32)
    # conv 3→8 3×3: 8·3·9 + 8 = 224; after global pooling the lazy linear is 8 → 5: 8·5 + 5 = 45
    assert n_params(model) == 224 + 45


def test_factory_whose_constructor_needs_real_tensors_is_built_on_cpu_then_moved_to_meta(factory_dir):
    model = build(resolve("mypkg.nets:NeedsRealTensors"), 16)
    assert n_params(model) == 12 * 3 + 12          # a 1×1 conv 3 → 4 + 8 = 12 channels
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize(("name", "message"), [
    ("mypkg.nets:explodes", "mypkg.nets:explodes raised RuntimeError while building: factory exploded on purpose"),
    ("mypkg.nets:not_a_module", "returned dict, not a torch.nn.Module"),
    ("mypkg.nets:nothere", "module 'mypkg.nets' has no callable 'nothere'"),
    ("mypkg.missing_dep:build", "cannot import 'mypkg.missing_dep'.*no_such_dependency_anywhere"),
    ("mypkg.broken:build", "importing 'mypkg.broken' for mypkg.broken:build raised ZeroDivisionError"),
    ("nosuchmodule:f", "cannot import 'nosuchmodule'"),
    (":f", "is not a model"),
])
def test_bad_factories_are_user_errors(name, message, factory_dir):
    with pytest.raises(ProfilerError, match=message):
        build(resolve(name), 32)


def test_classes_cannot_be_forced_on_a_factory(factory_dir):
    with pytest.raises(ProfilerError, match="--classes cannot be applied"):
        build(resolve("mypkg.nets:build"), 32, classes=3)


# ------------------------------------------------------------------------------ zoo models copied from a prototype

def _layout(model: nn.Module) -> list[tuple]:
    """Everything of a meta model that a count, trace or measurement reads: module types and modes, parameter and
    buffer names with shape, strides, dtype and requires_grad, and the printed architecture."""
    tensors = [(name, type(t).__name__, tuple(t.shape), t.stride(), t.dtype, t.requires_grad, t.device.type)
               for name, t in [*model.named_parameters(), *model.named_buffers()]]
    modules = [(name, type(m).__name__, m.training) for name, m in model.named_modules()]
    return [*tensors, *modules, repr(model)]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_a_zoo_build_is_a_copy_equal_to_a_fresh_construction_and_shares_nothing_with_the_next(name):
    from profiler.models import loading

    spec = resolve(name)
    fresh = loading._forward_once(loading._construct_new(spec, 1, None), (1, 1, 96, 96))
    first = build(spec, 96)
    assert _layout(first) == _layout(fresh)
    # whatever a caller does to its model, the next build is untouched
    first.eval()
    for p in first.parameters():
        p.grad = torch.empty_like(p)
        p.requires_grad_(False)
    first.register_forward_hook(lambda *_: None)
    second = build(resolve(name), 96)
    assert _layout(second) == _layout(fresh)
    assert not {id(p) for p in second.parameters()} & {id(p) for p in first.parameters()}
    assert all(p.grad is None for p in second.parameters()) and not second._forward_hooks


def test_the_module_copy_keeps_shared_submodules_and_tied_weights_shared():
    from profiler.models.loading import _copy_module

    with torch.device("meta"):
        shared = nn.Linear(4, 4)
        model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 4))
        model[3].weight = model[0].weight
    model.extra = [1, {"k": (2, 3)}]
    copied = _copy_module(model, {})
    assert copied[0] is copied[2] and copied[0] is not shared
    assert copied[3].weight is copied[0].weight and copied[3].weight is not shared.weight
    assert copied.extra == model.extra and copied.extra is not model.extra


def test_models_that_are_not_the_zoo_s_own_are_constructed_anew_every_build():
    from dataclasses import replace

    calls = []

    def make(channels: int, classes: int | None) -> nn.Module:
        calls.append(channels)
        return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.Flatten(), nn.LazyLinear(classes or 10))

    zoo = resolve("nin")
    for spec in (replace(zoo, make=make), replace(zoo, name="mine", make=make, external=True)):
        calls.clear()
        first, second = build(spec, 32), build(spec, 32)
        assert first is not second and len(calls) == 2, spec.name
