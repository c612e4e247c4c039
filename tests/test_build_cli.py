"""End to end: `edgecomp build` of the built-in model for android-arm64 and ios-arm64."""

import json

import pytest

from edgecomp.bundle import Manifest, read_manifest, sha256_of
from edgecomp.cli import main


@pytest.fixture(scope="module")
def android_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("android") / "bundle"
    assert main(["build", "--target", "android-arm64", "--out", str(out), "--runs", "10"]) == 0
    return out


def test_android_bundle_has_models_manifest_and_report(android_bundle):
    names = {p.name for p in android_bundle.iterdir()}
    assert {"model.tflite", "model.onnx", "edgecomp.json", "report.json", "report.html", "samples.npz"} <= names
    manifest = read_manifest(android_bundle)
    assert [f.format for f in manifest.files] == ["tflite", "onnx"]
    for f in manifest.files:
        assert f.bytes == (android_bundle / f.path).stat().st_size
        assert f.sha256 == sha256_of(android_bundle / f.path)
    assert manifest.model.labels == [str(i) for i in range(10)]
    assert manifest.model.normalization is not None


def test_android_report_records_parity_latency_and_accuracy(android_bundle):
    report = json.loads((android_bundle / "report.json").read_text())
    assert report["model"]["accuracy"] > 95
    assert report["model"]["params"] > 0 and report["model"]["macs"] > 0
    assert report["target"] == "android-arm64"
    for artifact in report["artifacts"]:
        assert artifact["parity"]["status"] == "passed"
        assert artifact["parity"]["max_abs_err"] < 1e-3
        assert artifact["parity"]["top1_agreement"] == 100.0
        assert artifact["latency"]["source"] == "measured:host"
        assert artifact["latency"]["p50_ms"] > 0 and artifact["latency"]["p90_ms"] >= artifact["latency"]["p50_ms"]
        assert abs(artifact["accuracy"] - report["model"]["accuracy"]) < 0.5


def test_ios_bundle_converts_coreml_and_says_parity_was_not_run(tmp_path):
    out = tmp_path / "ios"
    # no cache and no stored plan: the bundle takes the planner's own .mlpackage export (a folder, not a file)
    assert main(["build", "--target", "ios-arm64", "--out", str(out), "--runs", "5", "--no-cache",
                 "--fresh-search"]) == 0
    assert (out / "model.mlpackage").is_dir()
    assert (out / "model.mlpackage" / "Manifest.json").is_file()
    report = json.loads((out / "report.json").read_text())
    (coreml,) = report["artifacts"]
    assert coreml["parity"]["status"] == "not-run"
    assert "macOS" in coreml["parity"]["note"]
    assert coreml["latency"] is None
    Manifest.model_validate_json((out / "edgecomp.json").read_text())


def test_targets_command_lists_and_shows(capsys):
    assert main(["targets"]) == 0
    listing = capsys.readouterr().out
    for name in ("android-arm64", "ios-arm64", "linux-arm64", "host"):
        assert name in listing
    assert main(["targets", "show", "ios-arm64"]) == 0
    assert "runtime: coreml" in capsys.readouterr().out
