"""ResNet as d2l §7.6 defines it (``Residual`` blocks with 3×3 convolutions and batch norm), and the exercise
variants ResNet-34/50 laid out as in Table 1 of the ResNet paper but built with the book's conventions: the book's
stem, biases on every convolution, batch norm after each convolution of the main path, an un-normalized 1×1
projection on the shortcut where shape changes, and the stride on the block's first 3×3 convolution."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class Residual(nn.Module):
    """The book's basic block: two 3×3 convolutions with batch norm; optional strided 1×1 projection ``conv3``."""

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        y += x
        return F.relu(y)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (strided) → 1×1 expand ×4, batch norm after each; 1×1 projection ``conv4`` on the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1) -> None:
        super().__init__()
        out_channels = num_channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, num_channels, kernel_size=1)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv3 = nn.Conv2d(num_channels, out_channels, kernel_size=1)
        self.conv4 = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.conv4 is not None:
            x = self.conv4(x)
        y += x
        return F.relu(y)


def _stage(block: type[Residual] | type[Bottleneck], in_channels: int, num_channels: int, num_blocks: int,
           first_stage: bool) -> nn.Sequential:
    """The book's ``resnet_block``: the first block of every stage but the first halves the map with stride 2; a
    projection is added wherever the block's input and output shapes differ."""
    expansion = getattr(block, "expansion", 1)
    blocks = []
    for i in range(num_blocks):
        strides = 2 if i == 0 and not first_stage else 1
        use_1x1conv = strides != 1 or in_channels != num_channels * expansion
        blocks.append(block(in_channels, num_channels, use_1x1conv=use_1x1conv, strides=strides))
        in_channels = num_channels * expansion
    return nn.Sequential(*blocks)


def resnet(block: type[Residual] | type[Bottleneck], num_blocks: Sequence[int], in_channels: int = 1,
           num_classes: int = 10) -> nn.Module:
    """A ResNet with the book's stem ``b1`` (7×7/2 conv, BN, ReLU, 3×3/2 max pool) and four stages ``b2``…``b5`` of
    ``num_blocks`` blocks with 64, 128, 256, 512 channels (×4 for bottlenecks)."""
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["b1"] = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    channels = 64
    for i, (width, count) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
        stages[f"b{i + 2}"] = _stage(block, channels, width, count, first_stage=i == 0)
        channels = width * getattr(block, "expansion", 1)
    stages["pool"] = nn.AdaptiveAvgPool2d((1, 1))
    stages["flatten"] = nn.Flatten()
    stages["fc"] = nn.Linear(channels, num_classes)
    return nn.Sequential(stages)


def resnet18(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """ResNet-18 exactly as d2l §7.6: two ``Residual`` blocks per stage."""
    return resnet(Residual, (2, 2, 2, 2), in_channels, num_classes)


def resnet34(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """ResNet-34: basic blocks [3, 4, 6, 3] (ResNet paper, Table 1)."""
    return resnet(Residual, (3, 4, 6, 3), in_channels, num_classes)


def resnet50(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3] with expansion 4 (ResNet paper, Table 1)."""
    return resnet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes)
