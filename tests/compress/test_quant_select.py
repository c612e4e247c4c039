"""Selective int8: skip keeps exactly the named layers float; max_drop reverts by sensitivity and stops."""

import numpy as np
import pytest
import torch

from edgecomp.compress import _int8_select as sel
from edgecomp.compress import quant_report as qr
from edgecomp.compress.base import ExportOptions, Int8Export
from edgecomp.compress.pt2e import QuantSettings
from edgecomp.compress.quantize import ptq
from edgecomp.errors import ConfigError, InfeasibleBudgetError
from edgecomp.export import tflite_inspect as ti
from edgecomp.export.tflite import export_tflite
from edgecomp.spec import ModelSpec
from tests.tiny_models import make

X = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)


def _float_convs(path) -> list[tuple[str, list[int]]]:
    """(op, weight shape) of every conv/linear op of a .tflite whose weights are float32."""
    model = ti.load_model(path.read_bytes())
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        name = ti.op_name(model, op)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = sg.tensors[int(op.inputs[1])]
            if ti.tensor_dtype(w) == "float32":
                out.append((name, [int(d) for d in w.shape]))
    return out


@pytest.mark.parametrize(("skip", "islands"), [(["block.0"], 1), (["head.*"], 0), ([r"block\.[03]"], 1)])
def test_skip_keeps_exactly_the_named_layers_float_in_the_tflite(tmp_path, skip, islands):
    model = make("residual")
    names = sel.resolve_skip(model, skip)
    q = ptq(model, QuantSettings(skip=tuple(names)), X, [1, 3, 8, 8])
    path = tmp_path / "m.tflite"
    options = ExportOptions(dtype="int8", int8=Int8Export(skip=names))
    art = export_tflite(q, ModelSpec(name="r", input_shape=[1, 3, 8, 8]), options, path)
    want = sorted([n for n in names if isinstance(model.get_submodule(n), (torch.nn.Conv2d, torch.nn.Linear))])
    floats = _float_convs(path)
    shapes = {n: list(model.get_submodule(n).weight.shape) for n in want}
    assert len(floats) == len(want)
    for n in want:  # litert stores conv weights OHWI, linear weights [out, in]
        s = shapes[n]
        assert any(w[0] == s[0] and int(np.prod(w)) == int(np.prod(s)) for _, w in floats), (n, floats)
    summary = ti.inspect_tflite(path)
    assert summary.qdq_between_integer_ops == 0  # the float layers are intended, not flagged
    assert len(summary.intended_islands) == islands  # a float tail (head.*) is no island: nothing re-quantizes
    assert all("on purpose" in i["reason"] for i in summary.intended_islands)
    assert art.details["intended_float_islands"] == summary.intended_islands


def test_no_skip_leaves_no_float_layer(tmp_path):
    q = ptq(make("residual"), QuantSettings(), X, [1, 3, 8, 8])
    path = tmp_path / "m.tflite"
    export_tflite(q, ModelSpec(name="r", input_shape=[1, 3, 8, 8]), ExportOptions(dtype="int8", int8=Int8Export()), path)
    assert _float_convs(path) == [] and ti.inspect_tflite(path).intended_islands == []


def test_skip_pattern_matching_nothing_names_the_closest_modules():
    with pytest.raises(ConfigError, match="block.0") as info:
        sel.resolve_skip(make("residual"), ["blok.0"])
    assert "Did you mean" in str(info.value) and "named_modules" in info.value.hint


def test_too_little_calibration_data_says_how_many_are_needed():
    with pytest.raises(ConfigError, match="at least 16") as info:
        sel.check_calibration_count(5, 256)
    assert "calibration_samples=5" in info.value.hint
    sel.check_calibration_count(5, 5)  # asked for 5 explicitly: accepted


def test_max_drop_reverts_in_sensitivity_order_and_stops():
    model = make("residual")
    q = ptq(model, QuantSettings(), X, [1, 3, 8, 8])
    order = qr.sensitivity_order(qr.layer_errors(q, X))
    layers = [n for n in order if sel.weight_count(model, n)]
    assert len(layers) >= 3
    built: list[list[str]] = []

    def quantize(skip):
        built.append(list(skip))
        return ptq(model, QuantSettings(skip=tuple(skip)), X, [1, 3, 8, 8])

    def metric(m) -> float:  # the metric recovers once the two most sensitive layers are float
        floats = set(built[-1])
        return 90.0 - 2.0 * len(set(layers[:2]) - floats)

    out, done = sel.revert_until(model, order, [], 90.0, 0.5, quantize, metric, start_metric=86.0)
    assert [r["layer"] for r in done.layers] == layers[:2] and built == [layers[:1], layers[:2]]
    assert done.layers[0]["weight_bytes_added"] == 3 * sel.weight_count(model, layers[0])
    assert isinstance(out, torch.nn.Module)
    with pytest.raises(InfeasibleBudgetError, match="best reached") as info:
        sel.revert_until(model, order, [], 90.0, 0.5, quantize, lambda m: 80.0, start_metric=79.0)
    assert info.value.exit_code == 3


def test_a_reverted_layer_states_its_predicted_latency_cost_on_the_build_profile():
    from edgecomp.targets import load_profile

    profile = load_profile("cortex-a76")
    model = make("residual")
    stem = sel.latency_cost(model, "stem", [1, 3, 8, 8], profile, 4)
    block = sel.latency_cost(model, "block", [1, 3, 8, 8], profile, 4)
    assert stem is not None and block is not None
    assert block > stem > 0  # fp32 conv + a dequantize and a quantize cost more than the int8 conv; two convs more
    assert sel.latency_cost(model, "no.such.layer", [1, 3, 8, 8], profile, 4) is None
    costs = {"stem": 0.5, "block": 0.25}

    def quantize(skip):
        return ptq(model, QuantSettings(skip=tuple(skip)), X, [1, 3, 8, 8])

    _, done = sel.revert_until(model, ["stem", "block"], [], 90.0, 0.5, quantize, lambda m: 90.0, 86.0,
                               latency=costs.get)
    assert done.layers[0]["predicted_ms_added"] == 0.5
    assert sel.cost_text(done.layers[0], "cortex-a76") == "stem (+648 B, +0.500 ms predicted on cortex-a76)"
