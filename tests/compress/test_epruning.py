"""EPruning's operators one by one (energy, binary DE mutation/crossover/selection, convergence), and a tiny run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.compress.epruning import (
    EPruning,
    crossover,
    donors,
    energy,
    evolve,
    limit_active,
    mutate,
    select,
    state_convergence,
)
from edgecomp.errors import ConfigError
from tests.prune_helpers import tiny_ctx


def test_energy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]])
    labels = torch.tensor([0, 2])
    # F = -logits. Sample 0: F(y0) = -2, min over others of F = min(-0.5, -1) = -1 -> E = -2 - (-1) = -1.
    # Sample 1: F(y2) = 1, min over others of F = min(0, -3) = -3 -> E = 1 - (-3) = 4.
    assert energy(logits, labels, "none").tolist() == [-1.0, 4.0]
    assert float(energy(logits, labels)) == pytest.approx(1.5)
    assert float(energy(logits, labels, "sum")) == pytest.approx(3.0)


def test_mutation_flips_only_where_donors_differ_and_r_below_f():
    s1 = np.array([0, 1, 0, 1, 0, 1], dtype=np.uint8)
    s2 = np.array([0, 0, 1, 1, 1, 0], dtype=np.uint8)
    s3 = np.array([1, 1, 1, 0, 0, 1], dtype=np.uint8)
    r = np.array([0.1, 0.1, 0.1, 0.9, 0.1, 0.49])
    # differ: [T, T, F, T, T, T]; r < 0.5: [T, T, T, F, T, T] -> flip at 0, 1, 4, 5
    assert mutate(s1, s2, s3, r, 0.5).tolist() == [1, 0, 0, 1, 1, 0]
    assert mutate(s1, s2, s3, r, 0.0).tolist() == s1.tolist()  # F = 0: never flips
    same = mutate(s1, s2, s2, np.zeros(6), 1.0)
    assert same.tolist() == s1.tolist()  # identical donors: never flips


def test_crossover_takes_mutant_where_r_at_most_cr():
    parent = np.zeros(5, dtype=np.uint8)
    mutant = np.ones(5, dtype=np.uint8)
    r = np.array([0.0, 0.3, 0.30001, 0.9, 1.0])
    assert crossover(parent, mutant, r, 0.3).tolist() == [1, 1, 0, 0, 0]
    assert crossover(parent, mutant, r, 1.0).tolist() == [1, 1, 1, 1, 1]


def test_selection_keeps_lower_or_equal_energy():
    parents = np.array([[0, 0], [0, 1], [1, 0]], dtype=np.uint8)
    children = np.array([[1, 1], [1, 1], [1, 1]], dtype=np.uint8)
    pop, e = select(parents, np.array([1.0, 2.0, 3.0]), children, np.array([0.5, 2.0, 4.0]))
    assert pop.tolist() == [[1, 1], [1, 1], [1, 0]]
    assert e.tolist() == [0.5, 2.0, 3.0]


def test_donors_are_mutually_different_and_not_self():
    idx = donors(5, np.random.default_rng(0))
    for i, row in enumerate(idx):
        assert len(set(row.tolist()) | {i}) == 4
    with pytest.raises(ValueError):
        donors(3, np.random.default_rng(0))


def test_convergence_and_active_limit():
    assert state_convergence(np.array([-2.0, -1.0, 0.0])) == pytest.approx(-1.0)
    assert state_convergence(np.array([0.7, 0.7])) == 0.0
    limited = limit_active(np.ones(10, dtype=np.uint8), 3, np.random.default_rng(0))
    assert limited.sum() == 3
    pop = (np.random.default_rng(1).random((6, 20)) < 0.5).astype(np.uint8)
    children = evolve(pop, 0.5, 0.5, np.random.default_rng(2), max_active=4)
    assert children.shape == pop.shape and (children.sum(1) <= 4).all()


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_epruning_run_shrinks_model_and_reports_curves():
    model = _Tiny().eval()
    ctx = tiny_ctx(model)
    cfg = EPruning.Config(population=4, max_epochs=2, max_active=0.5, finetune_epochs=1)
    result = EPruning().apply(model, cfg, ctx)
    m = result.metrics
    assert result.model.conv.out_channels <= 3 and result.model.fc.in_features == result.model.conv.out_channels
    assert model.conv.out_channels == 6  # the input (the teacher) is untouched
    assert len(m["energy_curve"]) == m["epochs_searched"] == len(m["loss_curve"]) >= 1
    assert m["pruning_rate"] > 0 and m["units_total"] == 6 and m["protected_output_layers"] == ["fc"]
    assert "accuracy_after_finetune" in m


def test_epruning_without_labels_is_a_config_error():
    with pytest.raises(ConfigError, match="needs labelled training data"):
        EPruning().apply(_Tiny().eval(), EPruning.Config(), tiny_ctx(None, with_data=False))
