"""DenseNet as d2l §7.7 defines it: dense blocks of BN-ReLU-3×3 conv (growth 32) joined by transition layers that
halve channels and size; the exercise variants reuse the same blocks with DenseNet-121/169/201 block counts."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


def conv_block(in_channels: int, num_channels: int) -> nn.Sequential:
    """BN → ReLU → 3×3 convolution (padding 1)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1),
    )


class DenseBlock(nn.Module):
    """``num_convs`` conv blocks; each one's output is concatenated to its input on the channel axis."""

    def __init__(self, num_convs: int, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.net = nn.Sequential(*(conv_block(in_channels + i * growth_rate, growth_rate) for i in range(num_convs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.net:
            y = blk(x)
            x = torch.cat((x, y), dim=1)
        return x


def transition_block(in_channels: int, num_channels: int) -> nn.Sequential:
    """BN → ReLU → 1×1 convolution → 2×2 average pool: fewer channels, half the height and width."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(),
        nn.Conv2d(in_channels, num_channels, kernel_size=1),
        nn.AvgPool2d(kernel_size=2, stride=2),
    )


def densenet(block_config: Sequence[int] = (4, 4, 4, 4), growth_rate: int = 32, in_channels: int = 1,
             num_classes: int = 10) -> nn.Module:
    """DenseNet with the book's stem ``b1``, dense blocks ``dense1``… and transitions ``trans1``… (halving)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["b1"] = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    channels = 64
    for i, num_convs in enumerate(block_config):
        layers[f"dense{i + 1}"] = DenseBlock(num_convs, channels, growth_rate)
        channels += num_convs * growth_rate
        if i != len(block_config) - 1:
            layers[f"trans{i + 1}"] = transition_block(channels, channels // 2)
            channels //= 2
    layers["bn"] = nn.BatchNorm2d(channels)
    layers["relu"] = nn.ReLU()
    layers["pool"] = nn.AdaptiveAvgPool2d((1, 1))
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(channels, num_classes)
    return nn.Sequential(layers)


def densenet_d2l(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The book's DenseNet: four dense blocks of 4 convolutions each, growth 32."""
    return densenet((4, 4, 4, 4), 32, in_channels, num_classes)


def densenet121(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The book's blocks with DenseNet-121's block counts (6, 12, 24, 16)."""
    return densenet((6, 12, 24, 16), 32, in_channels, num_classes)


def densenet169(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The book's blocks with DenseNet-169's block counts (6, 12, 32, 32)."""
    return densenet((6, 12, 32, 32), 32, in_channels, num_classes)


def densenet201(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The book's blocks with DenseNet-201's block counts (6, 12, 48, 32)."""
    return densenet((6, 12, 48, 32), 32, in_channels, num_classes)
