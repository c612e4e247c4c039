"""The planner's evaluation cache: one small JSON file per (model, data, recipe, budget) key in a folder.

The key hashes everything an evaluation's numbers depend on: the full model weights and structure (and the
teacher's, when it is another model), every split of the data in full (arrays byte for byte; image folders
by file list, sizes and mtimes; any other dataset item by item), the metric and the loss, the recipe, the
seed, the rung's fine-tune cap and the versions of edgecomp, torch and the converters. Entries are written
to a temporary name and renamed into place (``os.replace`` is atomic on one file system), so readers never
see half an entry and any number of processes or cluster nodes may share the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecomp.artifact_cache import model_digest, package_versions
from edgecomp.data import Dataset
from edgecomp.data.base import SPLITS, ArraySplit
from edgecomp.fsutil import write_text_atomic

logger = logging.getLogger(__name__)
KEY_VERSION = 3  # bump when what an entry means changes (3: a rewrite that rewrites nothing no longer fine-tunes)


def data_digest(data: Dataset | None) -> str:
    """SHA-256 of every split in full: ``Dataset.fingerprint`` plus, for splits it can only sample (datasets
    without their own ``fingerprint``), every item's input and target."""
    if data is None:
        return "no-data"
    digest = hashlib.sha256(data.fingerprint().encode())
    for split in SPLITS:
        ds = data.split(split)
        if isinstance(ds, ArraySplit) or hasattr(ds, "fingerprint"):
            continue
        for x, y in data.batches(split):
            _feed(digest, x)
            _feed(digest, y)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Hash a batch's inputs or targets in full (tensors by bytes, containers item by item)."""
    if isinstance(value, torch.Tensor):
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            digest.update(str(k).encode())
            _feed(digest, value[k])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())


def _callable_name(fn: Any) -> str:
    if fn is None:
        return "none"
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def search_digest(model: nn.Module, teacher: nn.Module | None, data: Dataset | None) -> str:
    """The part of every key shared by one search: model, teacher, data, metric, loss and package versions."""
    metric = data.metric if data is not None else None
    parts = {
        "key_version": KEY_VERSION,
        "model": model_digest(model),
        "teacher": "model" if teacher is None or teacher is model else model_digest(teacher),
        "data": data_digest(data),
        "metric": [metric.name, metric.description] if metric is not None else "top1",
        "loss": _callable_name(data.loss) if data is not None else "none",
        "versions": package_versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def eval_key(search: str, recipe: list[str], seed: int, max_epochs: int | None, threads: int) -> str:
    """The key of evaluating ``recipe`` with fine-tunes capped at ``max_epochs`` on ``threads`` torch threads
    in the search ``search`` (the thread count changes float reductions, hence int8 roundings)."""
    payload = json.dumps({"search": search, "recipe": recipe, "seed": seed, "max_epochs": max_epochs,
                          "threads": threads})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class EvalCache:
    """A folder of evaluation results keyed by ``eval_key`` (None folder: a cache that never hits)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def get(self, key: str) -> dict | None:
        """The entry stored under ``key``, or None (missing or unreadable)."""
        if self.folder is None:
            return None
        path = self.folder / f"{key}.json"
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.debug("ignoring unreadable cache entry %s: %s", path, exc)
            return None
        return entry if isinstance(entry, dict) and "val_accuracy" in entry else None

    def put(self, key: str, entry: dict) -> None:
        """Store ``entry`` under ``key`` atomically (a temporary file renamed into place)."""
        if self.folder is None:
            return
        path = self.folder / f"{key}.json"
        try:
            write_text_atomic(path, json.dumps(entry))
        except OSError as exc:
            logger.warning("could not write the planner cache entry %s: %s", path, exc)
