"""LeNet-5 as d2l §6.6 defines it: sigmoid activations, average pooling, padding 2 on the first convolution."""

from torch import nn


def lenet(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """LeNet (d2l §6.6). The first fully connected layer is lazy so the net builds at any input size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.LazyLinear(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )
