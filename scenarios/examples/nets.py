"""Model builders for fogsim scenarios: each returns a torch.nn.Module for the scenario's data.

fogsim calls a builder as ``build(input_shape=(C, H, W), num_classes=K, **model.args)`` with
PyTorch seeded by the scenario's seed, and measures the network's activation memory itself, so
any module that trains with PyTorch will do: skip connections, branches, functional calls.
"""

from torch import nn


class Residual(nn.Module):
    """Two 3x3 convolutions and a skip connection (a 1x1 convolution where the shape changes)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU()
        self.skip = nn.Identity() if stride == 1 and channels_in == channels_out else nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False), nn.BatchNorm2d(channels_out))

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.skip(x))


class ResNet(nn.Module):
    """A ResNet-8: a stem convolution, three residual blocks (each halving the size after the first),
    global average pooling and a linear classifier."""

    def __init__(self, channels: int, num_classes: int, width: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.blocks = nn.Sequential(Residual(width, width), Residual(width, 2 * width, 2),
                                    Residual(2 * width, 4 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def build(input_shape, num_classes, width=8):
    """A ResNet-8 for images of ``input_shape`` (channels, height, width), ``width`` channels in its stem."""
    return ResNet(input_shape[0], num_classes, width)


class Separable(nn.Module):
    """A depthwise-separable block (MobileNet): a 3x3 depthwise then a 1x1 pointwise convolution."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(channels_in, channels_in, 3, stride=stride, padding=1, groups=channels_in,
                                   bias=False)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels_out)
        self.act = nn.ReLU6()

    def forward(self, x):
        return self.act(self.norm(self.pointwise(self.depthwise(x))))


def separable(input_shape, num_classes, width=16):
    """A small MobileNet-like network: a stem convolution, two depthwise-separable blocks, a classifier."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, stride=2, padding=1), nn.ReLU6(),
        Separable(width, 2 * width), Separable(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))
