"""Tiny models of several topologies for exporter and compression tests.

``make(name)`` returns a model in eval mode whose outputs are O(1) (logits scaled so that their
standard deviation is about 3), because near-zero outputs would pass any absolute tolerance.
"""

from __future__ import annotations

import torch
from torch import nn


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.body(x))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(torch.relu(x + self.block(x)))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.fuse = nn.Conv2d(10, 12, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))

    def forward(self, x):
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        return self.head(torch.relu(self.fuse(y)))


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.body(x))


class SE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(),
                                     nn.Conv2d(4, 16, 1), nn.Hardsigmoid())
        self.act = nn.Hardswish()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        y = self.act(self.conv(x))
        return self.head(y * self.squeeze(y))


class LinearHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


MODELS = {"plain": Plain, "residual": Residual, "concat": Concat, "depthwise": Depthwise, "se": SE,
          "linear": LinearHead}
SHAPES = {name: [1, 3, 8, 8] for name in MODELS} | {"linear": [1, 20]}


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def make(name: str, seed: int = 0) -> nn.Module:
    """A tiny model of topology ``name`` with random weights, BN statistics set, outputs of std ~3."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(32, *SHAPES[name][1:])
    with torch.no_grad():
        std = model(x).std()
        head = last_linear(model)
        head.weight.mul_(3.0 / float(std))
        head.bias.mul_(3.0 / float(std))
    return model
