"""int8 TFLite files: integer weights, no float islands, float/int8 I/O, trimming, byte breakdown."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.compress.base import ExportOptions, Int8Export
from edgecomp.compress.pt2e import QuantSettings
from edgecomp.compress.quantize import ptq
from edgecomp.export.runtime import TFLiteRunner, run_artifact
from edgecomp.export.tflite import export_tflite
from edgecomp.export.tflite_inspect import inspect_tflite
from edgecomp.export.tflite_rewrite import rewrite_file
from edgecomp.finetune import predict
from edgecomp.spec import ModelSpec

SHAPE = [1, 3, 8, 8]


class ChainedResidual(nn.Module):
    """Two residual blocks in a row (x + f(x), twice), ReLU6 and a depthwise conv, like MobileNetV2."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8)) for _ in range(2))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)) * 3.0


@pytest.fixture(scope="module")
def quantized():
    torch.manual_seed(0)
    model = ChainedResidual().eval()
    for m in model.modules():  # realistic BatchNorm statistics (non-zero folded biases)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = np.random.default_rng(0).standard_normal((64, *SHAPE[1:])).astype(np.float32)
    return ptq(model, QuantSettings(), x, SHAPE), x


@pytest.fixture(scope="module")
def float_io_file(quantized, tmp_path_factory):
    q, _ = quantized
    path = tmp_path_factory.mktemp("tfl") / "model.tflite"
    spec = ModelSpec(name="chained", input_shape=SHAPE)
    artifact = export_tflite(q, spec, ExportOptions(dtype="int8", int8=Int8Export(io="float", trim=True)), path)
    return artifact


def test_conv_and_linear_weights_are_int8_and_no_float_islands(float_io_file):
    s = inspect_tflite(float_io_file.path)
    assert s.weight_dtypes == {"int8": s.ops["CONV_2D"] + s.ops["DEPTHWISE_CONV_2D"] + s.ops["FULLY_CONNECTED"]}
    assert s.ops["ADD"] == 2
    assert s.qdq_between_integer_ops == 0
    assert (s.quantize_ops, s.dequantize_ops) == (1, 1)  # only at the float input and output
    assert s.io_dtypes == {"input0": "float32", "output0": "float32"}
    assert float_io_file.inputs[0].dtype == "float32"


def test_int8_io_has_no_quantize_ops_and_same_outputs(float_io_file, quantized, tmp_path):
    q, x = quantized
    int8_path = tmp_path / "int8io.tflite"
    shutil.copy(float_io_file.path, int8_path)
    rewrite_file(int8_path, io="int8")
    s = inspect_tflite(int8_path)
    assert (s.quantize_ops, s.dequantize_ops) == (0, 0)
    assert s.io_dtypes == {"input0": "int8", "output0": "int8"}
    a = run_artifact("tflite", float_io_file.path, x, SHAPE)
    b = run_artifact("tflite", int8_path, x, SHAPE)  # the runner quantizes inputs itself (ties may differ)
    out_scale = TFLiteRunner(int8_path).out["quantization"][0]
    assert np.abs(a - b).max() <= 3 * out_scale
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95
    ref = predict(q, x)
    cos = (a * ref).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.median(cos) > 0.995 and cos.min() > 0.95 and (a.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_trim_shrinks_file_without_changing_outputs(float_io_file, quantized, tmp_path):
    _, x = quantized
    before = float_io_file.details["bytes_untrimmed"]
    after = inspect_tflite(float_io_file.path)
    assert after.bytes < before
    assert after.breakdown["tensor_names"] < float_io_file.details["byte_breakdown_untrimmed"]["tensor_names"]
    untrimmed = tmp_path / "again.tflite"
    shutil.copy(float_io_file.path, untrimmed)
    rewrite_file(untrimmed, do_trim=True)  # trimming is idempotent and output-preserving
    np.testing.assert_array_equal(run_artifact("tflite", untrimmed, x, SHAPE),
                                  run_artifact("tflite", float_io_file.path, x, SHAPE))


def test_byte_breakdown_sums_to_file_size(float_io_file):
    s = inspect_tflite(float_io_file.path)
    assert sum(s.breakdown.values()) == s.bytes == float_io_file.path.stat().st_size
    assert all(v >= 0 for v in s.breakdown.values())
    params = sum(p.numel() for p in ChainedResidual().parameters() if p.dim() > 1)
    assert s.breakdown["int8_weights"] == params  # one byte per conv/linear weight, stored once
