"""benchmarks/peers.py: each peer row comes from the peer's own API, and the hard model is what it says it is."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def peers():
    """The benchmark module (it imports its models from benchmarks/ itself)."""
    sys.path.insert(0, str(BENCHMARKS))
    import peers as module

    return module


def _tiny() -> nn.Module:
    """conv -> BN -> ReLU -> depthwise -> BN -> ReLU -> pointwise -> pool -> linear, BN statistics set."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def _tensor_dtypes(path: Path) -> set:
    from ai_edge_litert.interpreter import Interpreter

    return {d["dtype"] for d in Interpreter(model_path=str(path)).get_tensor_details()}


def test_each_peer_row_is_the_peers_own_int8(peers, tmp_path):
    model = _tiny()
    calib = np.random.default_rng(0).normal(size=(16, 3, 32, 32)).astype(np.float32)
    pt2e = peers.litert_pt2e(model, calib, tmp_path / "pt2e.tflite")
    assert np.int8 in _tensor_dtypes(pt2e)
    fp32 = peers.export_tflite_file(model, peers.ExportOptions(dtype="fp32"), tmp_path / "fp32.tflite")
    assert np.int8 not in _tensor_dtypes(fp32)
    aeq = peers.aeq_static(fp32, calib, tmp_path / "aeq.tflite")
    assert np.int8 in _tensor_dtypes(aeq)
    import onnx

    ort = peers.ort_static(peers.fp32_onnx(model, tmp_path / "fp32.onnx"), calib, tmp_path / "ort.onnx")
    ops = {n.op_type for n in onnx.load(str(ort)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_the_hard_models_spread_keeps_the_float_outputs_and_widens_the_depthwise_ranges(peers):
    model = _tiny()
    spread = copy.deepcopy(model)
    assert peers.spread_depthwise_ranges(spread) == 1
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        before, after = model(x), spread(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-5 * before.abs().max().item())

    def folded_range_ratio(m: nn.Module) -> float:  # per-channel ranges of the BN-folded depthwise weights
        dw, bn = m[3], m[4]
        w = dw.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(-1, 1, 1, 1)
        r = w.detach().abs().amax((1, 2, 3))
        return (r.max() / r.min()).item()

    assert folded_range_ratio(spread) > 5 * folded_range_ratio(model)
    relu6 = peers.mobilenetv2_relu()
    assert not any(isinstance(m, nn.ReLU6) for m in relu6.modules())
