"""Small shared pieces for the rewrite tests (separable, lowrank, distill): a build context and data."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgecomp.compress.base import BuildContext
from edgecomp.data import Dataset
from edgecomp.spec import ModelSpec
from edgecomp.targets import load_profile, load_target


def context(input_shape: list[int], data: Dataset | None = None, teacher: nn.Module | None = None) -> BuildContext:
    """A build context for android-arm64 around a model with ``input_shape``."""
    target = load_target("android-arm64")
    spec = ModelSpec(name="tiny", input_shape=input_shape, layout="NCHW" if len(input_shape) == 4 else "NC")
    return BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=teacher)


def teacher_dataset(teacher: nn.Module, in_shape: tuple[int, ...], n: int = 600, seed: int = 0) -> Dataset:
    """Gaussian inputs labelled by ``teacher``'s argmax, split 60/20/20."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *in_shape, generator=gen)
    with torch.no_grad():
        y = teacher.eval()(x).argmax(1)
    x_np, y_np = x.numpy().astype(np.float32), y.numpy().astype(np.int64)
    a, b = int(0.6 * n), int(0.8 * n)
    return Dataset.from_arrays("toy", x_np[:a], y_np[:a], x_np[a:b], y_np[a:b], x_np[b:], y_np[b:])
