"""Write the app's sample images: one 8x8 grayscale PNG per class from the digits test split.

Pixels are the digits' raw values (0..16) mapped onto 0..255, the convention the app's Preprocessor
inverts (8-bit pixels span the raw range [0, 1 / scale]). Run from the repository root:
    .venv/bin/python android_demo/tools/make_samples.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "app" / "src" / "main" / "assets" / "samples"


def main() -> None:
    """Save digit_<label>.png for the first test image of each class (split as edgecomp.data.digits does)."""
    bunch = load_digits()
    idx = np.random.default_rng(0).permutation(len(bunch.images))
    test = idx[int(0.6 * len(idx)) + int(0.2 * len(idx)):]
    OUT.mkdir(parents=True, exist_ok=True)
    for label in range(10):
        i = next(j for j in test if bunch.target[j] == label)
        pixels = np.round(bunch.images[i] * 255.0 / 16.0).astype(np.uint8)
        Image.fromarray(pixels).save(OUT / f"digit_{label}.png", optimize=True)
    print(f"wrote 10 samples to {OUT}")


if __name__ == "__main__":
    main()
