"""Knowledge distillation: the student moves toward the teacher; hints; clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecomp.compress.distill import Distill, HintLoss, kl_to_teacher
from edgecomp.errors import ConfigError
from tests.rewrite_helpers import context, teacher_dataset


def _mlp(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4)).eval()


def _teacher() -> nn.Module:
    teacher = _mlp(32, 0)
    with torch.no_grad():
        teacher[2].weight.mul_(4)  # confident, O(1)-and-above logits
    return teacher


def test_distillation_lowers_the_students_kl_to_the_teacher():
    teacher = _teacher()
    data = teacher_dataset(teacher, (8,))
    student = _mlp(8, 1)
    ctx = context([1, 8], data=data, teacher=teacher)
    before = kl_to_teacher(student, teacher, data, "val", 4.0)
    result = Distill().apply(student, Distill.Config(epochs=15, lr=1e-2, patience=15), ctx)
    after = kl_to_teacher(result.model, teacher, data, "val", 4.0)
    assert result.metrics["kl_before"] == pytest.approx(before)
    assert result.metrics["kl_after"] == pytest.approx(after)
    assert after < 0.5 * before
    assert kl_to_teacher(student, teacher, data, "val", 4.0) == pytest.approx(before)  # input untouched
    assert "KL to teacher" in result.notes[0]


def test_hint_loss_trains_a_regressor_and_removes_its_hooks():
    teacher = _teacher()
    data = teacher_dataset(teacher, (8,))
    student = _mlp(8, 2)
    x = torch.as_tensor(data.arrays("train")[0][:4])
    hints = HintLoss(student, teacher, ["1"], 1.0, x)
    assert len(hints.parameters()) == 2  # Linear(8 -> 32) weight and bias: widths differ
    student(x)
    with torch.no_grad():
        teacher(x)
    loss = hints(student)
    assert loss.requires_grad and float(loss.detach()) > 0
    hints.close()
    assert not teacher[1]._forward_hooks and not student[1]._forward_hooks
    ctx = context([1, 8], data=data, teacher=teacher)
    result = Distill().apply(student, Distill.Config(epochs=3, hint_layers=["1"], hint_weight=0.1), ctx)
    assert result.metrics["epochs"] >= 1
    assert not teacher[1]._forward_hooks


def test_unknown_hint_layer_and_missing_data_are_config_errors():
    teacher = _teacher()
    data = teacher_dataset(teacher, (8,), n=100)
    with pytest.raises(ConfigError, match="did you mean|Did you mean"):
        Distill().apply(_mlp(8, 1), Distill.Config(epochs=1, hint_layers=["11"]),
                        context([1, 8], data=data, teacher=teacher))
    with pytest.raises(ConfigError, match="training data"):
        Distill().apply(_mlp(8, 1), Distill.Config(epochs=1), context([1, 8], teacher=teacher))
