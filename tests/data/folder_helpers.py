"""Tiny image folders generated into tmp_path for the image-folder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "owl")


def image(seed: int, size: tuple[int, int] = (16, 16), tint: int = 0) -> Image.Image:
    """A random RGB image of ``size`` (width, height), brighter in channel ``tint``."""
    a = np.random.default_rng(seed).integers(0, 100, (size[1], size[0], 3)).astype(np.uint8)
    a[..., tint % 3] += 150
    return Image.fromarray(a)


def make_folder(root: Path, per_class: int = 10, classes: tuple[str, ...] = CLASSES, size: tuple[int, int] = (16, 16),
                suffix: str = ".png", seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` for each class: ``per_class`` images of ``size``."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image(seed * 1000 + c * 100 + i, size, c).save(root / name / f"{i:03d}{suffix}")
    return root
