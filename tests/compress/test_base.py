"""What a stage declares to the planner matches what it does (structure, export dtype)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecomp.compress.base import get_stage
from edgecomp.compress.recipe import make_step
from edgecomp.model import count_macs
from tests.rewrite_helpers import context

SHAPE = [1, 1, 8, 8]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3)).eval()


@pytest.mark.parametrize(("name", "settings"), [
    ("quantize.fp16", {}),
    ("binarize", {"epochs": 0}),
    ("cluster", {"epochs": 0, "bits": 2}),
    ("prune.filter", {"ratio": 0.5, "finetune_epochs": 0}),
])
def test_declared_dtype_and_structure_match_what_the_stage_does(name, settings):
    cls = get_stage(name)
    ctx = context(SHAPE)
    model = _net()
    step = make_step(name, settings)
    result = cls().apply(model, step.config, ctx)
    dtype = (result.export or ctx.export).dtype
    assert dtype == (cls.export_dtype or ctx.export.dtype)
    changed = count_macs(result.model, SHAPE) != count_macs(_net(), SHAPE)
    assert changed == cls.structural
