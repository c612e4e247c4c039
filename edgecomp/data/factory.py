"""A user's own data: ``package.module:factory`` / ``path/to/file.py:factory`` returning torch datasets.

The factory is called with no arguments and returns one of

- a dict with ``train`` and ``test`` (and optionally ``val``) splits, each a map-style ``torch.utils.data.Dataset``
  (or a ``DataLoader``, whose dataset is used) of ``(input, target)`` pairs; optional keys ``labels`` (class
  names), ``loss`` (``loss(outputs, targets) -> tensor`` for fine-tuning) and ``metric`` (as ``--metric``
  takes it, a function or class); without ``val``, a seeded fifth of ``train`` becomes validation;
- one ``Dataset`` (or ``DataLoader``), split here 60/20/20 with a fixed seed.

Anything the factory does wrong (raises, returns another type, yields something that is not a tensor pair) is a
``ConfigError`` naming the factory, so the user sees what to fix rather than a traceback.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

from edgecomp.data.base import Dataset, split_indices
from edgecomp.errors import ConfigError
from edgecomp.user_code import call_user, import_attribute

KEYS = {"train", "val", "test", "labels", "loss", "metric"}
FORM_HINT = ("return {'train': Dataset, 'test': Dataset} (optionally 'val', 'labels', 'loss', 'metric') or one "
             "torch Dataset of (input tensor, target) pairs")


def load_factory(ref: str, seed: int = 0) -> Dataset:
    """Call the dataset factory ``ref`` and wrap what it returns as a ``Dataset`` (see the module docstring)."""
    factory = import_attribute(ref, "dataset factory")
    if not callable(factory):
        raise ConfigError(f"dataset factory {ref} is a {type(factory).__name__}, not a function",
                          "point --data at a function that returns torch datasets")
    result = call_user(factory, ref, "dataset factory")
    name = ref.rsplit(":", 1)[1]
    if isinstance(result, dict):
        unknown = set(result) - KEYS
        if unknown or not {"train", "test"} <= set(result):
            raise ConfigError(f"dataset factory {ref} returned a dict with keys {sorted(result)}", FORM_HINT)
        train, test = _split(result["train"], ref, "train"), _split(result["test"], ref, "test")
        if result.get("val") is not None:
            val = _split(result["val"], ref, "val")
        else:
            idx = np.random.default_rng(seed).permutation(len(train))
            n_val = max(1, len(train) // 5)
            train, val = Subset(train, idx[n_val:].tolist()), Subset(train, idx[:n_val].tolist())
        metric = result.get("metric")
        data = Dataset(name, train, val, test, labels=_labels(result.get("labels"), ref), loss=result.get("loss"),
                       source=f"dataset factory {ref}")
        if metric is not None:
            data.metric = _metric_from_object(metric, ref)
    else:
        whole = _split(result, ref, "dataset")
        tr, va, te = split_indices(len(whole), seed)
        if min(len(tr), len(va), len(te)) < 1:
            raise ConfigError(f"dataset factory {ref} returned {len(whole)} samples: too few to split 60/20/20",
                              "return at least 5 samples (a few thousand for useful numbers)")
        data = Dataset(name, Subset(whole, tr.tolist()), Subset(whole, va.tolist()), Subset(whole, te.tolist()),
                       source=f"dataset factory {ref} (split 60/20/20, seed {seed})")
    for split in ("train", "val", "test"):
        check_items(data, split, ref)
    return data


def _split(obj: Any, ref: str, what: str) -> TorchDataset:
    if isinstance(obj, DataLoader):
        obj = obj.dataset
    if not isinstance(obj, TorchDataset) or not hasattr(obj, "__getitem__") or not hasattr(obj, "__len__"):
        raise ConfigError(f"dataset factory {ref}: '{what}' is a {type(obj).__name__}, not a map-style torch "
                          "Dataset", FORM_HINT + " (iterable-style datasets cannot be split or sampled)")
    if len(obj) == 0:
        raise ConfigError(f"dataset factory {ref}: '{what}' is empty", "return at least a few samples per split")
    return obj


def _labels(labels: Any, ref: str) -> list[str] | None:
    if labels is None:
        return None
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"dataset factory {ref}: 'labels' must be a list of class names",
                          "return labels=['cat', 'dog', ...] in target order")
    return list(labels)


def _metric_from_object(obj: Any, ref: str):
    """A metric the factory returned as an object (function or class), wrapped like ``--metric`` would."""
    from edgecomp.metrics import metric_from_object

    return metric_from_object(obj, f"{ref} (metric)")


def check_items(data: Dataset, split: str, ref: str) -> None:
    """Read the first item of ``split`` and check it is an (input tensor, target) pair with a float input."""
    try:
        item = data.split(split)[0]
    except Exception as exc:
        raise ConfigError(f"dataset factory {ref}: reading item 0 of the {split} split raised "
                          f"{type(exc).__name__}: {exc}", "fix the dataset's __getitem__") from exc
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ConfigError(f"dataset factory {ref}: items of the {split} split are {type(item).__name__}, not "
                          "(input, target) pairs", "make __getitem__ return (input_tensor, target)")
    x = item[0]
    if not isinstance(x, (torch.Tensor, np.ndarray)) or not np.issubdtype(np.asarray(x).dtype, np.floating):
        raise ConfigError(f"dataset factory {ref}: inputs of the {split} split are "
                          f"{getattr(x, 'dtype', type(x).__name__)}, not float tensors",
                          "return normalised float32 input tensors (C,H,W for images)")
