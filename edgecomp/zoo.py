"""Built-in models, trained from bundled data on first use and cached.

``digits_cnn`` is the default model of ``edgecomp build``: a small CNN for scikit-learn's 8x8 digits
(real data, no download). ``vgg_digits`` is a wider VGG-style CNN on the same data, for benchmarks.
Training is deterministic (fixed seed); weights are cached in the user cache dir
(``$EDGECOMP_CACHE_DIR`` overrides) and loaded back with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from edgecomp import data as data_mod
from edgecomp.finetune import FinetuneConfig, finetune
from edgecomp.metrics import evaluate
from edgecomp.spec import ModelSpec, Normalization
from edgecomp.zoo_cache import (  # noqa: F401 -- ZOO_VERSION and cache_dir: edgecomp.zoo's names since before
    DEFAULT_MODEL,
    ZOO_NAMES,
    ZOO_VERSION,
    cache_dir,
    zoo_weights_path,
)

logger = logging.getLogger(__name__)
DIGIT_LABELS = [str(i) for i in range(10)]


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class DigitsCNN(nn.Module):
    """Three 3x3 conv blocks, a max-pool, global average pooling and a linear head (8x8 inputs)."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(1, width), *_conv_bn(width, 2 * width), nn.MaxPool2d(2), *_conv_bn(2 * width, 4 * width)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised 1x8x8 images."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class VGGDigits(nn.Module):
    """A VGG-style CNN (conv-conv-pool x3, widths 64-128-256 times ``width``) for 8x8 digits."""

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = (max(4, round(c * width)) for c in (64, 128, 256))
        self.features = nn.Sequential(
            *_conv_bn(1, c1), *_conv_bn(c1, c1), nn.MaxPool2d(2),
            *_conv_bn(c1, c2), *_conv_bn(c2, c2), nn.MaxPool2d(2),
            *_conv_bn(c2, c3), *_conv_bn(c3, c3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(c3, c3), nn.ReLU(), nn.Linear(c3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised 1x8x8 images."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project, skip when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int = 4) -> None:
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output, plus its input when it has a skip connection."""
        return x + self.block(x) if self.skip else self.block(x)


class MobileDigits(nn.Module):
    """A small MobileNetV2-style CNN (stem, four inverted-residual blocks, 1x1 head) for 8x8 digits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(1, 16), _InvertedResidual(16, 16), _InvertedResidual(16, 24), nn.MaxPool2d(2),
            _InvertedResidual(24, 24), _InvertedResidual(24, 32),
            nn.Conv2d(32, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised 1x8x8 images."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def digits_spec(name: str) -> ModelSpec:
    """The I/O contract of the digits models: 1x1x8x8 NCHW, pixels 0..16 normalised, labels 0-9."""
    return ModelSpec(
        name=name,
        input_shape=[1, 1, 8, 8],
        layout="NCHW",
        normalization=Normalization(
            scale=data_mod.DIGITS_SCALE, mean=[data_mod.DIGITS_MEAN], std=[data_mod.DIGITS_STD]
        ),
        labels=DIGIT_LABELS,
    )


ZOO: dict[str, tuple[Callable[[], nn.Module], FinetuneConfig]] = {
    "digits_cnn": (DigitsCNN, FinetuneConfig(epochs=40, lr=3e-3, patience=10)),
    "vgg_digits": (VGGDigits, FinetuneConfig(epochs=30, lr=1e-3, patience=8)),
    "mobile_digits": (MobileDigits, FinetuneConfig(epochs=40, lr=3e-3, patience=10)),
}
assert tuple(ZOO) == ZOO_NAMES, "zoo_cache.ZOO_NAMES lists the built-in models (a build that reuses all reads it)"


def load_zoo_model(name: str = DEFAULT_MODEL) -> tuple[nn.Module, ModelSpec, data_mod.Dataset]:
    """Return a trained zoo model (training and caching it on first use), its spec and its data."""
    factory, cfg = ZOO[name]
    dataset = data_mod.digits()
    path = zoo_weights_path(name)
    torch.manual_seed(0)
    model = factory()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        return model, digits_spec(name), dataset
    logger.info("training the built-in model '%s' on scikit-learn digits (first use, cached after)", name)
    start = time.monotonic()
    finetune(model, dataset, cfg)
    acc = evaluate(model, dataset, "test")
    logger.info("  trained in %.1f s, test accuracy %.2f%%; cached at %s", time.monotonic() - start, acc, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model.eval(), digits_spec(name), dataset
