"""``prune.filter``: structured filter/channel pruning (Li et al. 2017 L1-norm; Molchanov et al. Taylor).

Whole output channels of conv and linear layers are removed, so the network really gets thinner and
the exported .tflite/.onnx shrink with it. Channel groups come from torch-pruning's dependency graph
(see :mod:`edgecomp.compress.channels`), so residual sums, concatenations, depthwise convs and batch
norm stay consistent; the classifier's outputs are never pruned. Recipe examples::

    prune.filter(ratio=0.5)                                  # remove half the channels of every group
    prune.filter(ratio=0.4, criterion="taylor", scope="global", protect=["features.0"])
    prune.filter(ratio=0.5, layer_ratios={"classifier.0": 0.75}, round_to=4)

Then the network is fine-tuned with distillation from the unpruned model (when there is data).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from edgecomp.compress.base import BuildContext, SearchRecipe, Stage, StageResult
from edgecomp.compress.channels import ChannelGroup, channel_groups, matches, remove_channels
from edgecomp.compress.prune_common import RecoveryConfig, eval_accuracy, example_input, probe_input, recover
from edgecomp.errors import ConfigError
from edgecomp.finetune import task_loss
from edgecomp.model import count_params

logger = logging.getLogger(__name__)


SEARCH_RATIOS = (0.3, 0.5, 0.7)
"""Pruning ratios the planner tries."""


class FilterPruneConfig(RecoveryConfig):
    """Settings of prune.filter."""

    ratio: float = Field(0.5, ge=0.0, lt=1.0, description="Fraction of channels to remove, in [0, 1).")
    criterion: Literal["l1", "taylor"] = Field(
        "l1", description="Channel importance: l1 (filter L1 norm, Li et al.) or taylor (|w * dL/dw|, Molchanov).")
    scope: Literal["layer", "global"] = Field(
        "layer", description="layer: the ratio in every group; global: one threshold over mean-normalised scores.")
    layer_ratios: dict[str, float] = Field(
        default_factory=dict, description="Per-layer ratio overrides by layer name (fnmatch patterns allowed).")
    protect: list[str] = Field(default_factory=list, description="Layer names (fnmatch patterns) never pruned.")
    round_to: int = Field(1, ge=1, description="Keep a multiple of this many channels per group (hardware-friendly).")
    taylor_batches: int = Field(8, ge=1, description="Training batches whose gradients the Taylor criterion sums.")

    @field_validator("layer_ratios")
    @classmethod
    def _ratios_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: r for k, r in v.items() if not 0.0 <= r < 1.0}
        if bad:
            raise ValueError(f"ratios must be in [0, 1), got {bad}")
        return v


def _importance(model: nn.Module, dg, groups: list[ChannelGroup], cfg: FilterPruneConfig,
                ctx: BuildContext) -> dict[str, torch.Tensor]:
    """Per-group channel scores (higher = keep): the root's filter L1 norms, or torch-pruning's Taylor
    importance over the whole group."""
    import torch_pruning as tp

    normalizer = "mean" if cfg.scope == "global" else None
    modules = dict(model.named_modules())
    if cfg.criterion == "l1":
        return {g.name: root_l1(modules[g.root], g.size, normalize=normalizer is not None) for g in groups}
    if ctx.data is None:
        raise ConfigError("the Taylor criterion needs training data for its gradients",
                          "pass --data, or use criterion='l1'")
    imp = tp.importance.GroupTaylorImportance(normalizer=normalizer)
    model.zero_grad()
    model.eval()
    for i, (xb, yb) in enumerate(ctx.data.batches("train", 64)):
        if i >= cfg.taylor_batches:
            break
        loss = task_loss(model(xb), yb, ctx.data)
        if loss is None:
            raise ConfigError("the Taylor criterion needs a loss, and the data's targets are not class "
                              "indices", "return a 'loss' from the dataset factory, or use criterion='l1'")
        loss.backward()
    scores = {}
    for g in groups:
        root = modules[g.root]
        full = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, list(range(g.size)))
        s = imp(full)
        scores[g.name] = torch.zeros(g.size) if s is None else s.detach().float()
    model.zero_grad()
    return scores


def root_l1(root: nn.Module, size: int, normalize: bool = False) -> torch.Tensor:
    """Li et al.'s L1 criterion: the L1 norm of each of the group root's ``size`` output filters (divided by
    their mean with ``normalize``, for a global threshold).

    This is what torch-pruning's ``GroupMagnitudeImportance(p=1, group_reduction="first")`` returns, computed
    from the root alone: that class scores every layer of the group before keeping the first, and on a
    depthwise conv whose input channels are in the group (a separable rewrite followed by prune.filter) it
    indexes past the conv's single input channel per group and raises IndexError.
    """
    w = root.weight.detach()
    if isinstance(root, nn.modules.conv._ConvTransposeNd):
        w = w.transpose(0, 1)
    scores = w.flatten(1).abs().sum(1)[:size].float()
    return scores / scores.mean() if normalize and scores.mean() > 0 else scores


def _keep_count(size: int, ratio: float, round_to: int) -> int:
    keep = max(1, size - math.floor(ratio * size))
    return min(size, int(math.ceil(keep / round_to) * round_to))


def choose_channels(groups: list[ChannelGroup], scores: dict[str, torch.Tensor], cfg: FilterPruneConfig) -> dict[str, list[int]]:
    """Channels to remove per group: the lowest-scoring ones, per layer or under one global threshold."""
    ratios = {}
    for g in groups:
        ratios[g.name] = next((r for pat, r in cfg.layer_ratios.items() if matches(g.name, [pat])), cfg.ratio)
    remove: dict[str, list[int]] = {}
    if cfg.scope == "layer":
        for g in groups:
            keep = _keep_count(g.size, ratios[g.name], cfg.round_to)
            order = torch.argsort(scores[g.name], descending=True)
            remove[g.name] = sorted(order[keep:].tolist())
        return remove
    overridden = {g.name for g in groups if any(matches(g.name, [p]) for p in cfg.layer_ratios)}
    pool = [(float(s), g.name, i) for g in groups if g.name not in overridden for i, s in enumerate(scores[g.name])]
    pool.sort()
    budget = math.floor(cfg.ratio * len(pool))
    taken = {g.name: 0 for g in groups}
    for _, name, i in pool:
        if budget == 0:
            break
        size = next(g.size for g in groups if g.name == name)
        if taken[name] < size - 1:
            remove.setdefault(name, []).append(i)
            taken[name] += 1
            budget -= 1
    for g in groups:
        if g.name in overridden:
            keep = _keep_count(g.size, ratios[g.name], cfg.round_to)
            remove[g.name] = sorted(torch.argsort(scores[g.name], descending=True)[keep:].tolist())
        elif cfg.round_to > 1 and g.name in remove:
            keep = _keep_count(g.size, len(remove[g.name]) / g.size, cfg.round_to)
            order = torch.argsort(scores[g.name], descending=True)
            remove[g.name] = sorted(order[keep:].tolist())
    return {k: sorted(v) for k, v in remove.items()}


class FilterPrune(Stage):
    """Structured pruning: removes whole filters/neurons by L1 or Taylor importance, then fine-tunes."""

    name = "prune.filter"
    Config = FilterPruneConfig
    search_rank = 30

    @classmethod
    def search_space(cls) -> list[SearchRecipe]:
        """Three pruning ratios, then half the filters of the separable rewrite."""
        return [[(cls.name, {"ratio": r})] for r in SEARCH_RATIOS] + [[("separable", {}), (cls.name, {"ratio": 0.5})]]

    def apply(self, model: nn.Module, cfg: FilterPruneConfig, ctx: BuildContext) -> StageResult:
        """Score channel groups, remove the weakest channels physically, then recover by distillation."""
        model = copy.deepcopy(model).eval()
        example = example_input(ctx)
        dg, groups, outputs = channel_groups(model, example, cfg.protect)
        if not groups:
            raise ConfigError("prune.filter found no prunable channel group in this model",
                              "the model may have no conv/linear layer besides its output layer, or all are protected")
        sizes_before = {g.name: g.size for g in groups}
        scores = _importance(model, dg, groups, cfg, ctx)
        remove = choose_channels(groups, scores, cfg)
        metrics: dict = {"accuracy_before": eval_accuracy(ctx.teacher, ctx) if ctx.teacher is not None else None,
                         "params_before": count_params(model)}
        notes: list[str] = []
        result = remove_channels(model, example, groups, remove, probe=probe_input(ctx))
        model = result.model
        for name, why in result.skipped.items():
            notes.append(f"channel group {name} was left whole: {why}")
        removed = sum(result.removed.values())
        total = sum(sizes_before.values())
        metrics.update({
            "criterion": cfg.criterion, "scope": cfg.scope,
            "channels_removed": removed, "channels_total": total,
            "channel_pruning_rate": removed / total,
            "params_after": count_params(model),
            "pruning_rate": 1 - count_params(model) / metrics["params_before"],
            "channels_kept": {n: f"{result.kept[n]}/{sizes_before[n]}" for n in sizes_before},
            "protected_output_layers": outputs,
            "removal_check_max_abs_err": result.max_abs_err,
        })
        logger.info("  removed %d of %d channels (%s)", removed, total,
                    ", ".join(f"{n} {v}" for n, v in metrics["channels_kept"].items()))
        recover(model, cfg, ctx, metrics, notes)
        return StageResult(model=model.eval(), metrics=metrics, notes=notes)
