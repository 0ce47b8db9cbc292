"""VGG as d2l §7.2 defines it: ``vgg_block`` stacks of 3×3 convolutions, then three fully connected layers."""

from collections.abc import Sequence

from torch import nn

VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG16_ARCH = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
VGG19_ARCH = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """``num_convs`` 3×3 convolutions (padding 1, ReLU each) and a 2×2 max pool that halves the feature map."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(conv_arch: Sequence[tuple[int, int]], in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """VGG from ``conv_arch`` = ((num_convs, out_channels), ...); the first linear layer is lazy (the book's 512·7·7
    only fits 224)."""
    blocks = []
    for num_convs, out_channels in conv_arch:
        blocks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels
    return nn.Sequential(
        *blocks, nn.Flatten(),
        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )


def vgg11(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """VGG-11, the book's ``conv_arch`` (8 convolutions + 3 linear layers)."""
    return vgg(VGG11_ARCH, in_channels, num_classes)


def vgg16(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """VGG-16 (configuration D of the VGG paper), built with the book's blocks."""
    return vgg(VGG16_ARCH, in_channels, num_classes)


def vgg19(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """VGG-19 (configuration E of the VGG paper), built with the book's blocks."""
    return vgg(VGG19_ARCH, in_channels, num_classes)
