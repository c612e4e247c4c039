"""Delegation-aware prediction: an op XNNPACK does not take is costed as TFLite's reference kernel, and the
prediction names it in a warning (int8 HARD_SWISH in ai-edge-litert 2.3, read from LiteRT's interpreter)."""

from dataclasses import replace

import pytest
from torch import nn

from edgecomp.profile.delegation import delegated_from_interpreter, statically_delegated
from edgecomp.profile.microbench import microbench_files
from edgecomp.profile.predict import (
    layers_from_torch,
    predict_from_layers,
    predict_latency,
    read_tflite_layers,
)
from edgecomp.targets import load_profile

HSWISH = microbench_files(["hard_swish"])


def test_litert_leaves_int8_hard_swish_outside_xnnpack():
    layers, dtype = read_tflite_layers(HSWISH[("hard_swish", "int8")])
    assert dtype == "int8"
    outside = [la.kind for la in layers if la.delegated is False]
    assert outside and set(outside) == {"hard_swish"}
    assert all(la.delegated for la in read_tflite_layers(HSWISH[("hard_swish", "fp32")])[0])
    assert not statically_delegated("HARD_SWISH", "int8") and statically_delegated("HARD_SWISH", "fp32")


def test_an_undelegated_op_changes_the_prediction_and_is_named():
    a76 = load_profile("cortex-a76")
    layers, _ = read_tflite_layers(HSWISH[("hard_swish", "int8")])
    pred = predict_from_layers(layers, a76, 4, "int8")
    as_if_delegated = predict_from_layers([replace(la, delegated=True) for la in layers], a76, 4, "int8")
    assert pred.ms > 1.5 * as_if_delegated.ms
    assert [op.bound for op in pred.per_op].count("reference") == 3
    warning = next(w for w in pred.warnings if "not delegated" in w)
    assert "HARD_SWISH x3" in warning and "int8" in warning
    assert not any("not delegated" in w for w in as_if_delegated.warnings)
    assert predict_latency(HSWISH[("hard_swish", "int8")], a76, 4).warnings == pred.warnings


@pytest.mark.parametrize(("dtype", "warned"), [("int8", True), ("fp32", False)])
def test_torch_layers_use_the_delegate_tables(dtype, warned):
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Hardswish(), nn.Conv2d(16, 8, 1))
    pred = predict_from_layers(layers_from_torch(model, (1, 3, 32, 32), dtype), load_profile("cortex-a76"), 4, dtype)
    assert any("HARD_SWISH" in w for w in pred.warnings) == warned


def test_interpreter_answer_must_match_the_graph(tmp_path):
    path = HSWISH[("hard_swish", "int8")]
    n = len(read_tflite_layers(path, delegation=False)[0])
    assert delegated_from_interpreter(path, n + 1) is None  # not this graph's ops: no answer
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    assert delegated_from_interpreter(bad, 3) is None


def test_uncalibrated_profiles_say_so_in_every_prediction():
    layers, _ = read_tflite_layers(HSWISH[("hard_swish", "fp32")])
    prior = predict_from_layers(layers, load_profile("cortex-a55"), 4)
    assert prior.calibration == "uncalibrated prior" and "uncalibrated prior" in prior.warnings[-1]
    assert "uncalibrated prior" in load_profile("cortex-a55").description
