"""prune.magnitude on tiny models: masks, sparsity schedule, and the note that dense files do not shrink."""

from __future__ import annotations

import pytest
import torch

from edgecomp.compress.prune_magnitude import DENSE_NOTE, MagnitudePrune, magnitude_masks
from edgecomp.model import count_params
from tests.prune_helpers import TwoConvNet, tiny_ctx


def test_magnitude_masks_global_and_per_layer():
    w = {"a": torch.tensor([1.0, -2.0, 3.0, -4.0]), "b": torch.tensor([0.1, 0.2, 5.0, 6.0])}
    glob = magnitude_masks(w, 0.5, "global")
    assert glob["a"].tolist() == [0, 0, 1, 1] and glob["b"].tolist() == [0, 0, 1, 1]
    glob = magnitude_masks(w, 0.25, "global")
    assert glob["a"].tolist() == [1, 1, 1, 1] and glob["b"].tolist() == [0, 0, 1, 1]
    per = magnitude_masks(w, 0.25, "layer")
    assert per["a"].tolist() == [0, 1, 1, 1] and per["b"].tolist() == [0, 1, 1, 1]


def test_magnitude_pruning_reaches_sparsity_and_says_dense_files_do_not_shrink():
    torch.manual_seed(0)
    model = TwoConvNet().eval()
    cfg = MagnitudePrune.Config(sparsity=0.75, steps=2, finetune_epochs=1, scope="layer")
    result = MagnitudePrune().apply(model, cfg, tiny_ctx(model))
    layer = result.metrics["layer_sparsity"]
    assert set(layer) == {"c1", "c2", "head"}
    assert all(abs(s - 0.75) < 0.05 for s in layer.values())
    assert float((result.model.c2.weight == 0).float().mean()) == pytest.approx(layer["c2"])
    assert count_params(result.model) == count_params(model)
    assert DENSE_NOTE in result.notes
    d = result.metrics["weights_deflate_bytes"]
    assert d["after"] < d["before"]
    assert len(result.metrics["schedule"]) == 2
