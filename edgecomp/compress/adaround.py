"""AdaRound: learned rounding of int8 weights (Nagel et al. 2020, "Up or Down? Adaptive Rounding").

Round-to-nearest rounds each weight on its own; AdaRound chooses, for every weight, floor or ceil of
``w / s`` so that each layer's *output* on calibration inputs stays closest to the float layer's. Per
layer, with the scale ``s`` that ``quantize.int8`` will use (symmetric, ``max|w| / 127`` per output
channel or per tensor), it learns ``h(V)`` in [0, 1] (a rectified sigmoid) by Adam on

    || layer(x; s * (floor(w / s) + h(V))) - layer(x; w) ||^2 + lambda * sum(1 - |2 h(V) - 1| ^ beta)

with ``beta`` annealed from 20 to 2 so that ``h`` ends at 0 or 1; the inputs ``x`` are the float
network's activations on calibration data, with the layers before already rounded (layer by layer).

The result is written back as float weights that are exact multiples of ``s``: the PT2E observer then
finds the same ``s`` (each channel's largest weight keeps its round-to-nearest value, 127) and its
round-to-nearest reproduces the learned integers, so the exporters need no change. BatchNorm is folded
into the convolutions first (as PT2E would), on a copy of the model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch
EPS = 2**-12  # the weight observers' smallest scale


@dataclass
class AdaRoundResult:
    """What ``adaround`` changed: layers, weights rounded the other way, and output error before/after."""

    layers: int = 0
    flipped: int = 0  # weights whose learned rounding differs from round-to-nearest
    weights: int = 0
    mse_nearest: list[float] = field(default_factory=list)  # per layer, output MSE with round-to-nearest
    mse_learned: list[float] = field(default_factory=list)  # ... and with the learned rounding

    def summary(self) -> str:
        """One line for the stage's notes."""
        near, learned = float(np.sum(self.mse_nearest)), float(np.sum(self.mse_learned))
        return (f"AdaRound on {self.layers} layers: {self.flipped} of {self.weights} weights rounded the other "
                f"way; summed layer-output MSE {near:.3g} -> {learned:.3g}")


def fold_all_batchnorm(model: nn.Module, input_shape: list[int]) -> int:
    """Fold every BatchNorm that directly follows a convolution into it (in place); how many were folded."""
    from edgecomp.compress.equalize import Pair, _paths, fold_batchnorm

    aten = torch.ops.aten
    bns = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
    graph = torch.export.export(copy.deepcopy(model).eval(), (torch.zeros(input_shape),)).module()
    pairs = []
    for node in graph.graph.nodes:
        if node.target != aten.conv2d.default or not _paths(node) or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.target in bns and _paths(user):
            pairs.append(Pair(_paths(node)[-1], _paths(user)[-1], "", ""))
    fold_batchnorm(model, pairs)
    return len(pairs)


def _scale(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    flat = w.detach().abs().reshape(w.shape[0], -1)
    top = flat.amax(1) if per_channel else flat.amax().expand(w.shape[0])
    return (top / 127.0).clamp_min(EPS).reshape(-1, *([1] * (w.dim() - 1)))


def _h(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _layer_inputs(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for i in range(0, len(x), 64):
                model(x[i : i + 64])
    finally:
        handle.remove()
    return torch.cat(seen)


def _round_layer(layer: nn.Module, inputs: torch.Tensor, per_channel: bool, iters: int, lam: float,
                 gen: torch.Generator) -> tuple[int, float, float]:
    """Learn the rounding of one conv/linear layer; returns (weights flipped, MSE nearest, MSE learned)."""
    w = layer.weight.detach().clone()
    s = _scale(w, per_channel)
    q = w / s
    floor = torch.floor(q)
    fixed = torch.round(q).abs() >= 127  # each scale's largest weight keeps 127, so the observer finds s again
    rest = (q - floor).clamp(1e-4, 1 - 1e-4)
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=1e-2)
    with torch.no_grad():
        target = layer(inputs)

    def weights(h: torch.Tensor) -> torch.Tensor:
        return torch.where(fixed, torch.round(q), torch.clamp(floor + h, -127, 127)) * s

    def mse(weight: torch.Tensor) -> float:
        with torch.no_grad():
            return float(((_forward(layer, inputs, weight) - target) ** 2).mean())

    before = mse(weights((q - floor >= 0.5).float()))
    for step in range(iters):
        idx = torch.randint(0, len(inputs), (min(32, len(inputs)),), generator=gen)
        h = _h(v)
        recon = ((_forward(layer, inputs[idx], weights(h)) - target[idx]) ** 2).mean()
        beta = 20.0 - (20.0 - 2.0) * step / max(iters - 1, 1)
        reg = (1 - (2 * h - 1).abs().pow(beta)).sum() if step >= iters // 5 else h.sum() * 0.0  # warm-up
        loss = recon + lam * reg / h.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        learned = weights((_h(v) >= 0.5).float())
        after = mse(learned)
        if after > before:  # never worse than round-to-nearest on the calibration inputs
            learned, after = weights((q - floor >= 0.5).float()), before
        flipped = int((torch.round(learned / s) != torch.round(q)).sum())
        layer.weight.copy_(learned)
    return flipped, before, after


def _forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return nn.functional.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    return nn.functional.linear(x, weight, layer.bias)


def adaround(model: nn.Module, x: np.ndarray, input_shape: list[int], per_channel: bool = True,
             iters: int = 300, lam: float = 0.01, seed: int = 0) -> tuple[nn.Module, AdaRoundResult]:
    """A copy of ``model`` (BatchNorm folded) whose conv/linear weights are int8 grid points chosen by AdaRound.

    ``x`` are calibration inputs (normalised, N first); ``per_channel`` must match ``quantize.int8``'s
    ``weights`` so the learned integers are the ones the exporters write.
    """
    model = copy.deepcopy(model).eval()
    try:
        fold_all_batchnorm(model, input_shape)
    except Exception:  # a model torch.export refuses: round what is there (BatchNorm left unfolded)
        logger.debug("no BatchNorm folding before AdaRound", exc_info=True)
    for p in model.parameters():
        p.requires_grad_(False)
    xs = torch.as_tensor(x, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    result = AdaRoundResult()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of small steps: one thread is faster, and much faster on a busy machine
    try:
        for layer in layers:
            inputs = _layer_inputs(model, layer, xs)
            if not len(inputs):
                continue
            flipped, before, after = _round_layer(layer, inputs, per_channel, iters, lam, gen)
            result.layers += 1
            result.flipped += flipped
            result.weights += layer.weight.numel()
            result.mse_nearest.append(before)
            result.mse_learned.append(after)
    finally:
        torch.set_num_threads(threads)
    logger.info("  %s", result.summary())
    return model, result
