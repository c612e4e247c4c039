"""End to end: a two-head detection-style model (class logits + box) built from the command line with its own
dataset factory, loss and metric; parity per output in report.json, both outputs in the manifest."""

import json

import numpy as np
import pytest
import torch

from edgecomp.bundle import read_manifest
from edgecomp.cli import main
from edgecomp.errors import ModelLoadError
from edgecomp.model import load_model, with_outputs
from edgecomp.records import BuildReport
from edgecomp.report.console import console_table
from edgecomp.spec import ModelSpec
from tests.conftest import REPO
from tests.multihead_fixtures import TwoHeadDigits, train_two_head

FIXTURES = REPO / "tests" / "multihead_fixtures.py"
MODEL, DATA, METRIC = f"{FIXTURES}:TwoHeadDigits", f"{FIXTURES}:factory", f"{FIXTURES}:iou_metric"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """TwoHeadDigits trained for a few epochs with the factory's loss through edgecomp's fine-tune."""
    path = tmp_path_factory.mktemp("two-head") / "w.pt"
    metric = train_two_head(path)
    assert metric > 40.0, metric  # a fresh initialisation detects ~1 % (class right and IoU > 0.5)
    return path


def _build(weights, out, recipe: str, formats: str) -> BuildReport:
    code = main(["build", MODEL, "--weights", str(weights), "--data", DATA, "--metric", METRIC, "--recipe", recipe,
                 "--target", "android-arm64", "--formats", formats, "--runs", "3", "--no-cache", "--out", str(out)])
    assert code == 0
    return BuildReport.model_validate_json((out / "report.json").read_text())


@pytest.mark.parametrize(("recipe", "formats", "dtype"), [("quantize.int8", "tflite", "int8"), ("", "onnx", "fp32")])
def test_two_head_model_builds_with_parity_per_output(tmp_path, weights, recipe, formats, dtype):
    report = _build(weights, tmp_path / "bundle", recipe, formats)
    assert report.model.metric == "hit@IoU0.5" and report.model.accuracy > 40.0
    (artifact,) = report.artifacts
    assert artifact.dtype == dtype
    parity = artifact.parity
    assert parity.status == "passed" and parity.samples == 360
    assert [(o.name, o.kind, o.status, o.shape) for o in parity.outputs] == [
        ("logits", "logits", "passed", [360, 10]), ("box", "values", "passed", [360, 4])]
    assert parity.outputs[0].top1_agreement >= 99.0 and parity.outputs[1].top1_agreement is None
    # the artifact is scored with the user's metric on the parity inputs, close to the PyTorch model's
    assert artifact.accuracy is not None and abs(artifact.accuracy - report.model.accuracy) < 5.0

    manifest = read_manifest(tmp_path / "bundle")
    assert [(o.name, o.shape, o.kind) for o in manifest.model.outputs] == [("logits", [1, 10], "logits"),
                                                                           ("box", [1, 4], "values")]
    assert [o.shape for o in manifest.files[0].outputs] == [[1, 10], [1, 4]]
    with np.load(tmp_path / "bundle" / "samples.npz") as samples:
        assert samples["y_torch"].shape == (360, 10) and samples["y_torch_1"].shape == (360, 4)
    table = console_table(report)
    assert "logits: passed" in table and "box: passed" in table
    assert "box: passed" in (tmp_path / "bundle" / "report.html").read_text()
    raw = json.loads((tmp_path / "bundle" / "report.json").read_text())
    assert [o["name"] for o in raw["artifacts"][0]["parity"]["outputs"]] == ["logits", "box"]


def test_loading_fills_in_every_output():
    loaded = load_model(MODEL)
    assert loaded.spec.output_names() == ["logits", "box"] and loaded.spec.output_kinds() == ["logits", "values"]

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10], x.flatten(1)[:, :3]

    spec = ModelSpec(name="plain", input_shape=[1, 1, 4, 4])
    assert with_outputs(Plain(), spec).output_names() == ["output_0", "output_1"]
    single = with_outputs(torch.nn.Flatten(), spec)
    assert single.output_names() == ["logits"] and single.outputs[0].shape == [1, 16]


def test_declared_output_names_must_match_the_outputs():
    model = TwoHeadDigits()
    model.output_names = ("logits",)
    with pytest.raises(ModelLoadError, match="returns 2 outputs"):
        with_outputs(model, ModelSpec(name="m", input_shape=[1, 1, 16, 16]))
