"""Cross-layer equalisation keeps the float function and lowers per-tensor int8 error; bias correction."""

import numpy as np
import torch
from torch import nn

from edgecomp.compress import quant_report as qr
from edgecomp.compress.equalize import correct_bias, equalize, find_pairs
from edgecomp.compress.pt2e import QuantSettings
from edgecomp.compress.quantize import ptq


class Skewed(nn.Module):
    """conv -> BN -> ReLU -> depthwise -> BN -> ReLU -> pointwise whose channel ranges differ 1000x:
    per-tensor int8 weights round the small channels to zero unless the ranges are equalised."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 6, 1)
        spread = torch.logspace(-2, 1, 8)
        with torch.no_grad():
            self.conv1.weight.mul_(spread.reshape(-1, 1, 1, 1))
            self.conv1.bias.mul_(spread)
            self.dw.weight.div_(spread.reshape(-1, 1, 1, 1))
            self.dw.weight.mul_(spread.flip(0).reshape(-1, 1, 1, 1))
            self.pw.weight.div_(spread.flip(0).reshape(1, -1, 1, 1))
        for bn in (self.bn1, self.bn2):  # mild statistics: BatchNorm must not undo the skew
            bn.running_mean.normal_(0, 0.01)
            bn.running_var.uniform_(0.8, 1.2)
            bn.weight.data.uniform_(0.8, 1.2)
        self.eval()

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.dw(x)))
        return self.pw(x)


class SkewedReLU6(Skewed):
    def forward(self, x):
        x = nn.functional.relu6(self.bn1(self.conv1(x)))
        x = nn.functional.relu6(self.bn2(self.dw(x)))
        return self.pw(x)


X = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)


def _output_sqnr(model: nn.Module, reference: nn.Module) -> float:
    q = ptq(model, QuantSettings(per_channel=False), X, [1, 3, 8, 8])
    with torch.no_grad():
        want = reference(torch.as_tensor(X))
        got = q(torch.as_tensor(X))
    return qr.sqnr_db(float((want**2).sum()), float(((want - got) ** 2).sum()))


def test_pairs_are_found_through_batchnorm_and_relu():
    pairs = find_pairs(Skewed(), [1, 3, 8, 8])
    assert [(p.conv1, p.bn, p.act, p.conv2) for p in pairs] == [("conv1", "bn1", "relu", "dw"),
                                                                  ("dw", "bn2", "relu", "pw")]


def test_equalisation_keeps_the_float_outputs_and_lowers_per_tensor_int8_error():
    model = Skewed()
    equalized, pairs = equalize(model, [1, 3, 8, 8], X)
    assert len(pairs) == 2
    with torch.no_grad():
        before, after = model(torch.as_tensor(X)), equalized(torch.as_tensor(X))
    assert (before - after).abs().max().item() < 1e-5
    r = equalized.conv1.weight.detach().abs().reshape(8, -1).amax(1)
    assert r.max() / r.min() < 10  # was 1000x
    plain, cle = _output_sqnr(model, model), _output_sqnr(equalized, model)
    assert cle > plain + 6, (plain, cle)  # at least one bit better


def test_relu6_channels_that_would_clip_are_left_alone():
    model = SkewedReLU6()
    equalized, pairs = equalize(model, [1, 3, 8, 8], X)
    assert {p.act for p in pairs} == {"relu6"}
    with torch.no_grad():
        before, after = model(torch.as_tensor(X)), equalized(torch.as_tensor(X))
    assert (before - after).abs().max().item() < 1e-5  # exact on the calibration data


def test_bias_correction_removes_the_mean_output_error_of_int8_weights():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1)).eval()
    with torch.no_grad():  # per-tensor int8 rounds the small channels' weights badly
        model[0].weight.mul_(torch.logspace(-2, 0, 8).reshape(-1, 1, 1, 1))
    x = X + 1.0  # inputs with a non-zero mean: weight rounding errors shift the outputs' mean
    corrected, n = correct_bias(model, x, per_channel=False)
    assert n == 2
    with torch.no_grad():
        want = model(torch.as_tensor(x))
    mean_err = []
    for m in (model, corrected):
        q = ptq(m, QuantSettings(per_channel=False), x, [1, 3, 8, 8])
        with torch.no_grad():
            mean_err.append((q(torch.as_tensor(x)) - want).mean((0, 2, 3)).abs().mean().item())
    assert mean_err[1] < 0.5 * mean_err[0], mean_err
