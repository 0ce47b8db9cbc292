"""Network in Network as d2l §7.3 defines it: NiN blocks (a k×k convolution, then two 1×1), no fully connected layer."""

from torch import nn


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Sequential:
    """A k×k convolution followed by two 1×1 convolutions, each with a ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )


def nin(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """NiN (d2l §7.3): the last NiN block has ``num_classes`` channels, then global average pooling."""
    return nn.Sequential(
        nin_block(in_channels, 96, kernel_size=11, stride=4, padding=0),
        nn.MaxPool2d(3, stride=2),
        nin_block(96, 256, kernel_size=5, stride=1, padding=2),
        nn.MaxPool2d(3, stride=2),
        nin_block(256, 384, kernel_size=3, stride=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5),
        nin_block(384, num_classes, kernel_size=3, stride=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
    )
