"""Models the benchmarks share: a deep residual CNN (stem + residual blocks)."""

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(x + y)


def resnet(channels=64, blocks=75):
    """Stem + ``blocks`` residual blocks (conv-bn-relu-conv-bn + skip), in eval mode."""
    stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU())
    net = nn.Sequential(stem, *[ResBlock(channels) for _ in range(blocks)])
    return net.eval()


def example_input():
    return torch.randn(1, 3, 32, 32)
