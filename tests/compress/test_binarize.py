"""Binary weights: two values per channel, the straight-through gradient, first/last layers, packed size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecomp.compress._layers import weight_layers
from edgecomp.compress.binarize import Binarize, BinarizeSTE, binarize_tensor
from edgecomp.compress.ecz import encode_state_dict
from edgecomp.data import digits
from edgecomp.errors import ConfigError
from edgecomp.zoo import DigitsCNN
from tests.rewrite_helpers import context


def test_binarized_tensor_is_plus_minus_mean_abs_per_channel():
    w = torch.randn(6, 3, 3, 3)
    b = binarize_tensor(w)
    alpha = w.abs().mean(dim=(1, 2, 3))
    for c in range(6):
        assert set(b[c].unique().tolist()) <= {alpha[c].item(), -alpha[c].item()}
        assert torch.equal(torch.sign(b[c]), torch.where(w[c] >= 0, 1.0, -1.0))


def test_straight_through_gradient():
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(4, 10, generator=gen) * 0.8).requires_grad_()
    with torch.no_grad():
        w[0, 0] = 1.5  # beyond the clip: no straight-through gradient there
    g = torch.randn(4, 10, generator=gen)
    (BinarizeSTE(clip=1.0)(w) * g).sum().backward()
    wd = w.detach()
    alpha = wd.abs().mean(1, keepdim=True)
    sign = torch.where(wd >= 0, 1.0, -1.0)
    # d/dw of sum(g * alpha * s): alpha * g where |w| <= 1 (STE), plus the scale's share sum(g*s) * sign(w) / n
    expected = alpha * g * (wd.abs() <= 1) + (g * sign).sum(1, keepdim=True) * sign / wd.shape[1]
    torch.testing.assert_close(w.grad, expected)
    assert w.grad[0, 0] == pytest.approx(float(expected[0, 0]))


@pytest.fixture(scope="module")
def binarized():
    torch.manual_seed(0)
    model = DigitsCNN(width=4).eval()
    original = {n: m.weight.detach().clone() for n, m in weight_layers(model)}
    cfg = Binarize.Config(epochs=2)
    return Binarize().apply(model, cfg, context([1, 1, 8, 8], digits(), teacher=model)), original


def test_binarized_layers_take_exactly_two_values_per_channel(binarized):
    result, _ = binarized
    layers = dict(weight_layers(result.model))
    assert result.metrics["binarized_layers"] == ["features.3", "features.7"]
    for name in ("features.3", "features.7"):
        w = layers[name].weight.detach()
        for row in w.reshape(w.shape[0], -1):
            values = torch.unique(row)
            assert len(values) == 2 and values[1] == -values[0] and values[1] > 0, name
    for name in ("features.0", "classifier"):  # first and last stay in float
        w = layers[name].weight.detach()
        assert len(torch.unique(w)) > 2 * w.shape[0], name


def test_packed_size_is_reported_and_the_compressed_form_packs_bits(binarized):
    result, _ = binarized
    m = result.metrics
    layers = dict(weight_layers(result.model))
    binary = [layers[n].weight for n in ("features.3", "features.7")]
    assert m["binarized_packed_bytes"] == sum((w.numel() + 7) // 8 + 4 * w.shape[0] for w in binary)
    assert m["binarized_fp32_bytes"] == sum(4 * w.numel() for w in binary)
    _, summary = encode_state_dict(result.model.state_dict())
    forms = {t.name: t.kind for t in summary.tensors}
    assert forms["features.3.weight"] == forms["features.7.weight"] == "binary"
    assert m["ecz_bytes"] == summary.bytes
    binary_bytes = sum(t.bytes for t in summary.tensors if t.kind == "binary")
    assert binary_bytes <= m["binarized_packed_bytes"] + 2 * 32  # packed bits + alpha, plus name/shape headers
    assert result.export.compressed_form
    assert any("1 bit per weight" in note for note in result.notes)


def test_first_layer_can_be_binarized_too():
    torch.manual_seed(0)
    model = DigitsCNN(width=4).eval()
    result = Binarize().apply(model, Binarize.Config(keep_first=False, epochs=0), context([1, 1, 8, 8]))
    assert result.metrics["binarized_layers"][0] == "features.0"
    w = result.model.features[0].weight
    assert all(len(torch.unique(r)) == 2 for r in w.reshape(w.shape[0], -1))


def test_nothing_to_binarize_is_a_config_error():
    with pytest.raises(ConfigError, match="no layer"):
        Binarize().apply(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), Binarize.Config(), context([1, 1, 8, 8]))
