"""How a model is scored: top-1, top-5, or the user's own metric (``--metric module:fn``), higher is better.

A ``Metric`` sees an evaluation as mini-batches: ``update(outputs, targets)`` per batch (``outputs`` exactly
as the model returns them: a tensor, or a tuple for a model with several outputs), then ``compute()``.
A user's metric is either

- a function ``fn(batches) -> float`` that receives an iterator of ``(outputs, targets)`` batches, or
- a class with ``update(outputs, targets)`` and ``compute() -> float`` (and an optional ``name``),

named ``package.module:attr`` or ``path/to/file.py:attr``. ``evaluate`` runs a model over a split and turns a
metric that raises or returns NaN into a ``ConfigError`` naming the metric.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgecomp.errors import ConfigError
from edgecomp.user_code import import_attribute

BUILTIN = ("top1", "top5")


def first_output(outputs: Any) -> torch.Tensor:
    """The first tensor of a model's outputs (the class logits of a classifier with extra heads)."""
    while isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return outputs


class TopK:
    """Percentage of samples whose integer target is among the ``k`` largest logits of the first output."""

    def __init__(self, k: int = 1) -> None:
        self.k, self.name = k, f"top{k}"
        self.correct, self.total = 0, 0

    def update(self, outputs: Any, targets: Any) -> None:
        """Count the batch's hits."""
        logits, t = first_output(outputs), torch.as_tensor(targets)
        k = min(self.k, logits.shape[1])
        hits = (logits.topk(k, dim=1).indices == t.reshape(-1, 1)).any(dim=1)
        self.correct += int(hits.sum())
        self.total += len(t)

    def compute(self) -> float:
        """Top-k accuracy in percent."""
        return 100.0 * self.correct / self.total if self.total else float("nan")


class _BatchFunction:
    """Adapts ``fn(batches) -> float`` to update/compute (the batches are kept until ``compute``)."""

    def __init__(self, fn: Callable[[Iterable[tuple[Any, Any]]], float], name: str) -> None:
        self.fn, self.name, self.batches = fn, name, []

    def update(self, outputs: Any, targets: Any) -> None:
        """Keep the batch (outputs detached)."""
        self.batches.append((_detach(outputs), targets))

    def compute(self) -> float:
        """Call the user's function with every batch."""
        return float(self.fn(iter(self.batches)))


@dataclass(frozen=True)
class MetricSpec:
    """A metric to build fresh for each evaluation: its name, what it is, and how to make one."""

    name: str
    description: str
    make: Callable[[], Any]
    is_accuracy: bool = False
    """Whether values are percentages of correct class predictions (top-k): the report says '%' and 'pt'."""

    @property
    def unit(self) -> str:
        """'%' for accuracies, '' for a user's metric."""
        return "%" if self.is_accuracy else ""


def load_metric(name: str | None) -> MetricSpec:
    """The metric called ``name``: top1 (default), top5, or ``module:attr`` / ``file.py:attr``."""
    if name in (None, "", "top1", "accuracy"):
        return MetricSpec("top1", "top-1 accuracy (%)", lambda: TopK(1), True)
    if name == "top5":
        return MetricSpec("top5", "top-5 accuracy (%)", lambda: TopK(5), True)
    if ":" not in name:
        raise ConfigError(f"unknown metric '{name}'",
                          "use top1, top5, or your own as package.module:function or path/to/file.py:function")
    return metric_from_object(import_attribute(name, "metric"), name)


def metric_from_object(obj: Any, ref: str) -> MetricSpec:
    """A ``MetricSpec`` for a user's metric object: a class with update/compute, or a function of batches."""
    label = str(getattr(obj, "name", None) or getattr(obj, "__name__", None) or ref.rsplit(":", 1)[-1])
    if inspect.isclass(obj):
        if not (hasattr(obj, "update") and hasattr(obj, "compute")):
            raise ConfigError(f"metric {ref} is a class without update() and compute()",
                              "give it update(outputs, targets) and compute() -> float, or pass a function")
        return MetricSpec(label, f"{label} ({ref})", obj)
    if callable(obj):
        return MetricSpec(label, f"{label} ({ref})", lambda: _BatchFunction(obj, label))
    raise ConfigError(f"metric {ref} is a {type(obj).__name__}, not a function or class",
                      "point --metric at a function fn(batches) -> float or a class with update/compute")


def evaluate(model: nn.Module, data: Any, split: str, metric: MetricSpec | None = None,
             batch_size: int | None = None) -> float:
    """Score ``model`` on ``split`` of ``data`` (an ``edgecomp.data.Dataset``) with ``metric`` (default: the data's)."""
    metric = metric or data.metric or load_metric(None)
    m = metric.make()
    model.eval()
    try:
        with torch.no_grad():
            for x, y in data.batches(split, batch_size):
                m.update(model(x), y)
        value = m.compute()
    except ConfigError:
        raise
    except Exception as exc:
        if metric.is_accuracy:
            raise ConfigError(f"{metric.description} cannot score this model's outputs against the data's targets "
                              f"({type(exc).__name__}: {exc})", "top-1/top-5 need class logits and integer class "
                              "targets; pass --metric package.module:function for anything else") from exc
        raise ConfigError(f"metric {metric.description} raised {type(exc).__name__}: {exc}",
                          "fix the metric (it gets batches of (outputs, targets) and returns a float)") from exc
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metric {metric.description} returned {type(value).__name__}, not a number",
                          "return a float, higher is better") from exc
    if math.isnan(value):
        raise ConfigError(f"metric {metric.description} returned NaN on the {split} split",
                          "check it on a few batches (empty batches, division by zero)")
    return value


def _detach(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_detach(o) for o in outputs)
    return outputs
