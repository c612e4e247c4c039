"""A tiny labelled dataset and BuildContext for the pruning tests (3 classes of 1x8x8 patterns)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgecomp.compress.base import BuildContext
from edgecomp.data import Dataset
from edgecomp.spec import ModelSpec
from edgecomp.targets import load_profile, load_target


def tiny_dataset(n: int = 96, seed: int = 0) -> Dataset:
    """Three classes: a bright row, column or diagonal on noise; split 60/20/20."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        if c == 0:
            x[i, 0, 3, :] += 2
        elif c == 1:
            x[i, 0, :, 3] += 2
        else:
            x[i, 0, np.arange(8), np.arange(8)] += 2
    a, b = int(0.6 * n), int(0.8 * n)
    return Dataset.from_arrays("tiny", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])


def tiny_ctx(teacher: nn.Module | None, data: Dataset | None = None, with_data: bool = True) -> BuildContext:
    """A BuildContext for android-arm64 with the tiny dataset (or none) and ``teacher``."""
    target = load_target("android-arm64")
    spec = ModelSpec(name="tiny", input_shape=[1, 1, 8, 8])
    return BuildContext(spec=spec, target=target, profile=load_profile(target.hardware),
                        data=(data or tiny_dataset()) if with_data else None, teacher=teacher)


class TwoConvNet(nn.Module):
    """Two conv+BN blocks and a linear head: 1x8x8 inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.head(x.mean((2, 3)))
