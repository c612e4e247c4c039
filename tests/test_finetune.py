"""The fine-tune policy travels on BuildContext: a stage skips or caps its recovery fine-tune as told."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from edgecomp.compress.base import REGISTRY, stage_names
from edgecomp.compress.prune_filter import FilterPrune
from edgecomp.compress.recipe import make_step
from edgecomp.finetune import FinetunePolicy
from tests.prune_helpers import tiny_ctx


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3)).eval()


def _finetune_record(policy: FinetunePolicy) -> dict:
    model = _net()
    ctx = dataclasses.replace(tiny_ctx(model), finetune_policy=policy)
    cfg = FilterPrune.Config(ratio=0.5, finetune_epochs=4)  # patience 5: four epochs never stop early
    return FilterPrune().apply(model, cfg, ctx).metrics["finetune"][0]


def test_policy_on_the_context_skips_the_recovery_finetune():
    assert _finetune_record(FinetunePolicy(skip=True))["stopped"] == "skipped"


def test_policy_on_the_context_caps_the_epochs():
    assert _finetune_record(FinetunePolicy(max_epochs=1))["epochs"] == 1
    assert _finetune_record(FinetunePolicy())["epochs"] == 4


def test_default_context_neither_skips_nor_caps():
    assert tiny_ctx(None).finetune_policy == FinetunePolicy()


def test_every_search_space_names_registered_stages_with_valid_settings():
    stage_names()
    for cls in REGISTRY.values():
        for recipe in cls.search_space():
            assert recipe, cls.name
            for name, kwargs in recipe:
                assert make_step(name, kwargs).name == name
        assert cls.export_dtype in (None, "fp32", "fp16", "int8", "binary")
