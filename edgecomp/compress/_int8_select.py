"""Selective int8: which layers stay float (``skip`` patterns) and reverting layers until ``max_drop`` holds."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from edgecomp.errors import ConfigError, InfeasibleBudgetError, did_you_mean
from edgecomp.targets import HardwareProfile

logger = logging.getLogger(__name__)
MIN_CALIBRATION = 16  # fewer inputs give activation ranges that depend on which few samples were drawn


def _matches(pattern: str, name: str) -> bool:
    """A glob (``block.*``) or, when the pattern is a valid regex that the glob misses, a full regex match."""
    if fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def resolve_skip(model: nn.Module, patterns: list[str]) -> list[str]:
    """Module names of ``model`` matched by ``patterns`` (globs or regexes), in model order.

    A pattern that matches no module is a ``ConfigError`` naming the closest module names.
    """
    names = [n for n, _ in model.named_modules() if n]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if _matches(pattern, n)]
        if not hits:
            close = did_you_mean(pattern, names)
            layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d))]
            raise ConfigError(f"skip pattern {pattern!r} matches no module of the model.{close}",
                              f"use module names as in named_modules(), e.g. {', '.join(layers[:6]) or names[:6]}; "
                              "globs ('features.*') and regexes ('features\\.1[0-9]') both work")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def check_calibration_count(n: int, requested: int) -> None:
    """Refuse calibration sets too small to set activation ranges (the count needed is in the message)."""
    needed = min(MIN_CALIBRATION, requested)
    if n < needed:
        raise ConfigError(f"only {n} calibration inputs: int8 needs at least {needed} to set activation ranges",
                          f"give --data (or calibration_data) with >= {needed} training inputs, or set "
                          f"calibration_samples={n} to accept ranges from {n} inputs")


def weight_count(model: nn.Module, name: str) -> int:
    """Weights (not biases) of module ``name`` and its children (1 byte each in int8); 0 if no such module."""
    try:
        module = model.get_submodule(name)
    except AttributeError:  # a functional op of the report (e.g. 'add'): nothing to keep float by name
        return 0
    return sum(m.weight.numel() for m in module.modules()
               if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() > 1)


def latency_cost(model: nn.Module, name: str, input_shape: list[int], profile: HardwareProfile,
                 threads: int) -> float | None:
    """Predicted milliseconds added on ``profile`` by keeping module ``name`` float inside an int8 graph.

    The float island costs the module's layers at fp32 plus a DEQUANTIZE of its input and a QUANTIZE of its
    output; it saves the same layers at int8 (``profile/predict``, the build's roofline predictor, each layer
    counted alone). None when the module is not called once with a single tensor input.
    """
    try:
        return _latency_cost(model, name, input_shape, profile, threads)
    except Exception:  # a prediction is a nicety: never fail the stage over it
        logger.debug("no latency prediction for keeping %s float", name, exc_info=True)
        return None


def _latency_cost(model: nn.Module, name: str, input_shape: list[int], profile: HardwareProfile,
                  threads: int) -> float | None:
    import torch

    from edgecomp.profile.predict import layers_from_torch, predict_from_layers

    try:
        module = model.get_submodule(name)
    except AttributeError:
        return None
    shapes: list[list[int]] = []
    handle = module.register_forward_pre_hook(lambda m, args: shapes.append(
        list(args[0].shape) if len(args) == 1 and isinstance(args[0], torch.Tensor) else []))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        handle.remove()
    if len(shapes) != 1 or not shapes[0]:
        return None
    as_int8 = layers_from_torch(module, shapes[0], "int8")  # [quantize in, layers..., dequantize out]
    qdq, core = [as_int8[0], as_int8[-1]], as_int8[1:-1]
    island = (predict_from_layers(layers_from_torch(module, shapes[0], "fp32"), profile, threads, "fp32").ms
              + predict_from_layers(qdq, profile, threads, "int8").ms)
    return island - predict_from_layers(core, profile, threads, "int8").ms


def cost_text(reverted: dict, profile: str) -> str:
    """'features.0 (+1296 B, +0.012 ms predicted on pixel7)': what keeping one layer float cost."""
    ms = reverted.get("predicted_ms_added")
    return (f"{reverted['layer']} (+{reverted['weight_bytes_added']} B"
            + ("" if ms is None else f", {ms:+.3f} ms predicted on {profile}") + ")")


@dataclass
class Reverted:
    """Layers put back in float by ``revert_until`` and what each cost."""

    layers: list[dict] = field(default_factory=list)
    metric: float | None = None


def revert_until(model: nn.Module, order: list[str], already: list[str], float_metric: float, max_drop: float,
                 quantize: Callable[[list[str]], nn.Module], evaluate: Callable[[nn.Module], float],
                 start_metric: float, latency: Callable[[str], float | None] | None = None):
    """Keep the next most sensitive layer of ``order`` float until the drop is within ``max_drop``.

    ``quantize(skip)`` builds the int8 model with the ``skip`` layers float and ``evaluate`` scores it;
    ``latency(name)``, when given, is the predicted milliseconds a layer adds in float (:func:`latency_cost`).
    Returns ``(quantized model, Reverted)``; raises ``InfeasibleBudgetError`` (with the best reached)
    when every candidate layer is float and the drop is still larger.
    """
    done = Reverted(metric=start_metric)
    skip, best = list(already), start_metric
    candidates = [n for n in order if n not in skip and weight_count(model, n)]
    for name in candidates:
        skip.append(name)
        quantized = quantize(skip)
        metric = evaluate(quantized)
        weights = weight_count(model, name)
        done.layers.append({"layer": name, "metric_after": round(metric, 4), "weights": weights,
                            "weight_bytes_added": 3 * weights,
                            "predicted_ms_added": latency(name) if latency is not None else None,
                            "note": "weights stored float32 (4 bytes) instead of int8 (1 byte)"})
        logger.info("  kept %s in float: metric %.2f (float %.2f)", name, metric, float_metric)
        best, done.metric = max(best, metric), metric
        if float_metric - metric <= max_drop:
            return quantized, done
    raise InfeasibleBudgetError(
        f"int8 cannot meet max_drop={max_drop}: with {len(skip)} layers in float the drop is still "
        f"{float_metric - (done.metric if done.metric is not None else start_metric):.2f} points "
        f"(best reached {float_metric - best:.2f}; float {float_metric:.2f})",
        "raise max_drop, add calibration data, or use qat='always' (quantization-aware fine-tuning)")
