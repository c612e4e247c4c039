"""quantize.int8 and friends: calibration, rounding, ONNX QDQ, and an end-to-end int8 build."""

import json

import numpy as np
import pytest
import torch

from edgecomp.cli import main
from edgecomp.compress import _calibration as cal
from edgecomp.compress.base import ExportOptions, Int8Export
from edgecomp.compress.pt2e import HardSigmoidOps, QuantSettings
from edgecomp.compress.quantize import ptq
from edgecomp.compress.recipe import parse_recipe
from edgecomp.errors import ConfigError
from edgecomp.export.onnx import export_onnx
from edgecomp.export.runtime import run_artifact
from edgecomp.finetune import predict
from edgecomp.spec import ModelSpec
from tests.tiny_models import make


def test_stochastic_rounding_is_unbiased_and_nearest_is_not():
    x = torch.full((200_000,), 0.3)
    gen = torch.Generator().manual_seed(0)
    sr = cal.stochastic_round(x, gen)
    assert set(sr.unique().tolist()) == {0.0, 1.0}
    assert abs(sr.mean().item() - 0.3) < 0.005
    assert torch.round(x).mean().item() == 0.0  # round-to-nearest is biased for this input


def test_calibration_methods_clip_heavy_tails_that_minmax_keeps():
    x = np.random.default_rng(0).standard_t(2, size=100_000)  # heavy tails: rare huge values
    lo, hi = cal.compute_range(x, "minmax")
    assert (lo, hi) == (x.min(), x.max())
    for method in ("percentile", "mse", "entropy"):
        lo_m, hi_m = cal.compute_range(x, method)
        assert lo <= lo_m <= 0.0 <= hi_m < 0.9 * hi, method
    counts, edges = np.histogram(x, bins=2048, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    assert cal.affine_error(counts, centers, *cal.compute_range(x, "mse")) < cal.affine_error(counts, centers, lo, hi)


def test_fixed_point_scales_are_powers_of_two():
    assert cal.power_of_two(0.3) == 0.5 and cal.power_of_two(0.25) == 0.25
    assert cal.parse_fixed_point("Q3.4") == (3, 4)
    with pytest.raises(ValueError):
        cal.parse_fixed_point("Q3.3")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="fixed_point"):
        parse_recipe("quantize.int8(fixed_point='Q9.9')")
    with pytest.raises(ConfigError, match="calibratoin"):
        parse_recipe("quantize.int8(calibratoin='mse')")


def test_calibration_data_must_exist(tmp_path):
    from edgecomp.compress.quantize import load_calibration

    with pytest.raises(ConfigError):
        load_calibration(str(tmp_path / "missing.npy"), [1, 3, 8, 8])
    np.save(tmp_path / "bad.npy", np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="shape"):
        load_calibration(str(tmp_path / "bad.npy"), [1, 3, 8, 8])


def test_onnx_qdq_runs_in_onnxruntime_with_integer_kernels(tmp_path):
    import onnx
    import onnxruntime as ort

    model = make("residual")
    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    q = ptq(model, QuantSettings(fixed_point="dynamic"), x, [1, 3, 8, 8], stochastic=True)
    path = tmp_path / "model.onnx"
    artifact = export_onnx(q, ModelSpec(name="r", input_shape=[1, 3, 8, 8]), ExportOptions(dtype="int8"), path)
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert len(weights) == 4  # 3 convs + 1 linear, stored as int8
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}
    assert "QLinearConv" in fused
    out = run_artifact("onnx", path, x, [1, 3, 8, 8])
    ref = predict(q, x)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert artifact.dtype == "int8"


def test_build_quantize_int8_end_to_end(tmp_path):
    out = tmp_path / "bundle"
    assert main(["build", "--recipe", "quantize.int8(calibration='percentile')", "--out", str(out),
                 "--runs", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["accuracy"] - report["stages"][0]["accuracy"] <= 1.0
    arts = {a["format"]: a for a in report["artifacts"]}
    for fmt in ("tflite", "onnx"):
        assert arts[fmt]["dtype"] == "int8"
        p = arts[fmt]["parity"]
        assert p["status"] == "passed" and p["top1_agreement"] >= 99.0 and p["cosine"] >= 0.99
    details = arts["tflite"]["details"]
    assert details["weight_dtypes"] == {"int8": 4}
    assert details["qdq_between_integer_ops"] == 0
    assert details["byte_breakdown"]["int8_weights"] > 0.8 * arts["tflite"]["bytes"]
    # the trimmed int8 graph (no tensor names) still gets a latency prediction, and the ONNX file's (from
    # the float layers at int8, with the input quantize and output dequantize) agrees with it
    pred, pred_onnx = arts["tflite"]["predicted_latency"], arts["onnx"]["predicted_latency"]
    assert pred["p50_ms"] > 0 and pred["source"].startswith("predicted:")
    assert abs(pred_onnx["p50_ms"] / pred["p50_ms"] - 1) < 0.05
    # quantization keeps every weight (bias correction may give a conv without one a bias of its own)
    params = report["stages"][0]["params"]
    assert report["model"]["params"] <= params <= 1.01 * report["model"]["params"]
    assert report["stages"][0]["weight_bytes"] == params  # 1 byte per int8 weight


def test_qat_with_distillation_trains_and_exports_matching_tflite(tmp_path):
    from edgecomp.compress.base import BuildContext
    from edgecomp.compress.quantize import QuantizeInt8
    from edgecomp.export.parity import compare_to_reference
    from edgecomp.export.tflite import export_tflite
    from edgecomp.finetune import accuracy
    from edgecomp.targets import load_profile, load_target
    from edgecomp.zoo import load_zoo_model

    model, spec, data = load_zoo_model("digits_cnn")
    target = load_target("android-arm64")
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=model)
    step = parse_recipe("quantize.int8(qat='always', qat_epochs=1)")[0]
    result = QuantizeInt8().apply(model, step.config, ctx)
    assert result.metrics["method"] == "qat"
    assert accuracy(result.model, *data.arrays("test")) >= accuracy(model, *data.arrays("test")) - 1.0
    artifact = export_tflite(result.model, spec, result.export, tmp_path / "qat.tflite")
    out = run_artifact("tflite", artifact.path, data.arrays("test")[0], spec.input_shape)
    parity = compare_to_reference(predict(result.model, data.arrays("test")[0]), out, quantized=True)
    assert parity.status == "passed", parity


def _cnn_with_dropout() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU6(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 10))
    with torch.no_grad():
        model[5].bias.copy_(torch.linspace(-1.0, 1.0, 10))  # a bias the outputs depend on
    return model.eval()


@pytest.mark.parametrize("strip", [True, False])
def test_dropout_before_a_layer_does_not_mis_scale_its_int8_bias(tmp_path, monkeypatch, strip):
    from edgecomp.compress import pt2e
    from edgecomp.export.tflite import export_tflite
    from edgecomp.export.tflite_inspect import inspect_tflite

    if not strip:  # the check must see what happens without the fix
        monkeypatch.setattr(pt2e, "strip_dropout", lambda model: 0)
    x = np.random.default_rng(0).standard_normal((64, 3, 4, 4)).astype(np.float32)
    q = ptq(_cnn_with_dropout(), QuantSettings(), x, [1, 3, 4, 4])
    path = tmp_path / "model.tflite"
    export_tflite(q, ModelSpec(name="mlp", input_shape=[1, 3, 4, 4]),
                  ExportOptions(dtype="int8", int8=Int8Export(mode="static", io="float")), path)
    out, ref = run_artifact("tflite", path, x, [1, 3, 4, 4]), predict(q, x)
    cos = ((out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)).min()
    mismatches = inspect_tflite(path).bias_scale_mismatches
    if strip:
        assert mismatches == 0 and cos > 0.99
    else:
        assert mismatches >= 1 and cos < 0.99


def test_se_block_with_hard_sigmoid_and_hard_swish_stays_integer(tmp_path):
    """No DEQUANTIZE -> float op -> QUANTIZE island inside the int8 graph, and parity with the reference."""
    from edgecomp.export.tflite import export_tflite
    from edgecomp.export.tflite_inspect import inspect_tflite

    model = make("se")
    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    q = ptq(model, QuantSettings(), x, [1, 3, 8, 8])
    path = tmp_path / "se.tflite"
    export_tflite(q, ModelSpec(name="se", input_shape=[1, 3, 8, 8]),
                  ExportOptions(dtype="int8", int8=Int8Export(mode="static", io="float")), path)
    summary = inspect_tflite(path)
    assert summary.qdq_between_integer_ops == 0
    assert summary.quantize_ops == 1 and summary.dequantize_ops == 1  # only at the float input and output
    out, ref = run_artifact("tflite", path, x, [1, 3, 8, 8]), predict(q, x)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert isinstance(model.squeeze[-1], torch.nn.Hardsigmoid)  # the user's model is not rewritten
    t = torch.linspace(-5, 5, 41)
    assert torch.allclose(HardSigmoidOps()(t), torch.nn.Hardsigmoid()(t))


def test_affine_grid_contains_zero_and_a_constant_operand():
    """A range that excludes 0 (a constant ``x + 3``, a gate in [0.2, 1]) is widened to contain it."""
    for lo, hi in [(3.0, 3.0), (1.0 / 6.0, 1.0 / 6.0), (0.2, 1.0), (-5.0, -1.0)]:
        scale, zero = cal.affine_qparams(lo, hi)
        assert cal.QMIN <= zero <= cal.QMAX
        grid = (np.arange(cal.QMIN, cal.QMAX + 1) - zero) * scale
        assert grid.min() <= min(lo, 0.0) + 1e-6 and grid.max() >= max(hi, 0.0) - 1e-6
        assert np.abs(grid).min() < 1e-9  # 0 is exactly on the grid
    scale, zero = cal.affine_qparams(3.0, 3.0)
    q = min(max(round(3.0 / scale) + zero, cal.QMIN), cal.QMAX)
    assert abs((q - zero) * scale - 3.0) < 1e-6  # was clamped to 255 * 2^-12 = 0.062


class _SqueezeExciteNet(torch.nn.Module):
    """MobileNetV3's block pattern at 8x8: hard-swish, then a squeeze-excite gate through nn.Hardsigmoid."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.Hardswish())
        self.fc1, self.fc2, self.gate = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1), nn.Hardsigmoid()
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.stem(x))
        y = y * self.gate(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return self.head(y.mean((2, 3)))


def test_squeeze_excite_hard_swish_model_keeps_its_accuracy_in_int8():
    """Regression: a constant operand of the hard-sigmoid rewrite (``x + 3``, ``* 1/6``) got a grid that did
    not contain 0, so 3.0 became 0.062 and every gate collapsed (MobileNetV3-style 98.65 % -> 7.41 %)."""
    from edgecomp.data.digits import digits
    from edgecomp.finetune import accuracy

    data = digits()
    x, y = (torch.as_tensor(a) for a in data.arrays("train"))
    torch.manual_seed(0)
    model = _SqueezeExciteNet()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(12):
        for i in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test = data.arrays("test")
    float_acc = accuracy(model, *test)
    assert float_acc > 85.0
    q = ptq(model, QuantSettings(), data.calibration(256, seed=0), [1, 1, 8, 8])
    int8_acc = accuracy(q, *test)
    assert int8_acc >= float_acc - 2.0, (float_acc, int8_acc)  # before the fix: 88.89 -> 7.78
