"""Each exporter on tiny models of several topologies, with parity against PyTorch."""

import numpy as np
import pytest
import torch

from edgecomp.compress.base import ExportOptions
from edgecomp.export.base import get_format
from edgecomp.export.parity import compare_to_reference
from edgecomp.export.runtime import run_artifact
from edgecomp.spec import ModelSpec
from tests.tiny_models import MODELS, SHAPES, make


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_runs_and_matches_pytorch(tmp_path, name, fmt):
    model = make(name)
    spec = ModelSpec(name=name, input_shape=SHAPES[name])
    x = np.random.default_rng(1).standard_normal((16, *SHAPES[name][1:])).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    assert np.abs(reference).max() > 1.0  # outputs are O(1): an absolute tolerance alone proves nothing

    artifact = get_format(fmt).export(model, spec, ExportOptions(), tmp_path / get_format(fmt).filename)
    outputs = run_artifact(fmt, artifact.path, x, spec.input_shape)

    parity = compare_to_reference(reference, outputs)
    assert parity.status == "passed", parity
    assert parity.top1_agreement == 100.0
    assert artifact.inputs[0].shape == spec.input_shape
    assert artifact.outputs[0].shape[-1] == 10


@pytest.mark.parametrize("name", ["residual", "se"])
def test_coreml_converts_and_is_not_claimed_runnable_on_linux(tmp_path, name):
    model = make(name)
    spec = ModelSpec(name=name, input_shape=SHAPES[name])
    artifact = get_format("coreml").export(model, spec, ExportOptions(), tmp_path / get_format("coreml").filename)
    assert (tmp_path / "model.mlpackage" / "Manifest.json").is_file()
    assert artifact.inputs[0].shape == spec.input_shape
    assert artifact.runnable is False
    assert "macOS" in artifact.notes[0]


def test_parity_check_can_fail():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((32, 10)).astype(np.float32) * 3
    assert compare_to_reference(reference, reference + 1e-6).status == "passed"
    assert compare_to_reference(reference, reference + 1e-2).status == "failed"
    swapped = reference[:, ::-1].copy()
    result = compare_to_reference(reference, swapped, quantized=True)
    assert result.status == "failed" and result.top1_agreement < 99


def test_unsupported_op_names_the_op_and_format(tmp_path):
    from edgecomp.errors import ExportError

    class Det(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.det(x[:, 0]).unsqueeze(1)

    spec = ModelSpec(name="det", input_shape=[1, 1, 4, 4])
    with pytest.raises(ExportError) as info:
        get_format("tflite").export(Det(), spec, ExportOptions(), tmp_path / "model.tflite")
    assert "det" in info.value.message and "tflite" in info.value.message
    assert "--skip-failed-formats" in info.value.hint
