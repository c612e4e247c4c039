"""Helpers shared by the weight-level stages (cluster, binarize): which layers have weights, BN folding."""

from __future__ import annotations

import itertools
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers in module order, as (qualified name, module)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def remove_prune_reparam(model: nn.Module) -> int:
    """Make torch.nn.utils.prune masks permanent (weight = weight_orig * mask); return how many."""
    from torch.nn.utils import prune

    count = 0
    for m in model.modules():
        for pname in [n[: -len("_orig")] for n, _ in m.named_parameters(recurse=False) if n.endswith("_orig")]:
            prune.remove(m, pname)
            count += 1
    return count


def _bn_for(layer: nn.Module, bn: nn.Module) -> bool:
    if isinstance(layer, nn.Conv2d):
        return isinstance(bn, nn.BatchNorm2d)
    if isinstance(layer, nn.Conv1d | nn.Linear):
        return isinstance(bn, nn.BatchNorm1d)
    if isinstance(layer, nn.Conv3d):
        return isinstance(bn, nn.BatchNorm3d)
    return False


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold every BatchNorm that directly follows a conv/linear inside an ``nn.Sequential`` (eval statistics).

    The conv gets the BN's affine map in its weight and bias and the BN becomes ``nn.Identity``; outputs
    are unchanged up to float rounding. Returns the names of the folded layers. BNs elsewhere stay.
    """
    folded = []
    for seq_name, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules)
        for a, b in itertools.pairwise(keys):
            layer, bn = seq._modules[a], seq._modules[b]
            if not (isinstance(layer, WEIGHT_LAYERS) and _bn_for(layer, bn) and bn.track_running_stats):
                continue
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            shape = [-1] + [1] * (layer.weight.dim() - 1)
            layer.weight.mul_(scale.reshape(shape))
            old_bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
            layer.bias = nn.Parameter((old_bias - bn.running_mean) * scale + shift)
            seq._modules[b] = nn.Identity()
            folded.append(f"{seq_name}.{a}" if seq_name else a)
    if folded:
        logger.info("  folded %d BatchNorm layers into their conv/linear", len(folded))
    return folded
