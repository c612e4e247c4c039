"""Physical channel removal (edgecomp.compress.channels) on residual, concat, depthwise and MLP topologies.

Each test masks channels of the original by hand (zeroing activations with forward hooks, independent of
torch-pruning's bookkeeping) and checks that the physically pruned model computes exactly the same.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgecomp.compress.channels import ChannelMasker, channel_groups, remove_channels, split_state
from edgecomp.errors import ConfigError
from edgecomp.model import count_params

EXAMPLE = torch.zeros(1, 1, 8, 8)


def _randomise_bn(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))
    return model.eval()


class Residual(nn.Module):
    """Stem conv, one residual block (conv-bn + identity), ReLU, pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv, self.bn, self.relu = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.relu(self.bn(self.conv(x)) + x).mean((2, 3)))


class Concat(nn.Module):
    """Two conv branches concatenated along channels, a 1x1 conv, pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.ra = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()
        self.b, self.rb = nn.Conv2d(1, 6, 3, padding=1), nn.ReLU()
        self.c, self.rc = nn.Conv2d(10, 8, 1), nn.ReLU()
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.ra(self.a(x)), self.rb(self.b(x))], 1)
        return self.head(self.rc(self.c(z)).mean((2, 3)))


class Depthwise(nn.Module):
    """Conv-bn-relu, depthwise conv-bn-relu, pointwise conv-relu, pooling, MLP head (hidden linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.dw, self.b2, self.r2 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU()
        self.pw, self.r3 = nn.Conv2d(8, 12, 1), nn.ReLU()
        self.fc, self.r4 = nn.Linear(12, 16), nn.ReLU()
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r2(self.b2(self.dw(self.r1(self.b1(self.c1(x))))))
        x = self.r3(self.pw(x)).mean((2, 3))
        return self.head(self.r4(self.fc(x)))


def _hand_masked(model: nn.Module, zero: dict[str, list[int]], x: torch.Tensor) -> torch.Tensor:
    """Outputs of ``model`` with the listed channels of the listed activation modules set to zero."""
    handles = []
    modules = dict(model.named_modules())
    for name, chans in zero.items():
        def hook(_m, _i, out, chans=chans):
            out = out.clone()
            out[:, chans] = 0
            return out
        handles.append(modules[name].register_forward_hook(hook))
    with torch.no_grad():
        y = model(x)
    for h in handles:
        h.remove()
    return y


def _prune(model: nn.Module, remove: dict[str, list[int]]):
    pruned = copy.deepcopy(model)
    _, groups, outputs = channel_groups(pruned, EXAMPLE)
    result = remove_channels(pruned, EXAMPLE, groups, remove)
    return result.model.eval(), result, groups, outputs


X = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_residual_removal_equals_masked_original():
    model = _randomise_bn(Residual())
    pruned, result, groups, outputs = _prune(model, {"stem.0": [1, 3]})
    assert outputs == ["head"] and [g.name for g in groups] == ["stem.0"]  # conv is coupled to the stem by +
    assert pruned.stem[0].out_channels == 6 and pruned.conv.out_channels == 6 and pruned.conv.in_channels == 6
    assert pruned.head.in_features == 6 and pruned.head.out_features == 10
    expected = _hand_masked(model, {"stem.2": [1, 3], "relu": [1, 3]}, X)
    torch.testing.assert_close(pruned(X), expected, atol=1e-5, rtol=1e-5)
    assert result.kept == {"stem.0": 6}


def test_concat_removal_maps_the_right_slice():
    model = Concat().eval()
    pruned, _, groups, _ = _prune(model, {"b": [0, 2], "a": [3]})
    assert sorted(g.name for g in groups) == ["a", "b", "c"]
    assert pruned.c.in_channels == 7 and pruned.b.out_channels == 4 and pruned.a.out_channels == 3
    expected = _hand_masked(model, {"rb": [0, 2], "ra": [3]}, X)
    torch.testing.assert_close(pruned(X), expected, atol=1e-5, rtol=1e-5)


def test_depthwise_and_linear_removal():
    model = _randomise_bn(Depthwise())
    pruned, _, groups, _ = _prune(model, {"c1": [2, 5], "pw": [0], "fc": [1, 4, 9]})
    assert "dw" not in {g.name for g in groups}  # the depthwise conv is coupled to c1
    assert pruned.dw.out_channels == 6 and pruned.dw.groups == 6 and pruned.pw.in_channels == 6
    assert pruned.fc.out_features == 13 and pruned.head.in_features == 13
    expected = _hand_masked(model, {"r2": [2, 5], "r3": [0], "r4": [1, 4, 9]}, X)
    torch.testing.assert_close(pruned(X), expected, atol=1e-5, rtol=1e-5)
    assert count_params(pruned) < count_params(model)


def test_masker_equals_hand_mask_and_full_group_keeps_one_zeroed_channel():
    model = _randomise_bn(Depthwise())
    _, groups, _ = channel_groups(model, EXAMPLE)
    sizes = {g.name: g.size for g in groups}
    state = torch.ones(sum(sizes.values()))
    offset = {}
    pos = 0
    for g in groups:
        offset[g.name] = pos
        pos += g.size
    state[offset["pw"]: offset["pw"] + sizes["pw"]] = 0  # the whole pointwise layer off
    with ChannelMasker(model, groups) as masker:
        masker.set(split_state(state, groups))
        with torch.no_grad():
            masked_out = model(X)
    expected = _hand_masked(model, {"r3": list(range(12))}, X)
    torch.testing.assert_close(masked_out, expected, atol=1e-5, rtol=1e-5)
    pruned, _, _, _ = _prune(model, {"pw": list(range(12))})
    assert pruned.pw.out_channels == 1
    torch.testing.assert_close(pruned(X), expected, atol=1e-5, rtol=1e-5)


def test_classifier_outputs_are_never_a_group_and_protect_works():
    model = Depthwise().eval()
    _, groups, outputs = channel_groups(model, EXAMPLE, protect=["pw"])
    names = {g.name for g in groups}
    assert outputs == ["head"] and "head" not in names and "pw" not in names and "fc" in names


def test_unknown_group_is_a_config_error():
    model = Concat().eval()
    _, groups, _ = channel_groups(model, EXAMPLE)
    with pytest.raises(ConfigError, match="no prunable channel group"):
        remove_channels(model, EXAMPLE, groups, {"head": [0]})


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle between two convs: torch-pruning tracks the permutation wrongly."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(torch.relu(self.c2(x)).mean((2, 3)))


def test_a_group_torch_pruning_mis_tracks_is_rolled_back_not_miscompiled():
    model = Shuffle().eval()
    pruned, result, _, _ = _prune(model, {"c1": [0, 1, 2, 3], "c2": [5]})
    assert "c1" in result.skipped and "changed the network's outputs" in result.skipped["c1"]
    assert pruned.c1.out_channels == 8 and pruned.c2.out_channels == 7  # c1 left whole, c2 pruned
    expected = _hand_masked(model, {}, X)
    with torch.no_grad():
        model.c2.weight[5] = 0
        model.c2.bias[5] = 0
    torch.testing.assert_close(pruned(X), model(X), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected, model(X))
