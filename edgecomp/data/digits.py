"""scikit-learn's bundled 8x8 digits (1,797 images, no download): the built-in models' data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecomp.data.base import Dataset

DIGITS_MEAN = 0.3
DIGITS_STD = 0.4
DIGITS_SCALE = 1.0 / 16.0


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images N x 8 x 8, labels) of scikit-learn's digits, read from the CSV file scikit-learn ships.

    Reading the file directly is what ``sklearn.datasets.load_digits`` does, without importing scikit-learn
    and SciPy (2.4 s of a rebuild's start-up); where the file is not found, ``load_digits`` reads it.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        data = np.loadtxt(csv, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), split 60/20/20 with a fixed seed."""
    images, target = _digits_arrays()
    x = ((images.astype(np.float32) * DIGITS_SCALE - DIGITS_MEAN) / DIGITS_STD)[:, None, :, :]
    y = target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    tr, va, te = idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :]
    return Dataset.from_arrays("digits", x[tr], y[tr], x[va], y[va], x[te], y[te], labels=[str(i) for i in range(10)],
                               source="scikit-learn digits (1,797 8x8 images, split 60/20/20)")
