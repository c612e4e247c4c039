"""Parity of models with several outputs: each output judged by its own rule, the worst deciding, exports that
name and return every output in the model's order, and one broken output seen as that output failing."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgecomp.compress.base import ExportOptions
from edgecomp.export.base import get_format
from edgecomp.export.parity import ATOL, MAX_QUANT_VALUE_ERR, compare_across_machines, compare_to_reference
from edgecomp.export.runtime import run_artifact, run_artifact_outputs
from edgecomp.finetune import predict, predict_all
from edgecomp.model import with_outputs
from edgecomp.spec import ModelSpec
from tests.multihead_fixtures import TwoHeadDigits

NAMES, KINDS = ["logits", "box"], ["logits", "values"]


def _outputs(seed: int = 0, n: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, 10)) * 4).astype(np.float32)
    box = rng.uniform(0.1, 0.9, (n, 4)).astype(np.float32)
    return [logits, box]


def _statuses(parity) -> dict[str, str]:
    return {o.name: o.status for o in parity.outputs}


@pytest.mark.parametrize("quantized", [False, True])
def test_each_output_is_judged_alone_and_the_worst_decides(quantized):
    ref = _outputs()
    same = compare_to_reference(ref, [r.copy() for r in ref], quantized, NAMES, KINDS)
    assert same.status == "passed" and _statuses(same) == {"logits": "passed", "box": "passed"}
    assert same.outputs[0].top1_agreement == 100.0 and same.outputs[1].top1_agreement is None  # box: no argmax

    shift = 0.2 if quantized else 10 * ATOL  # beyond the box's rule, far inside the logits' scale
    bad_box = compare_to_reference(ref, [ref[0], ref[1] + shift], quantized, NAMES, KINDS)
    assert bad_box.status == "failed" and _statuses(bad_box) == {"logits": "passed", "box": "failed"}
    assert "box" in bad_box.note and "logits" not in bad_box.note
    assert bad_box.max_abs_err == pytest.approx(shift, rel=1e-3)  # the worst output's error is reported on top

    swapped = ref[0][:, ::-1].copy()  # every argmax moves
    bad_logits = compare_to_reference(ref, [swapped, ref[1]], quantized, NAMES, KINDS)
    assert _statuses(bad_logits) == {"logits": "failed", "box": "passed"}
    assert bad_logits.top1_agreement < 99


def test_quantized_values_tolerance_scales_with_that_output():
    ref = _outputs()
    scale = float(np.abs(ref[1]).max())
    within = compare_to_reference(ref, [ref[0], ref[1] + 0.5 * MAX_QUANT_VALUE_ERR * scale], True, NAMES, KINDS)
    beyond = compare_to_reference(ref, [ref[0], ref[1] + 2 * MAX_QUANT_VALUE_ERR * scale], True, NAMES, KINDS)
    assert within.status == "passed" and beyond.status == "failed"
    big = [ref[0], ref[1] * 100]  # the same relative error on an output 100x larger passes too
    assert compare_to_reference(big, [big[0], big[1] * 1.01], True, NAMES, KINDS).status == "passed"


def test_missing_output_and_non_finite_output_fail():
    ref = _outputs()
    missing = compare_to_reference(ref, [ref[0]], False, NAMES, KINDS)
    assert missing.status == "failed" and "1 output(s)" in missing.note
    nan_box = ref[1].copy()
    nan_box[3, 2] = np.nan
    p = compare_to_reference(ref, [ref[0], nan_box], False, NAMES, KINDS)
    assert _statuses(p) == {"logits": "passed", "box": "failed"} and "NaN" in p.outputs[1].note
    assert "box failed" in p.summary() and "logits passed" in p.summary()


def test_one_output_keeps_the_single_output_record():
    ref = _outputs()[0]
    as_array = compare_to_reference(ref, ref + 1e-6)
    as_list = compare_to_reference([ref], [ref + 1e-6], names=["logits"], kinds=["logits"])
    assert as_array == as_list and as_array.outputs == [] and as_array.status == "passed"


def test_cross_machine_top1_only_for_outputs_marked_logits():
    box = _outputs()[1]
    assert compare_across_machines(box, box, "int8", 1).top1_agreement is not None  # unmarked: 2-D heuristic
    assert compare_across_machines(box, box, "int8", 1, logits=False).top1_agreement is None
    assert compare_across_machines(box, box + 1e-3, "int8", 1, logits=False).passed


@pytest.fixture(scope="module")
def two_head():
    torch.manual_seed(0)
    model = TwoHeadDigits().eval()
    spec = with_outputs(model, ModelSpec(name="two_head", input_shape=list(TwoHeadDigits.input_shape)))
    x = np.random.default_rng(1).standard_normal((24, 1, 16, 16)).astype(np.float32)
    return model, spec, x


def test_spec_lists_every_output(two_head):
    _, spec, _ = two_head
    assert [(o.name, o.shape, o.kind) for o in spec.outputs] == [("logits", [1, 10], "logits"),
                                                                  ("box", [1, 4], "values")]
    assert spec.output_names() == NAMES and spec.output_kinds() == KINDS


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_exports_return_every_output_in_the_models_order(tmp_path, two_head, fmt):
    model, spec, x = two_head
    artifact = get_format(fmt).export(model, spec, ExportOptions(), tmp_path / get_format(fmt).filename)
    assert [o.shape for o in artifact.outputs] == [[1, 10], [1, 4]]
    if fmt == "onnx":
        assert [o.name for o in artifact.outputs] == NAMES
    outputs = run_artifact_outputs(fmt, artifact.path, x, spec.input_shape)
    reference = predict_all(model, x)
    assert [o.shape for o in outputs] == [(24, 10), (24, 4)]
    parity = compare_to_reference(reference, outputs, False, NAMES, KINDS)
    assert parity.status == "passed" and _statuses(parity) == {"logits": "passed", "box": "passed"}, parity
    np.testing.assert_array_equal(run_artifact(fmt, artifact.path, x, spec.input_shape), outputs[0])
    np.testing.assert_array_equal(predict(model, x), reference[0])  # predict keeps the first output


def test_a_broken_box_head_in_the_onnx_file_fails_only_the_box(tmp_path, two_head):
    model, spec, x = two_head
    artifact = get_format("onnx").export(model, spec, ExportOptions(), tmp_path / "model.onnx")
    graph = onnx.load(str(artifact.path))
    bias = model.locate[0].bias.detach().numpy()
    hits = [init for init in graph.graph.initializer if numpy_helper.to_array(init).shape == bias.shape
            and np.allclose(numpy_helper.to_array(init), bias)]
    assert len(hits) == 1
    hits[0].CopyFrom(numpy_helper.from_array(bias + 1.0, hits[0].name))  # the box head's bias, off by one
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    outputs = run_artifact_outputs("onnx", broken, x, spec.input_shape)
    parity = compare_to_reference(predict_all(model, x), outputs, False, NAMES, KINDS)
    assert parity.status == "failed" and _statuses(parity) == {"logits": "passed", "box": "failed"}


def test_coreml_names_every_output(tmp_path, two_head):
    model, spec, _ = two_head
    artifact = get_format("coreml").export(model, spec, ExportOptions(), tmp_path / get_format("coreml").filename)
    assert [o.name for o in artifact.outputs] == NAMES
