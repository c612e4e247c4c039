"""Calibration inputs synthesised from a model's batch-norm statistics, for int8 without data.

ZeroQ (Cai et al., 2020) and MCT's data generation: every BatchNorm layer keeps the running mean and
variance of the activations it saw in training, per channel. Starting from random normal inputs, Adam
optimises the inputs themselves (the model's weights stay fixed) so that the batch statistics each BN
layer sees match its running ones. The loss is the sum over BN layers of the mean over channels of
``(batch mean - running mean)^2 + (batch var - running var)^2``. Inputs that reproduce those statistics
exercise the activation ranges the network had in training, which is what int8 calibration measures.

Seeded and bounded in time: the inputs are optimised in batches (``batch_size``, which is also the
batch whose statistics are matched), each for at most ``steps`` Adam steps, and generation stops at
``time_budget_s`` (with at least one batch, possibly after fewer steps), so a large model costs a
bounded number of seconds rather than minutes. This module is public because the planner and the
quantization stage both use it; it registers no stage.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Synthesized:
    """Inputs synthesised from BN statistics, with how far the optimisation went."""

    inputs: np.ndarray
    """float32, shaped (n, *input_shape[1:])."""
    bn_layers: int
    """BatchNorm layers whose statistics were matched."""
    steps: int
    """Adam steps run, over all batches."""
    loss_start: float
    """BN-statistics loss of the first batch before optimisation (random normal inputs)."""
    loss_end: float
    """Mean BN-statistics loss of the batches after optimisation."""
    stopped: str
    """'steps' when every batch ran all its steps, 'time-budget' when the time budget cut it short."""


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers (1d/2d/3d) that track running statistics, in module order."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None and m.running_var is not None]


class _StatsLoss:
    """Forward hooks on every BN layer that add up the mismatch of batch and running statistics."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.terms: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs: tuple, _output) -> None:
        x = inputs[0]
        dims = [0, *range(2, x.ndim)]  # every axis but the channels
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.terms.append(((mean - module.running_mean) ** 2).mean() + ((var - module.running_var) ** 2).mean())

    def take(self) -> torch.Tensor:
        """The sum of the terms collected since the last call."""
        total, self.terms = torch.stack(self.terms).sum(), []
        return total

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def batchnorm_mismatch(model: nn.Module, x: np.ndarray | torch.Tensor) -> float:
    """The BN-statistics loss of ``model`` on the batch ``x`` (0 when every BN layer sees its running stats)."""
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError("the model has no BatchNorm layer with running statistics")
    stats = _StatsLoss(layers)
    model.eval()
    try:
        with torch.no_grad():
            model(torch.as_tensor(x, dtype=torch.float32))
        return float(stats.take())
    finally:
        stats.close()


def synthesize_from_batchnorm(
    model: nn.Module, input_shape: list[int], n: int = 32, *, batch_size: int = 32, steps: int = 200,
    lr: float = 0.2, seed: int = 0, time_budget_s: float = 30.0,
) -> Synthesized | None:
    """Up to ``n`` inputs whose per-BN-layer batch statistics match the running ones; None without BN layers.

    Inputs are optimised in batches of ``batch_size`` for ``steps`` Adam steps at ``lr`` each, starting from
    seeded random normal values; generation stops once ``time_budget_s`` seconds have passed (the first batch
    always completes at least one step), so fewer than ``n`` inputs may come back.
    """
    work = copy.deepcopy(model).eval()
    layers = batchnorm_layers(work)
    if not layers:
        return None
    for p in work.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    stats = _StatsLoss(layers)
    deadline = time.monotonic() + time_budget_s
    batches, losses, total_steps, loss_start, stopped = [], [], 0, float("nan"), "steps"
    try:
        while sum(len(b) for b in batches) < n and (not batches or time.monotonic() < deadline):
            size = min(batch_size, n - sum(len(b) for b in batches))
            x = torch.randn(size, *input_shape[1:], generator=gen).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            loss = torch.tensor(float("nan"))
            for step in range(steps):
                work(x)
                loss = stats.take()
                if not batches and step == 0:
                    loss_start = float(loss.detach())
                opt.zero_grad()
                loss.backward()
                opt.step()
                total_steps += 1
                if time.monotonic() >= deadline:
                    stopped = "time-budget"
                    break
            with torch.no_grad():
                work(x)
                losses.append(float(stats.take()))
            batches.append(x.detach())
    finally:
        stats.close()
    if sum(len(b) for b in batches) < n:
        stopped = "time-budget"
    inputs = torch.cat(batches).numpy().astype(np.float32)
    logger.info("  synthesised %d calibration inputs from %d BatchNorm layers' statistics in %d steps (%s): "
                "mismatch %.4g -> %.4g", len(inputs), len(layers), total_steps, stopped, loss_start,
                float(np.mean(losses)))
    return Synthesized(inputs, len(layers), total_steps, loss_start, float(np.mean(losses)), stopped)
