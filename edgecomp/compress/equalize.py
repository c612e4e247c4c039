"""Cross-layer equalisation and bias correction before int8 (Nagel et al. 2019, data-free quantization).

Equalisation rescales output channel ``i`` of a conv by ``1/s_i`` and the matching input channel of
the next conv by ``s_i`` (``s_i = sqrt(r1_i * r2_i) / r2_i`` with ``r`` the channels' weight ranges), so
both layers' per-channel ranges become equal and one per-tensor int8 scale fits every channel. ReLU
commutes with a positive scale, so the float network computes the same function. ReLU6 does not (it
clips at 6): a ReLU6 channel is rescaled only where the calibration data never reaches either clip
(``6 * min(1, s_i)`` above its largest pre-activation), otherwise it is left alone.

Bias correction subtracts from each conv/linear bias the mean output error its int8 weights cause:
``E[(W_q - W) x]`` with ``E[x]`` the per-channel mean input on calibration data, ``W_q`` the weights
rounded the way ``quantize.int8`` will round them (symmetric, per channel or per tensor).

Both first fold BatchNorm into the preceding convolutions of the chains they find (as PT2E does), on a
copy of the model. Per-channel rounding does not change under that folding (each channel's scale moves
with it); with per-tensor weights, a BatchNorm outside such a chain makes the correction approximate.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class Pair:
    """conv1 -> [BatchNorm] -> ReLU/ReLU6 -> conv2, by module name."""

    conv1: str
    bn: str | None
    act: str  # "relu" or "relu6"
    conv2: str


def _paths(node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [str(v[0]).replace("L['self'].", "") for v in stack.values() if v and v[0]]


def find_pairs(model: nn.Module, input_shape: list[int]) -> list[Pair]:
    """conv -> [BN] -> ReLU/ReLU6 -> conv chains of ``model`` whose middle tensor feeds only the next conv."""
    aten = torch.ops.aten
    modules = dict(model.named_modules())
    graph = torch.export.export(copy.deepcopy(model).eval(), (torch.zeros(input_shape),)).module()
    bns = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
    pairs = []
    for node in graph.graph.nodes:
        if node.target != aten.conv2d.default or not _paths(node):
            continue
        conv1, bn, act, current = _paths(node)[-1], None, None, node
        while len(current.users) == 1:
            (user,) = current.users
            if user.target in bns and _paths(user):
                bn = _paths(user)[-1]
            elif user.target in (aten.relu.default, aten.relu_.default):
                act = "relu"
            elif user.target in (aten.relu6.default, aten.relu6_.default) or (
                    user.target in (aten.hardtanh.default, aten.hardtanh_.default)
                    and list(user.args[1:3]) == [0.0, 6.0]):
                act = "relu6"
            elif user.target == aten.conv2d.default and act and _paths(user) and user.args[0] is current:
                conv2 = _paths(user)[-1]
                if _equalizable(modules.get(conv1), modules.get(conv2)):
                    pairs.append(Pair(conv1, bn, act, conv2))
                break
            elif "getitem" not in str(user.target):
                break
            current = user
    return pairs


def _equalizable(a: nn.Module | None, b: nn.Module | None) -> bool:
    if not isinstance(a, nn.Conv2d) or not isinstance(b, nn.Conv2d):
        return False
    depthwise = b.groups == b.in_channels == b.out_channels
    return a.out_channels == b.in_channels and (b.groups == 1 or depthwise)


def fold_batchnorm(model: nn.Module, pairs: list[Pair]) -> None:
    """Fold each pair's BatchNorm into its conv1 (in place); the BatchNorm becomes the identity."""
    for p in pairs:
        if p.bn is None:
            continue
        conv, bn = model.get_submodule(p.conv1), model.get_submodule(p.bn)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        with torch.no_grad():
            std = torch.sqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(std)
            beta = bn.bias if bn.affine else torch.zeros_like(std)
            factor = gamma / std
            conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
            new_bias = beta + (bias - bn.running_mean) * factor
            conv.bias = nn.Parameter(new_bias.clone())
        parent, _, leaf = p.bn.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
        p.bn = None


def _in_ranges(conv: nn.Conv2d) -> torch.Tensor:
    w = conv.weight.detach().abs()
    if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1:
        return w.reshape(w.shape[0], -1).amax(1)
    return w.transpose(0, 1).reshape(w.shape[1], -1).amax(1)


def _pre_activation_max(model: nn.Module, names: list[str], x: np.ndarray) -> dict[str, torch.Tensor]:
    """Largest output per channel of each named conv on ``x`` (BatchNorm already folded in)."""
    found: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_m, _i, out):
            top = out.detach().transpose(0, 1).reshape(out.shape[1], -1).amax(1)
            found[name] = top if name not in found else torch.maximum(found[name], top)
        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    with torch.no_grad():
        for i in range(0, len(x), 64):
            model(torch.as_tensor(x[i : i + 64], dtype=torch.float32))
    for h in handles:
        h.remove()
    return found


def equalize(model: nn.Module, input_shape: list[int], x: np.ndarray | None = None, sweeps: int = 4):
    """Cross-layer equalisation on a copy of ``model``; returns (model, pairs equalised)."""
    model = copy.deepcopy(model).eval()
    pairs = find_pairs(model, input_shape)
    fold_batchnorm(model, pairs)
    relu6 = [p.conv1 for p in pairs if p.act == "relu6"]
    limits = _pre_activation_max(model, relu6, x) if relu6 and x is not None else {}
    for _ in range(sweeps):
        for p in pairs:
            a, b = model.get_submodule(p.conv1), model.get_submodule(p.conv2)
            r1 = a.weight.detach().abs().reshape(a.out_channels, -1).amax(1)
            r2 = _in_ranges(b)
            s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 * r2) / r2.clamp_min(1e-12), torch.ones_like(r1))
            if p.act == "relu6":  # keep only channels that reach neither clip on the calibration data
                top = limits.get(p.conv1)
                s = torch.ones_like(s) if top is None else torch.where(top <= 6.0 * torch.clamp(s, max=1.0), s, 1.0)
            _rescale(a, b, s)
    return model, pairs


def _rescale(a: nn.Conv2d, b: nn.Conv2d, s: torch.Tensor) -> None:
    with torch.no_grad():
        a.weight.div_(s.reshape(-1, 1, 1, 1))
        if a.bias is not None:
            a.bias.div_(s)
        if b.groups == b.in_channels == b.out_channels and b.groups > 1:
            b.weight.mul_(s.reshape(-1, 1, 1, 1))
        else:
            b.weight.mul_(s.reshape(1, -1, 1, 1))


def int8_weights(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``w`` rounded to symmetric int8 (max|w|/127 scale per output channel or per tensor), dequantized."""
    flat = w.detach().abs().reshape(w.shape[0], -1)
    top = flat.amax(1) if per_channel else flat.amax().expand(w.shape[0])
    scale = (top / 127.0).clamp_min(2**-12).reshape(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def correct_bias(model: nn.Module, x: np.ndarray, per_channel: bool = True) -> tuple[nn.Module, int]:
    """Bias correction on a copy of ``model`` (BatchNorm folded first); returns (model, layers corrected)."""
    model, pairs = copy.deepcopy(model).eval(), []
    try:
        pairs = find_pairs(model, [1, *x.shape[1:]])
    except Exception:  # a model torch.export refuses: correct without folding
        logger.debug("no BatchNorm folding for bias correction", exc_info=True)
    fold_batchnorm(model, pairs)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    means: dict[str, torch.Tensor] = {}
    count = {"n": 0}

    def hook(name):
        def record(_m, inputs, _o):
            inp = inputs[0].detach()
            dims = [0, *range(2, inp.dim())]
            total = inp.sum(dim=dims)
            means[name] = total if name not in means else means[name] + total
            count[name] = count.get(name, 0) + int(np.prod([inp.shape[d] for d in dims]))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    with torch.no_grad():
        for i in range(0, len(x), 64):
            model(torch.as_tensor(x[i : i + 64], dtype=torch.float32))
    for h in handles:
        h.remove()
    done = 0
    with torch.no_grad():
        for name, m in layers:
            if name not in means:
                continue
            mean = means[name] / count[name]
            err = int8_weights(m.weight, per_channel) - m.weight
            if isinstance(m, nn.Conv2d):
                if m.groups == 1:
                    shift = (err.sum(dim=(2, 3)) * mean.reshape(1, -1)).sum(1)
                elif m.groups == m.in_channels == m.out_channels:
                    shift = err.sum(dim=(1, 2, 3)) * mean
                else:
                    continue
            else:
                shift = err @ mean
            if m.bias is None:
                m.bias = nn.Parameter(torch.zeros(m.weight.shape[0]))
            m.bias.sub_(shift)
            done += 1
    return model, done
