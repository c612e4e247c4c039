"""A two-head, detection-style model and its data: class logits + a box, for tests of models with several outputs.

Each sample is one of scikit-learn's 8x8 digits placed at a seeded random offset on a 16x16 canvas; its target is
``(class, box)`` with ``box = (x0, y0, x1, y1)`` of the placed 8x8 square, in units of the canvas side. Used from
the command line exactly as a user's files would be::

    edgecomp build tests/multihead_fixtures.py:TwoHeadDigits --weights w.pt \\
        --data tests/multihead_fixtures.py:factory --metric tests/multihead_fixtures.py:iou_metric

``train_two_head`` trains the model a little (seconds) through ``edgecomp.finetune`` with the factory's loss,
so tests run a model whose outputs mean something rather than a fresh initialisation.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset as TorchDataset

CANVAS = 16
DIGIT = 8


class TwoHeadDigits(nn.Module):
    """A small CNN on 1x16x16 canvases with two heads: class logits (10) and a box (4 coordinates in [0, 1])."""

    input_shape = (1, 1, CANVAS, CANVAS)
    output_names = ("logits", "box")

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.pool = nn.MaxPool2d(CANVAS // 4)  # over all 4x4 positions: where the digit is does not change its class
        self.classify = nn.Linear(2 * width, 10)
        self.locate = nn.Sequential(nn.Linear(2 * width * (CANVAS // 4) ** 2, 4), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, 10], box [N, 4]) for a batch of normalised canvases."""
        h = self.features(x)
        return self.classify(torch.flatten(self.pool(h), 1)), self.locate(torch.flatten(h, 1))


class PlacedDigits(TorchDataset):
    """Digits placed on a canvas: item ``i`` is (canvas [1, 16, 16], (class, box [4]))."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
        offsets = np.random.default_rng(seed).integers(0, CANVAS - DIGIT + 1, size=(len(images), 2))  # (row, col)
        canvases = np.zeros((len(images), 1, CANVAS, CANVAS), np.float32)
        for k, (r, c) in enumerate(offsets):
            canvases[k, 0, r : r + DIGIT, c : c + DIGIT] = images[k]
        self.x = torch.from_numpy((canvases / 16.0 - 0.3) / 0.4)
        self.boxes = torch.from_numpy(np.concatenate([offsets[:, ::-1], offsets[:, ::-1] + DIGIT], 1) / CANVAS).float()
        self.labels = labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[int, torch.Tensor]]:
        return self.x[i], (int(self.labels[i]), self.boxes[i])


def loss(outputs: Any, targets: Any) -> torch.Tensor:
    """Cross-entropy of the logits plus 3 x smooth-L1 of the box (the coordinates are fractions of the side)."""
    logits, box = outputs
    classes, boxes = targets
    return F.cross_entropy(logits, classes) + 3.0 * F.smooth_l1_loss(box, boxes, beta=0.05)


def factory() -> dict[str, Any]:
    """Train/val/test splits (60/20/20, seeded) of placed digits, with the loss that fine-tunes both heads."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images.astype(np.float32), digits.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(images))
    n_tr, n_va = int(0.6 * len(idx)), int(0.2 * len(idx))
    parts = {"train": idx[:n_tr], "val": idx[n_tr : n_tr + n_va], "test": idx[n_tr + n_va :]}
    splits = {name: PlacedDigits(images[p], labels[p], seed) for seed, (name, p) in enumerate(parts.items())}
    return {**splits, "loss": loss, "labels": [str(d) for d in range(10)]}


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each pair of (x0, y0, x1, y1) boxes in ``a`` and ``b`` (shape [N, 4] each)."""
    lo, hi = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    area = lambda t: (t[:, 2:] - t[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def iou_metric(batches: Iterable[tuple[Any, Any]]) -> float:
    """Percent of samples detected right: the class is the arg-max of the logits and the box has IoU > 0.5."""
    hits, total = 0, 0
    for (logits, box), (classes, boxes) in batches:
        right = (logits.argmax(dim=1) == classes) & (box_iou(box, boxes) > 0.5)
        hits, total = hits + int(right.sum()), total + len(classes)
    return 100.0 * hits / total


iou_metric.name = "hit@IoU0.5"  # type: ignore[attr-defined]  # the name the report gives the metric


def train_two_head(path: Path, epochs: int = 4) -> float:
    """Train ``TwoHeadDigits`` on ``factory()`` through edgecomp's fine-tune (with the factory's loss), save its
    state_dict to ``path`` and return its test ``iou_metric``."""
    from edgecomp.data.factory import load_factory
    from edgecomp.finetune import FinetuneConfig, finetune
    from edgecomp.metrics import evaluate, load_metric

    torch.manual_seed(0)
    data = load_factory(f"{Path(__file__)}:factory")
    data.metric = load_metric(f"{Path(__file__)}:iou_metric")
    model = TwoHeadDigits()
    finetune(model, data, FinetuneConfig(epochs=epochs, lr=3e-3, batch_size=32, patience=epochs))
    torch.save(model.state_dict(), path)
    return evaluate(model, data, "test")
