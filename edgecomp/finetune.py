"""Training, evaluation and knowledge-distillation fine-tuning, shared by every lossy stage.

``finetune`` trains a student on the training split, streamed in mini-batches, with the data's loss
(cross-entropy to class labels by default) and, when a teacher is given, temperature-softened KL to the
teacher (Hinton et al. 2015). It stops early when the validation metric stops improving, respects an epoch
and a time budget, logs progress, and returns the best weights seen on the validation split.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgecomp.data import Dataset
from edgecomp.errors import ConfigError
from edgecomp.metrics import first_output, load_metric

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetunePolicy:
    """How a build limits every recovery fine-tune (it travels on ``BuildContext.finetune_policy``)."""

    skip: bool = False
    """Return at once without training: the planner's cheap, structure-only screen."""
    max_epochs: int | None = None
    """Run at most this many epochs (None: each stage's own setting)."""
    deadline: float | None = None
    """``time.monotonic()`` value at which every fine-tune stops (the planner's --search-time), or None."""
    on_epoch: Callable[[dict], None] | None = None
    """Called after every epoch with its history entry, ``epochs`` (the planner's progress lines) and the
    epoch's ``seconds`` (the planner's estimate of what a longer fine-tune costs)."""


class FinetuneConfig(BaseModel):
    """How to fine-tune after a lossy stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=0, description="Most epochs to train.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(64, ge=1, description="Mini-batch size.")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    temperature: float = Field(4.0, gt=0, description="Distillation temperature T.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the KL-to-teacher term (1-alpha for labels).")
    patience: int = Field(5, ge=1, description="Epochs without validation gain before stopping.")
    time_budget_s: float | None = Field(None, gt=0, description="Stop after this many seconds.")
    seed: int = Field(0, description="Seed for shuffling.")
    ties_by_loss: bool = Field(False, description="Among epochs tied on best val accuracy, keep the lowest val loss.")


@dataclass
class FinetuneResult:
    """What a fine-tune did: epochs run, best validation accuracy, per-epoch history."""

    epochs: int
    best_val_accuracy: float
    """Best validation value of the data's metric (top-1 % by default)."""
    history: list[dict] = field(default_factory=list)
    stopped: str = "epochs"


def predict(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The model's first output for ``x`` in eval mode, as a float32 numpy array."""
    model.eval()
    xs = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        outs = [first_output(model(xs[i : i + batch_size])) for i in range(0, len(xs), batch_size)]
    return torch.cat(outs).numpy()


def predict_all(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> list[np.ndarray]:
    """Every output of the model for ``x`` in eval mode, in order, each a float32 numpy array (one row per input)."""
    model.eval()
    xs = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        batches = [_tensors(model(xs[i : i + batch_size])) for i in range(0, len(xs), batch_size)]
    return [torch.cat([b[j] for b in batches]).float().numpy() for j in range(len(batches[0]))]


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in percent on in-memory arrays."""
    return float((predict(model, x).argmax(1) == y).mean() * 100.0)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation loss: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1), reduction="batchmean"
    ) * (t * t)


def _tensors(outputs: Any) -> list[torch.Tensor]:
    """A model's outputs as a flat list of tensors (one for a plain classifier)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return [t for o in outputs for t in _tensors(o)]


def is_class_targets(targets: Any) -> bool:
    """Whether ``targets`` is a batch of integer class indices (what cross-entropy and top-k need)."""
    return isinstance(targets, torch.Tensor) and targets.ndim == 1 and not targets.is_floating_point() \
        and targets.dtype != torch.bool


def task_loss(outputs: Any, targets: Any, data: Dataset) -> torch.Tensor | None:
    """The loss to the targets: the data's own loss, else cross-entropy of the first output to class targets.

    None when neither applies (targets that are not class indices and no loss given): distillation alone.
    """
    if data.loss is not None:
        return data.loss(outputs, targets)
    if is_class_targets(targets):
        return F.cross_entropy(first_output(outputs), targets)
    return None


def distill_loss(student: Any, teacher: Any, temperature: float) -> torch.Tensor:
    """Distillation to every output: KL at ``temperature`` on the first (logits), mean squared error on the rest."""
    s, t = _tensors(student), _tensors(teacher)
    loss = kd_loss(s[0], t[0], temperature) if s[0].ndim == 2 else F.mse_loss(s[0], t[0])
    for a, b in zip(s[1:], t[1:], strict=True):
        loss = loss + F.mse_loss(a, b)
    return loss


def _val_stats(model: nn.Module, data: Dataset) -> tuple[float, float]:
    """The validation metric and the mean task loss (NaN where there is none), from one pass."""
    metric = (data.metric or load_metric(None)).make()
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in data.batches("val"):
            out = model(x)
            metric.update(out, y)
            loss = task_loss(out, y, data)
            if loss is not None:
                total, count = total + float(loss) * len(x), count + len(x)
    return float(metric.compute()), (total / count if count else float("nan"))


def finetune(
    model: nn.Module,
    data: Dataset,
    cfg: FinetuneConfig | None = None,
    teacher: nn.Module | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    on_batch: Callable[[nn.Module], None] | None = None,
    extra_params: Iterable[nn.Parameter] = (),
    policy: FinetunePolicy | None = None,
) -> FinetuneResult:
    """Train ``model`` in place on the training split, streamed in mini-batches (with distillation when
    ``teacher`` is given), keeping the weights with the best validation metric.

    The loss is the data's own (``data.loss``) or cross-entropy to class targets, mixed with distillation to
    the teacher by ``cfg.alpha``; targets that are not class indices with no loss given train by distillation
    alone (a teacher is then required). ``extra_loss(model)`` adds a regulariser; ``on_batch(model)`` runs
    after each optimiser step (e.g. to re-apply a pruning mask). ``extra_loss`` runs after both the
    student's and the teacher's forward pass on the batch, so forward hooks on either model hold that
    batch's features (hint losses rely on this); ``extra_params`` (e.g. a hint loss's regressors) are
    optimised alongside the model's parameters but are not part of it. ``policy`` (a build's
    ``ctx.finetune_policy``) may skip the fine-tune, cap its epochs or stop it at a deadline.
    """
    cfg = cfg or FinetuneConfig()
    policy = policy or FinetunePolicy()
    if policy.skip:
        return FinetuneResult(0, float("nan"), stopped="skipped")
    if policy.max_epochs is not None and cfg.epochs > policy.max_epochs:
        cfg = cfg.model_copy(update={"epochs": policy.max_epochs})
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if teacher is not None:
        teacher.eval()
    (best_acc, best_loss), best_state = _val_stats(model, data), copy.deepcopy(model.state_dict())
    bad, history = 0, []
    start, stopped = time.monotonic(), "epochs"
    epoch = 0
    n_train = data.size("train")
    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.monotonic()
        model.train()
        total = 0.0
        for xb, yb in data.batches("train", cfg.batch_size, shuffle=True, generator=gen):
            out = model(xb)
            loss = task_loss(out, yb, data)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(xb)
                kd = distill_loss(out, t_out, cfg.temperature)
                loss = kd if loss is None else (1 - cfg.alpha) * loss + cfg.alpha * kd
            elif loss is None:
                raise ConfigError("the data's targets are not class indices and no loss was given, so there is "
                                  "nothing to fine-tune against",
                                  "return a 'loss' with the dataset factory's splits, or fine-tune with a teacher")
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if on_batch is not None:
                on_batch(model)
            total += float(loss.detach()) * len(xb)
            if policy.deadline is not None and time.monotonic() > policy.deadline:
                break
        val, val_loss = _val_stats(model, data)
        history.append({"epoch": epoch, "loss": total / n_train, "val_metric": val, "val_loss": val_loss})
        logger.debug("epoch %d loss %.4f val %.2f", epoch, total / n_train, val)
        if policy.on_epoch is not None:
            policy.on_epoch({**history[-1], "epochs": cfg.epochs, "seconds": time.monotonic() - epoch_start})
        if val > best_acc or (cfg.ties_by_loss and val == best_acc and val_loss < best_loss):
            best_acc, best_loss, best_state, bad = val, val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        if policy.deadline is not None and time.monotonic() > policy.deadline:
            stopped = "search-deadline"
            break
        if bad >= cfg.patience:
            stopped = "early-stopping"
            break
        if cfg.time_budget_s is not None and time.monotonic() - start > cfg.time_budget_s:
            stopped = "time-budget"
            break
    final_acc, final_loss = _val_stats(model, data)
    if final_acc < best_acc or (cfg.ties_by_loss and final_acc == best_acc and final_loss > best_loss):
        model.load_state_dict(best_state)
    model.eval()
    logger.info("  fine-tuned %d epochs (%s), best validation metric %.2f", epoch, stopped, best_acc)
    return FinetuneResult(epoch, best_acc, history, stopped)
