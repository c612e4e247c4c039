"""Calibration, fine-tuning and evaluation data: the bundled digits set, or a user's .npz file.

Arrays are already normalised the way the model expects (float32, NCHW); ``Dataset`` keeps three
splits: ``train`` for fine-tuning and calibration, ``val`` for early stopping, ``test`` for reporting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecomp.errors import ConfigError

DIGITS_MEAN = 0.3
DIGITS_STD = 0.4
DIGITS_SCALE = 1.0 / 16.0


@dataclass(frozen=True)
class Dataset:
    """Three splits of (inputs, integer labels); inputs are normalised float32 NCHW arrays."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        """Number of classes (largest label + 1 over all splits)."""
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    def calibration(self, n: int = 256, seed: int = 0) -> np.ndarray:
        """A fixed random subset of the training inputs, for calibrating quantization."""
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(self.x_train))[:n]
        return self.x_train[idx]


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), split 60/20/20 with a fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = ((bunch.images.astype(np.float32) * DIGITS_SCALE - DIGITS_MEAN) / DIGITS_STD)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    tr, va, te = idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :]
    return Dataset("digits", x[tr], y[tr], x[va], y[va], x[te], y[te])


def load_npz(path: str | Path, seed: int = 0) -> Dataset:
    """Load a user's dataset from .npz: either x/y (split 60/20/20 here) or x_train/y_train/x_test/y_test."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}", "pass an existing .npz file to --data")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read data file {path}: {exc}", "save it with numpy.savez") from exc
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x_tr, y_tr = arrays["x_train"].astype(np.float32), arrays["y_train"].astype(np.int64)
        n_val = max(1, len(x_tr) // 5)
        return Dataset(path.stem, x_tr[n_val:], y_tr[n_val:], x_tr[:n_val], y_tr[:n_val],
                       arrays["x_test"].astype(np.float32), arrays["y_test"].astype(np.int64))
    if {"x", "y"} <= arrays.keys():
        x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)
        idx = np.random.default_rng(seed).permutation(len(x))
        n_tr, n_va = int(0.6 * len(x)), int(0.2 * len(x))
        tr, va, te = idx[:n_tr], idx[n_tr : n_tr + n_va], idx[n_tr + n_va :]
        return Dataset(path.stem, x[tr], y[tr], x[va], y[va], x[te], y[te])
    raise ConfigError(
        f"data file {path} has arrays {sorted(arrays)}",
        "it needs x and y, or x_train, y_train, x_test and y_test (normalised float inputs, int labels)",
    )
