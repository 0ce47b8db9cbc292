"""The registry of built-in models: name → builder(in_channels, num_classes), with family and book section.

Section numbers are those of *Dive into Deep Learning*'s Chinese edition, 2nd edition (动手学深度学习 第二版,
zh-v2.d2l.ai): the numbering the course notes follow (their chapter 7, 现代卷积神经网络, is the modern CNNs; LeNet is
§6.6). The English edition (d2l.ai) numbers the same sections one chapter later: LeNet §7.6, the modern CNNs chapter 8.
Each entry's :class:`BookSection` carries both numbers and titles; its ``source`` names the edition in short
(:data:`EDITION`).
"""

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

#: The edition whose section numbers the zoo gives, in short (every "§" of a source is preceded by it).
EDITION = "d2l-zh v2"
#: The same edition in full, and the English one, for the reports.
EDITION_NAME = "动手学深度学习 (Dive into Deep Learning, Chinese edition), 2nd edition (zh-v2.d2l.ai)"
ENGLISH_EDITION_NAME = "Dive into Deep Learning, English edition, d2l.ai"


@dataclass(frozen=True)
class BookSection:
    """A section of the book: its number and title in :data:`EDITION` and in the English edition (d2l.ai)."""

    number: str
    title: str
    english_number: str
    english_title: str

    def __str__(self) -> str:
        return (f"{EDITION} §{self.number} {self.title} (English edition §{self.english_number} "
                f"“{self.english_title}”)")


#: The sections the zoo's models come from, by number in :data:`EDITION`.
SECTIONS = {s.number: s for s in (
    BookSection("6.6", "卷积神经网络（LeNet）", "7.6", "Convolutional Neural Networks (LeNet)"),
    BookSection("7.1", "深度卷积神经网络（AlexNet）", "8.1", "Deep Convolutional Neural Networks (AlexNet)"),
    BookSection("7.2", "使用块的网络（VGG）", "8.2", "Networks Using Blocks (VGG)"),
    BookSection("7.3", "网络中的网络（NiN）", "8.3", "Network in Network (NiN)"),
    BookSection("7.4", "含并行连结的网络（GoogLeNet）", "8.4", "Multi-Branch Networks (GoogLeNet)"),
    BookSection("7.6", "残差网络（ResNet）", "8.6", "Residual Networks (ResNet) and ResNeXt"),
    BookSection("7.7", "稠密连接网络（DenseNet）", "8.7", "Densely Connected Networks (DenseNet)"),
)}


@dataclass(frozen=True)
class ZooEntry:
    """One built-in model. ``builder(in_channels, num_classes)`` returns it on the current default device. ``what``
    says what the model is within its book ``section``; ``source`` is both in one line."""

    name: str
    family: str
    section: BookSection
    what: str
    builder: Callable[[int, int], nn.Module]
    default_size: int = 224
    aliases: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        """Where the model comes from: "d2l-zh v2 §7.1 AlexNet"."""
        return f"{EDITION} §{self.section.number} {self.what}"


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("lenet", "LeNet", SECTIONS["6.6"], "LeNet (sigmoid, average pooling)", lenet, default_size=28),
        ZooEntry("alexnet", "AlexNet", SECTIONS["7.1"], "AlexNet", alexnet),
        ZooEntry("vgg", "VGG", SECTIONS["7.2"], "VGG-11, the book's conv_arch", vgg11, aliases=("vgg11",)),
        ZooEntry("vgg16", "VGG", SECTIONS["7.2"], "exercise: VGG-16 (paper config D) from the book's blocks", vgg16),
        ZooEntry("vgg19", "VGG", SECTIONS["7.2"], "exercise: VGG-19 (paper config E) from the book's blocks", vgg19),
        ZooEntry("nin", "NiN", SECTIONS["7.3"], "Network in Network", nin),
        ZooEntry("googlenet", "GoogLeNet", SECTIONS["7.4"], "GoogLeNet (Inception blocks)", googlenet),
        ZooEntry("resnet", "ResNet", SECTIONS["7.6"], "ResNet-18", resnet18, aliases=("resnet18",)),
        ZooEntry("resnet34", "ResNet", SECTIONS["7.6"], "exercise: ResNet-34 (paper Table 1, basic blocks)", resnet34),
        ZooEntry("resnet50", "ResNet", SECTIONS["7.6"], "exercise: ResNet-50 (paper Table 1, bottlenecks)", resnet50),
        ZooEntry("densenet", "DenseNet", SECTIONS["7.7"], "DenseNet (blocks 4,4,4,4, growth 32)", densenet_d2l),
        ZooEntry("densenet121", "DenseNet", SECTIONS["7.7"], "exercise: the book's blocks as (6,12,24,16)",
                 densenet121),
        ZooEntry("densenet169", "DenseNet", SECTIONS["7.7"], "exercise: the book's blocks as (6,12,32,32)",
                 densenet169),
        ZooEntry("densenet201", "DenseNet", SECTIONS["7.7"], "exercise: the book's blocks as (6,12,48,32)",
                 densenet201),
    )
}

#: The six families of chapter 7 (the modern CNNs; chapter 8 of the English edition) the reports compare, by zoo name.
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
