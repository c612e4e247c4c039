"""Models and data of the kind users bring, for ``benchmarks/real_data.py`` (importable as model factories).

- ``make_digit_folder(root)`` renders scikit-learn's digits (real handwriting, shipped with the package) as 32x32 RGB
  PNG files in class folders, with light augmentation (random offset, scale, ink and paper colours, noise): an image
  folder in the layout people already have.
- ``resnet18_style`` is ResNet-18's topology (BasicBlocks [2, 2, 2, 2], batch norm, a 3x3 stem for small inputs)
  at a chosen width; ``mobilenetv2_style`` is MobileNetV2's (inverted residuals with ReLU6, the standard stage table,
  strides adapted to 32x32). Both are plain torch; torchvision is not needed.
- ``macro_f1`` is a custom metric (mean per-class F1, in percent) as ``--metric file.py:macro_f1`` takes it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # loaded by file path as a model factory too
from benchmarks.resnet18_style import BasicBlock

IMAGE = 32


def make_digit_folder(root: Path, copies: int = 2, seed: int = 0) -> int:
    """Write ``copies`` augmented 32x32 RGB renderings of each of the 1,797 digits to ``root/<digit>/*.png``."""
    from PIL import Image

    from edgecomp.data.digits import _digits_arrays

    images, target = _digits_arrays()
    rng = np.random.default_rng(seed)
    n = 0
    for i, (img, label) in enumerate(zip(images, target, strict=True)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            size = int(rng.integers(22, 29))
            glyph = Image.fromarray((img / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
            ink = np.asarray(glyph, np.float32)[..., None] / 255.0
            paper_rgb = rng.uniform(0.0, 0.35, 3)
            ink_rgb = rng.uniform(0.65, 1.0, 3)
            canvas = np.tile(paper_rgb, (IMAGE, IMAGE, 1)).astype(np.float32)
            y0, x0 = rng.integers(0, IMAGE - size + 1, 2)
            canvas[y0:y0 + size, x0:x0 + size] = canvas[y0:y0 + size, x0:x0 + size] * (1 - ink) + ink_rgb * ink
            canvas += rng.normal(0, 0.03, canvas.shape)
            pixels = (np.clip(canvas, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}_{c}.png")
            n += 1
    return n


class ResNet18Style(nn.Module):
    """ResNet-18 (BasicBlocks [2, 2, 2, 2]) with stage widths w, 2w, 4w, 8w and a 3x3 stem for 32x32 inputs."""

    input_shape: ClassVar[list[int]] = [1, 3, IMAGE, IMAGE]

    def __init__(self, num_classes: int = 10, width: int = 24) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        layers, cin = [], w[0]
        for i, cout in enumerate(w):
            layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class _Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2Style(nn.Module):
    """MobileNetV2's stage table (t, c, n, s) at ``width`` x channels, strides adapted to 32x32 inputs."""

    input_shape: ClassVar[list[int]] = [1, 3, IMAGE, IMAGE]
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, width: float = 0.75) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return max(8, round(c * width / 8) * 8)

        cin = ch(32)
        layers: list[nn.Module] = [nn.Conv2d(3, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6()]
        for t, c, n, s in self.STAGES:
            for i in range(n):
                layers.append(_Inverted(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        last = ch(1280) if width > 1 else 1280 // 2
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def resnet18_style() -> nn.Module:
    """ResNet-18-style classifier for 3x32x32 inputs, 10 classes (model factory)."""
    return ResNet18Style()


def mobilenetv2_style() -> nn.Module:
    """MobileNetV2-style classifier for 3x32x32 inputs, 10 classes (model factory)."""
    return MobileNetV2Style()


class macro_f1:
    """Mean per-class F1 score in percent over the evaluation (a metric with update/compute)."""

    name = "macro_f1"

    def __init__(self) -> None:
        self.pred: list[torch.Tensor] = []
        self.true: list[torch.Tensor] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Keep the batch's predicted and true classes."""
        self.pred.append(outputs.argmax(1))
        self.true.append(torch.as_tensor(targets))

    def compute(self) -> float:
        """Macro-averaged F1 over the classes present."""
        p, t = torch.cat(self.pred), torch.cat(self.true)
        scores = []
        for c in torch.unique(t):
            tp = int(((p == c) & (t == c)).sum())
            fp, fn = int(((p == c) & (t != c)).sum()), int(((p != c) & (t == c)).sum())
            scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
        return 100.0 * float(np.mean(scores))
