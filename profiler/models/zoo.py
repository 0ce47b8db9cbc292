"""The registry of built-in models: name → builder(in_channels, num_classes), with family and book section."""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from profiler.models.alexnet import alexnet
from profiler.models.densenet import densenet121, densenet169, densenet201, densenet_d2l
from profiler.models.googlenet import googlenet
from profiler.models.lenet import lenet
from profiler.models.nin import nin
from profiler.models.resnet import resnet18, resnet34, resnet50
from profiler.models.vgg import vgg11, vgg16, vgg19


@dataclass(frozen=True)
class ZooEntry:
    """One built-in model. ``builder(in_channels, num_classes)`` returns it on the current default device."""

    name: str
    family: str
    source: str
    builder: Callable[[int, int], nn.Module]
    default_size: int = 224
    aliases: tuple[str, ...] = ()


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("lenet", "LeNet", "d2l §6.6 LeNet (sigmoid, average pooling)", lenet, default_size=28),
        ZooEntry("alexnet", "AlexNet", "d2l §7.1 AlexNet", alexnet),
        ZooEntry("vgg", "VGG", "d2l §7.2 VGG-11, the book's conv_arch", vgg11, aliases=("vgg11",)),
        ZooEntry("vgg16", "VGG", "d2l §7.2 exercise: VGG-16 (paper config D) from the book's blocks", vgg16),
        ZooEntry("vgg19", "VGG", "d2l §7.2 exercise: VGG-19 (paper config E) from the book's blocks", vgg19),
        ZooEntry("nin", "NiN", "d2l §7.3 Network in Network", nin),
        ZooEntry("googlenet", "GoogLeNet", "d2l §7.4 GoogLeNet (Inception blocks)", googlenet),
        ZooEntry("resnet", "ResNet", "d2l §7.6 ResNet-18", resnet18, aliases=("resnet18",)),
        ZooEntry("resnet34", "ResNet", "d2l §7.6 exercise: ResNet-34 (paper Table 1, basic blocks)", resnet34),
        ZooEntry("resnet50", "ResNet", "d2l §7.6 exercise: ResNet-50 (paper Table 1, bottlenecks)", resnet50),
        ZooEntry("densenet", "DenseNet", "d2l §7.7 DenseNet (blocks 4,4,4,4, growth 32)", densenet_d2l),
        ZooEntry("densenet121", "DenseNet", "d2l §7.7 exercise: the book's blocks as (6,12,24,16)", densenet121),
        ZooEntry("densenet169", "DenseNet", "d2l §7.7 exercise: the book's blocks as (6,12,32,32)", densenet169),
        ZooEntry("densenet201", "DenseNet", "d2l §7.7 exercise: the book's blocks as (6,12,48,32)", densenet201),
    )
}

#: The six chapter-7 families the reports compare, by their zoo names.
CHAPTER7 = ("alexnet", "vgg", "nin", "googlenet", "resnet", "densenet")


@dataclass(frozen=True)
class ZooRow:
    """One line of ``python -m profiler models``."""

    name: str
    aliases: tuple[str, ...]
    family: str
    source: str
    default_size: int
    params: int


def zoo_listing() -> list[ZooRow]:
    """Every zoo model with its parameter count at its default size (1 channel, 10 classes)."""
    rows = []
    for entry in ZOO.values():
        from profiler.models.loading import build, resolve

        model = build(resolve(entry.name), entry.default_size)
        rows.append(ZooRow(entry.name, entry.aliases, entry.family, entry.source, entry.default_size,
                           sum(p.numel() for p in model.parameters())))
    return rows
