"""``prune.magnitude``: unstructured magnitude pruning with an iterative schedule (Han et al. 2015).

The smallest-magnitude weights of conv and linear layers are set to zero, globally (one threshold over
all layers) or per layer, in ``steps`` rounds of rising sparsity, each followed by masked fine-tuning
(distilled from the unpruned model when data is given). Biases and batch norm are left dense.

Zeros do not make a dense file smaller or a dense runtime faster: the .tflite/.onnx of a pruned model
have the same size and latency as before. What does shrink is the compressed size (each artifact's
``details.deflate_bytes`` in the report) and the sparse or Huffman-coded form written by a later
clustering/Huffman stage. Recipe example::

    prune.magnitude(sparsity=0.8, steps=3)
"""

from __future__ import annotations

import copy
import logging
import zlib
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from edgecomp.compress.base import BuildContext, Stage, StageResult
from edgecomp.compress.channels import matches
from edgecomp.compress.prune_common import RecoveryConfig, eval_accuracy, recover
from edgecomp.errors import ConfigError

logger = logging.getLogger(__name__)
DENSE_NOTE = (
    "unstructured sparsity does not shrink dense files or speed up dense runtimes: the exported .tflite/.onnx "
    "keep every zero. Compare each artifact's details.deflate_bytes (its zlib-compressed size) with its bytes, "
    "and see metrics.weights_deflate_bytes; a Huffman/cluster stage after this one stores the zeros compactly"
)


class MagnitudePruneConfig(RecoveryConfig):
    """Settings of prune.magnitude."""

    sparsity: float = Field(0.8, ge=0.0, lt=1.0, description="Target fraction of conv/linear weights set to zero.")
    scope: Literal["global", "layer"] = Field(
        "global", description="global: one magnitude threshold over all layers; layer: the same sparsity per layer.")
    steps: int = Field(3, ge=1, description="Prune/fine-tune rounds; sparsity rises linearly to the target.")
    finetune_epochs: int = Field(5, ge=0, description="Fine-tuning epochs after each pruning round (0 = none).")
    protect: list[str] = Field(default_factory=list, description="Layer names (fnmatch patterns) left dense.")


def prunable_weights(model: nn.Module, protect: list[str]) -> dict[str, nn.Parameter]:
    """Weights of conv and linear layers (not biases, not batch norm), by layer name, minus protected ones."""
    return {name: m.weight for name, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and not matches(name, protect)}


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """0/1 masks that zero the ``sparsity`` fraction of smallest |w|, over all weights or per layer."""
    if scope == "global":
        flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
        k = round(sparsity * flat.numel())
        if k == 0:
            return {n: torch.ones_like(w) for n, w in weights.items()}
        threshold = torch.kthvalue(flat, k).values
        masks = {n: (w.detach().abs() > threshold).float() for n, w in weights.items()}
        return masks
    masks = {}
    for n, w in weights.items():
        k = round(sparsity * w.numel())
        if k == 0:
            masks[n] = torch.ones_like(w)
            continue
        threshold = torch.kthvalue(w.detach().abs().flatten(), k).values
        masks[n] = (w.detach().abs() > threshold).float()
    return masks


def weight_bytes(model: nn.Module) -> tuple[int, int]:
    """(raw fp32 bytes, zlib level-9 bytes) of all parameters, as a measured compressibility figure."""
    raw = b"".join(p.detach().numpy().astype(np.float32).tobytes() for p in model.parameters())
    return len(raw), len(zlib.compress(raw, 9))


class MagnitudePrune(Stage):
    """Unstructured magnitude pruning, iterative (prune -> fine-tune -> prune ...), masks kept fixed."""

    name = "prune.magnitude"
    Config = MagnitudePruneConfig

    def apply(self, model: nn.Module, cfg: MagnitudePruneConfig, ctx: BuildContext) -> StageResult:
        """Prune to the target sparsity in ``cfg.steps`` rounds, fine-tuning under the mask after each."""
        model = copy.deepcopy(model).eval()
        weights = prunable_weights(model, cfg.protect)
        if not weights:
            raise ConfigError("prune.magnitude found no conv or linear weights to prune",
                              "check the protect patterns")
        metrics: dict = {"accuracy_before": eval_accuracy(ctx.teacher, ctx) if ctx.teacher is not None else None}
        notes: list[str] = []
        _, deflate_before = weight_bytes(model)
        masks: dict[str, torch.Tensor] = {}

        def reapply(_model: nn.Module) -> None:
            with torch.no_grad():
                for n, w in weights.items():
                    w.mul_(masks[n])

        schedule = []
        for step in range(1, cfg.steps + 1):
            target = cfg.sparsity * step / cfg.steps
            masks = magnitude_masks(weights, target, cfg.scope)
            reapply(model)
            acc = eval_accuracy(model, ctx)
            recover(model, cfg, ctx, metrics, notes, on_batch=reapply)
            schedule.append({"step": step, "sparsity": target, "accuracy_pruned": acc,
                             "accuracy_finetuned": eval_accuracy(model, ctx)})
            logger.info("  round %d/%d: sparsity %.1f%%, accuracy %s -> %s", step, cfg.steps, 100 * target,
                        acc, schedule[-1]["accuracy_finetuned"])
        reapply(model)
        total = sum(w.numel() for w in weights.values())
        zeros = sum(int((w == 0).sum()) for w in weights.values())
        raw_after, deflate_after = weight_bytes(model)
        metrics.update({
            "scope": cfg.scope,
            "sparsity_target": cfg.sparsity,
            "sparsity": zeros / total,
            "pruning_rate": zeros / total,
            "nonzero_params": sum(int((p != 0).sum()) for p in model.parameters()),
            "layer_sparsity": {n: float((w == 0).float().mean()) for n, w in weights.items()},
            "schedule": schedule,
            "weights_fp32_bytes": raw_after,
            "weights_deflate_bytes": {"before": deflate_before, "after": deflate_after},
        })
        notes.append(DENSE_NOTE)
        return StageResult(model=model.eval(), metrics=metrics, notes=notes)
