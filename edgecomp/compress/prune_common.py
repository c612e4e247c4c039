"""What the pruning stages share: recovery fine-tuning settings and routine, and small measurements.

Recovery fine-tunes the pruned network on the build's training data with distillation from the
unpruned model (``ctx.teacher``) through :func:`edgecomp.finetune.finetune`; without data it is skipped
and says so in the stage's notes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field
from torch import nn

from edgecomp.compress.base import BuildContext, StageConfig
from edgecomp.finetune import FinetuneConfig, finetune
from edgecomp.metrics import evaluate

logger = logging.getLogger(__name__)
NO_DATA_NOTE = "no training data was given, so the pruned model was not fine-tuned (pass --data to recover accuracy)"


class RecoveryConfig(StageConfig):
    """Recovery fine-tuning settings shared by the pruning stages."""

    finetune_epochs: int = Field(20, ge=0, description="Most epochs of recovery fine-tuning (0 = none).")
    finetune_lr: float = Field(1e-3, gt=0, description="Adam learning rate of recovery fine-tuning.")
    finetune_time_s: float | None = Field(None, gt=0, description="Stop recovery fine-tuning after this many seconds.")
    distill: bool = Field(True, description="Distil from the unpruned model while fine-tuning.")


def example_input(ctx: BuildContext) -> torch.Tensor:
    """A zero input of the model's shape (batch 1), for tracing."""
    return torch.zeros(ctx.spec.input_shape)


def probe_input(ctx: BuildContext, n: int = 16) -> torch.Tensor:
    """Real inputs when there is data (a few test images), else seeded random normal ones."""
    if ctx.data is not None:
        return torch.as_tensor(ctx.data.sample("test", n)[0])
    gen = torch.Generator().manual_seed(ctx.seed)
    return torch.randn([n, *ctx.spec.input_shape[1:]], generator=gen)


def eval_accuracy(model: nn.Module, ctx: BuildContext) -> float | None:
    """Top-1 on the test split in percent, or None without data."""
    return None if ctx.data is None else evaluate(model, ctx.data, "test")


def recover(model: nn.Module, cfg: RecoveryConfig, ctx: BuildContext, metrics: dict[str, Any], notes: list[str],
            on_batch: Callable[[nn.Module], None] | None = None, epochs: int | None = None) -> None:
    """Fine-tune ``model`` in place (distilling from ``ctx.teacher``); record accuracy before and after."""
    epochs = cfg.finetune_epochs if epochs is None else epochs
    if ctx.data is None:
        if NO_DATA_NOTE not in notes:
            notes.append(NO_DATA_NOTE)
        return
    before = eval_accuracy(model, ctx)
    metrics.setdefault("accuracy_before_finetune", before)
    if epochs == 0:
        if "recovery fine-tuning disabled (finetune_epochs=0)" not in notes:
            notes.append("recovery fine-tuning disabled (finetune_epochs=0)")
        return
    teacher = ctx.teacher if cfg.distill else None
    ft = FinetuneConfig(epochs=epochs, lr=cfg.finetune_lr, time_budget_s=cfg.finetune_time_s, seed=ctx.seed)
    result = finetune(model, ctx.data, ft, teacher=teacher, on_batch=on_batch, policy=ctx.finetune_policy)
    metrics["accuracy_after_finetune"] = eval_accuracy(model, ctx)
    metrics.setdefault("finetune", []).append(
        {"epochs": result.epochs, "stopped": result.stopped, "best_val_accuracy": result.best_val_accuracy,
         "distilled": teacher is not None})
