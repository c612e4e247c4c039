"""Stage ``distill``: knowledge distillation (Hinton et al. 2015) from the source model, with optional hints.

The teacher is the model the build started from (``ctx.teacher``); the student is the model the
previous stages produced. The loss mixes ``T^2 * KL(softmax(t/T) || softmax(s/T))`` (weight alpha) with
cross-entropy to the labels (1 - alpha), plus, optionally, a FitNets-style hint loss: the mean squared
error between the student's and the teacher's outputs at named layers (a 1x1 conv / linear regressor,
trained with the student and then dropped, maps the student's channels to the teacher's when they differ).
Training, early stopping on the validation split and the time budget are ``edgecomp.finetune``'s.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgecomp.compress.base import BuildContext, Stage, StageConfig, StageResult
from edgecomp.errors import ConfigError, did_you_mean
from edgecomp.finetune import FinetunePolicy

logger = logging.getLogger(__name__)


def kl_to_teacher(student: nn.Module, teacher: nn.Module, data, split: str = "val",
                  temperature: float = 1.0) -> float:
    """Mean KL(teacher || student) of the softened first-output distributions over ``split`` of ``data``
    (nats per sample), streamed in mini-batches."""
    from edgecomp.metrics import first_output

    total, count = 0.0, 0
    student.eval(), teacher.eval()
    with torch.no_grad():
        for x, _ in data.batches(split):
            s = first_output(student(x)) / temperature
            t = first_output(teacher(x)) / temperature
            total += float(F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="sum"))
            count += len(x)
    return total / max(count, 1)


def _regressor(s_shape: torch.Size, t_shape: torch.Size) -> nn.Module | None:
    if s_shape == t_shape:
        return None
    if len(s_shape) == 4 and len(t_shape) == 4 and s_shape[2:] == t_shape[2:]:
        return nn.Conv2d(s_shape[1], t_shape[1], 1)
    if len(s_shape) == 2 and len(t_shape) == 2:
        return nn.Linear(s_shape[1], t_shape[1])
    raise ConfigError(
        f"hint layer shapes differ beyond channels: student {list(s_shape)}, teacher {list(t_shape)}",
        "choose hint layers whose outputs have the same spatial size in both models",
    )


class HintLoss:
    """FitNets hint loss: weighted MSE between student and teacher outputs of the named modules.

    Forward hooks record each model's output at every hint layer; calling the object (as
    ``finetune``'s ``extra_loss``) returns the loss for the batch both models just saw. Call ``close``
    to remove the hooks. ``parameters()`` are the regressors' (trained alongside, never exported).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, layers: list[str], weight: float,
                 example: torch.Tensor) -> None:
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        for name in layers:
            for mods, who in ((s_mods, "student"), (t_mods, "teacher")):
                if name not in mods or not name:
                    raise ConfigError(f"hint layer '{name}' is not a module of the {who}." + did_you_mean(name, mods),
                                      "name modules as model.named_modules() does, e.g. 'features.5'")
        self.layers, self.weight = list(layers), weight
        self.s_feats: dict[str, torch.Tensor] = {}
        self.t_feats: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in layers:
            self.handles.append(s_mods[name].register_forward_hook(self._store(self.s_feats, name)))
            self.handles.append(t_mods[name].register_forward_hook(self._store(self.t_feats, name)))
        with torch.no_grad():
            student.eval()(example)
            teacher.eval()(example)
        self.regressors = nn.ModuleDict()
        for name in layers:
            reg = _regressor(self.s_feats[name].shape, self.t_feats[name].shape)
            if reg is not None:
                self.regressors[name.replace(".", "_")] = reg

    @staticmethod
    def _store(into: dict[str, torch.Tensor], name: str):
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            into[name] = out if isinstance(out, torch.Tensor) else out[0]
        return hook

    def parameters(self) -> list[nn.Parameter]:
        """The regressors' parameters (empty when every hint layer's shapes already match)."""
        return list(self.regressors.parameters())

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """Weighted mean over hint layers of the MSE between (regressed) student and teacher features."""
        total = 0.0
        for name in self.layers:
            s, t = self.s_feats[name], self.t_feats[name].detach()
            key = name.replace(".", "_")
            if key in self.regressors:
                s = self.regressors[key](s)
            total = total + F.mse_loss(s, t)
        return self.weight * total / max(1, len(self.layers))

    def close(self) -> None:
        """Remove the forward hooks from both models."""
        for h in self.handles:
            h.remove()
        self.handles.clear()


def distill(student: nn.Module, teacher: nn.Module, data, cfg: Distill.Config, seed: int = 0,
            policy: FinetunePolicy | None = None) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` in place per ``cfg``; return KL/accuracy before and after.

    ``policy`` (a build's ``ctx.finetune_policy``) may skip the training or cap its epochs.
    """
    from edgecomp.finetune import FinetuneConfig, finetune
    from edgecomp.metrics import evaluate

    record: dict[str, Any] = {
        "kl_before": kl_to_teacher(student, teacher, data, "val", cfg.temperature),
        "val_accuracy_before": evaluate(student, data, "val"),
    }
    hints = None
    if cfg.hint_layers:
        hints = HintLoss(student, teacher, cfg.hint_layers, cfg.hint_weight, torch.as_tensor(data.sample("train", 2)[0]))
    ft = FinetuneConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, temperature=cfg.temperature,
                        alpha=cfg.alpha, patience=cfg.patience, time_budget_s=cfg.time_budget_s, seed=seed,
                        ties_by_loss=True)
    try:
        result = finetune(student, data, ft, teacher=teacher, extra_loss=hints,
                          extra_params=hints.parameters() if hints else (), policy=policy)
    finally:
        if hints is not None:
            hints.close()
    record.update(
        epochs=result.epochs, stopped=result.stopped, best_val_accuracy=result.best_val_accuracy,
        kl_after=kl_to_teacher(student, teacher, data, "val", cfg.temperature),
        val_accuracy_after=evaluate(student, data, "val"),
    )
    return record


class Distill(Stage):
    """Fine-tune the current model against the source model (KD loss, optional hint loss)."""

    name = "distill"

    class Config(StageConfig):
        """Knowledge-distillation settings."""

        epochs: int = Field(30, ge=1, description="Most epochs to train.")
        lr: float = Field(5e-4, gt=0, description="Adam learning rate.")
        batch_size: int = Field(64, ge=1, description="Mini-batch size.")
        temperature: float = Field(4.0, gt=0, description="Softmax temperature T for the KL term.")
        alpha: float = Field(0.7, ge=0, le=1, description="Weight of the KL-to-teacher term (1-alpha: labels).")
        hint_layers: list[str] = Field(default_factory=list, description="Module names whose outputs to match (FitNets).")
        hint_weight: float = Field(1.0, ge=0, description="Weight of the hint (feature MSE) loss.")
        patience: int = Field(8, ge=1, description="Epochs without validation gain before stopping early.")
        time_budget_s: float | None = Field(None, gt=0, description="Stop after this many seconds.")

    def apply(self, model: nn.Module, cfg: Config, ctx: BuildContext) -> StageResult:
        """Distil ``ctx.teacher`` into a copy of ``model`` on ``ctx.data``."""
        if ctx.teacher is None:
            raise ConfigError("distill needs a teacher, and the build has none", "run distill inside a build")
        if ctx.data is None:
            raise ConfigError("distill needs training data, and the model came without any",
                              "pass --data FILE.npz with x_train/y_train (or x/y)")
        student = copy.deepcopy(model)  # the teacher may be this very module
        record = distill(student, ctx.teacher, ctx.data, cfg, ctx.seed, ctx.finetune_policy)
        notes = [(f"distilled {record['epochs']} epochs ({record['stopped']}): KL to teacher "
                 f"{record['kl_before']:.4f} -> {record['kl_after']:.4f}, val accuracy "
                 f"{record['val_accuracy_before']:.2f}% -> {record['val_accuracy_after']:.2f}%")]
        return StageResult(student.eval(), record, notes)
