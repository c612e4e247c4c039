"""The one ``Dataset`` interface every data source (.npz, image folder, factory, built-in digits) returns.

A ``Dataset`` holds three splits, each a map-style ``torch.utils.data.Dataset`` of ``(input, target)``
pairs: ``train`` for fine-tuning and calibration, ``val`` for early stopping and the planner's choice,
``test`` for reporting. Nothing here needs a split in memory: ``batches`` streams mini-batches (through a
``DataLoader`` with worker processes for file-backed splits), and the small samples that calibration and
parity need are gathered item by item. In-memory arrays (``ArraySplit``) are sliced directly, which is
faster and keeps today's numbers bit for bit.

Targets are whatever the source yields: integer class indices for classifiers, tensors or tuples of tensors
for anything else (a detector's boxes). The metric (``edgecomp.metrics``) and the optional ``loss`` say what
they mean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

SPLITS = ("train", "val", "test")
LossFn = Callable[[Any, Any], torch.Tensor]
"""A fine-tuning loss: ``loss(outputs, targets) -> scalar tensor`` (outputs as the model returns them)."""


class ArraySplit(TorchDataset):
    """A split held as two arrays: inputs ``x`` (float32) and targets ``y`` (one per input)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.ascontiguousarray(y))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


@dataclass
class Dataset:
    """Three splits of ``(input, target)`` pairs, how to score them, and where they came from."""

    name: str
    train: TorchDataset
    val: TorchDataset
    test: TorchDataset
    labels: list[str] | None = None
    """Class names in target order, when the source knows them (image folders' class folders)."""
    preprocess: Any = None
    """How raw files became inputs (``edgecomp.data.preprocess.Preprocess``), recorded in the bundle."""
    loss: LossFn | None = None
    """The user's fine-tuning loss (dataset factories may give one); None: cross-entropy on class targets."""
    metric: Any = None
    """The ``edgecomp.metrics.Metric`` factory that scores outputs against targets (None: top-1)."""
    batch_size: int = 64
    """Mini-batch size for evaluation and calibration passes."""
    workers: int = 0
    """DataLoader worker processes for splits that are not arrays (0: read in this process)."""
    source: str = ""
    """What the data is, for the report (e.g. 'image folder pets/ (3 classes, 1,204 images)')."""
    notes: list[str] = field(default_factory=list)
    """Things the loader did that the user should know (corrupt files skipped, images resized)."""

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, name: str, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                    y_val: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, **kwargs: Any) -> Dataset:
        """A dataset of in-memory arrays (inputs already normalised the way the model expects)."""
        return cls(name, ArraySplit(x_train, y_train), ArraySplit(x_val, y_val), ArraySplit(x_test, y_test),
                   **kwargs)

    # -- reading -------------------------------------------------------------------------------------------
    def split(self, name: str) -> TorchDataset:
        """The split called ``name`` (train, val or test)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return getattr(self, name)

    def size(self, split: str) -> int:
        """Number of samples in ``split``."""
        return len(self.split(split))  # type: ignore[arg-type]

    def batches(self, split: str, batch_size: int | None = None, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, Any]]:
        """Stream ``split`` as (inputs, targets) mini-batches; ``shuffle`` draws a permutation from ``generator``
        (seed 0 when none is given), so a fine-tune's epochs are reproducible."""
        ds, bs = self.split(split), batch_size or self.batch_size
        n = len(ds)  # type: ignore[arg-type]
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        if isinstance(ds, ArraySplit):
            order = torch.randperm(n, generator=gen) if shuffle else None
            for i in range(0, n, bs):
                idx = order[i : i + bs] if order is not None else slice(i, i + bs)
                yield ds.x[idx], ds.y[idx]
            return
        loader = DataLoader(ds, batch_size=bs, shuffle=shuffle, generator=gen, num_workers=self.workers,
                            worker_init_fn=_seed_worker if self.workers else None,
                            persistent_workers=False)
        yield from loader

    def sample(self, split: str, n: int, seed: int | None = None) -> tuple[np.ndarray, list[Any]]:
        """``n`` inputs of ``split`` stacked into one array, and their targets (first ``n``, or a seeded draw).

        Only the chosen items are read, so this is cheap on a split of any size.
        """
        ds = self.split(split)
        total = len(ds)  # type: ignore[arg-type]
        n = min(n, total)
        if seed is None:
            idx = np.arange(n)
        else:
            idx = np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
        if isinstance(ds, ArraySplit):
            t = torch.as_tensor(idx, dtype=torch.long)
            return ds.x[t].numpy(), list(ds.y[t])
        items = [ds[int(i)] for i in idx]
        x = np.stack([np.asarray(_as_tensor(item[0]), dtype=np.float32) for item in items])
        return x, [item[1] for item in items]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole of ``split`` as (inputs, targets) arrays: for small in-memory data (tests, benchmarks) only."""
        ds = self.split(split)
        if isinstance(ds, ArraySplit):
            return ds.x.numpy(), ds.y.numpy()
        x, targets = self.sample(split, len(ds))  # type: ignore[arg-type]
        return x, np.asarray([np.asarray(t) for t in targets])

    def calibration(self, n: int = 256, seed: int = 0) -> np.ndarray:
        """A fixed random subset of the training inputs, for calibrating quantization."""
        ds = self.train
        if isinstance(ds, ArraySplit):  # the same subset as before streaming existed
            idx = np.random.default_rng(seed).permutation(len(ds))[:n]
            return ds.x[torch.as_tensor(idx)].numpy()
        return self.sample("train", n, seed)[0]

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (without the batch dimension), read from the first training sample."""
        ds = self.train
        if isinstance(ds, ArraySplit):
            return tuple(ds.x.shape[1:])
        return tuple(_as_tensor(ds[0][0]).shape)

    def class_targets(self, split: str) -> np.ndarray | None:
        """Integer class targets of ``split`` without reading inputs, when the source can give them cheaply."""
        ds = self.split(split)
        if isinstance(ds, ArraySplit):
            return ds.y.numpy() if ds.y.ndim == 1 and not ds.y.is_floating_point() else None
        targets = getattr(ds, "targets", None)
        return np.asarray(targets) if targets is not None else None

    @property
    def num_classes(self) -> int | None:
        """Number of classes (the labels' count, else the largest class target + 1; None: not class targets)."""
        if self.labels:
            return len(self.labels)
        found = [t for t in (self.class_targets(s) for s in SPLITS) if t is not None and len(t)]
        return int(max(t.max() for t in found)) + 1 if found else None

    def fingerprint(self) -> str:
        """A hash of every split's full content (or, for file-backed splits, their identity), for caches."""
        digest = hashlib.sha256(self.name.encode())
        for s in SPLITS:
            ds = self.split(s)
            digest.update(f"|{s}:{len(ds)}|".encode())  # type: ignore[arg-type]
            if isinstance(ds, ArraySplit):
                digest.update(ds.x.numpy().tobytes())
                digest.update(ds.y.numpy().tobytes())
            elif hasattr(ds, "fingerprint"):
                digest.update(str(ds.fingerprint()).encode())
            else:  # unknown torch Dataset: its first and last items stand in for it
                for i in {0, max(0, len(ds) - 1)}:  # type: ignore[arg-type]
                    x, y = ds[i]
                    digest.update(np.asarray(_as_tensor(x)).tobytes())
                    digest.update(repr(y).encode())
        digest.update(repr(self.preprocess).encode())
        return digest.hexdigest()


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker a seed derived from the loader's (numpy and random too)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_indices(n: int, seed: int, fractions: tuple[float, float] = (0.6, 0.2)) -> tuple[np.ndarray, ...]:
    """A seeded random split of ``range(n)`` into train/val/test index arrays (60/20/20 by default)."""
    idx = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    return idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :]
