"""Whole-build reuse: the key misses on any change of an input, only file-identified builds are reused, and a
restored bundle is the kept one, checked, with a report that says which build it reuses."""

from __future__ import annotations

import json

import pytest

from edgecomp import build_reuse
from edgecomp.build_options import BuildOptions
from edgecomp.bundle import sha256_of
from edgecomp.records import ArtifactRecord, BuildReport, ModelRecord
from edgecomp.targets import Budgets
from edgecomp.timings import Phase


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Caches of this test's own, turned on, with a stand-in for the built-in model's cached weights."""
    monkeypatch.delenv("EDGECOMP_NO_CACHE", raising=False)
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGECOMP_ARTIFACT_CACHE_DIR", str(tmp_path / "artifacts"))
    weights = tmp_path / "cache" / "zoo" / "digits_cnn-v1.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"trained weights")
    return weights


def test_key_is_stable_and_changes_with_any_input(caches, monkeypatch, tmp_path):
    key = lambda model=None, target="android-arm64", **o: build_reuse.reuse_key(model, target, BuildOptions(**o))
    base = key()
    assert base is not None and key(out="elsewhere", force=True) == base  # where it goes does not count
    model_file = tmp_path / "net.pt2"
    model_file.write_bytes(b"one")
    others = {
        "target": key(target="ios-arm64"), "hardware": key(hardware="cortex-a55"), "runs": key(runs=7),
        "budgets": key(budgets=Budgets(size_mb=1)), "recipe": key(recipe="quantize.fp16"), "seed": key(seed=1),
        "formats": key(formats=["onnx"]), "the built-in model named": key(model="digits_cnn"),
        "a model file": key(model=str(model_file)),
    }
    model_file.write_bytes(b"two")
    others["the model file's bytes"] = key(model=str(model_file))
    monkeypatch.setenv("EDGECOMP_USER_SETTING", "1")
    others["an EDGECOMP_ variable"] = key()
    monkeypatch.delenv("EDGECOMP_USER_SETTING")
    caches.write_bytes(b"retrained weights")
    others["the built-in model's weights"] = key()
    caches.write_bytes(b"trained weights")
    for name, value in (("source_digest", "edited"), ("installed_digest", "upgraded"),
                        ("machine_identity", {"cpu": "another"})):
        with monkeypatch.context() as m:
            m.setattr(build_reuse, name, lambda v=value: v)
            others[name] = key()
    for what, other in others.items():
        assert other is not None and other != base, f"a change of {what} did not change the key"
    assert len(set(others.values())) == len(others)
    assert key() == base


def test_builds_that_code_or_data_decide_or_that_opt_out_are_never_reused(caches, monkeypatch, tmp_path):
    key = lambda model=None, **o: build_reuse.reuse_key(model, "android-arm64", BuildOptions(**o))
    assert key(model="benchmarks/mobilenetv2.py:MobileNetV2") is None  # a factory is code
    assert key(data="digits.npz") is None and key(weights="w.pt") is None and key(metric="pkg.mod:fn") is None
    assert key(cache=False) is None and key(reuse_plans=False) is None
    assert key(model=str(tmp_path / "missing.pt2")) is None
    monkeypatch.setenv("EDGECOMP_NO_CACHE", "1")
    assert key() is None
    monkeypatch.delenv("EDGECOMP_NO_CACHE")
    caches.unlink()  # not trained yet: the build must train it
    assert key() is None


def _kept_build(tmp_path) -> tuple[str, BuildReport]:
    bundle = tmp_path / "first"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"onnx bytes")
    report = BuildReport(edgecomp_version="0", created="2026-01-02T03:04:05+00:00", target="android-arm64",
                         hardware="cortex-a76", bundle=str(bundle),
                         model=ModelRecord(name="digits_cnn", source="built-in:digits_cnn", params=1, macs=1),
                         artifacts=[ArtifactRecord(format="onnx", path="model.onnx", bytes=10,
                                                   measured_at="2026-01-01T00:00:00+00:00")])
    (bundle / "report.json").write_text(report.model_dump_json())
    build_reuse.keep("build-k", report)
    return "build-k", report


def test_a_kept_build_is_restored_whole_and_its_report_says_which_build_it_reuses(caches, tmp_path):
    key, first = _kept_build(tmp_path)
    out = tmp_path / "again"
    report = build_reuse.restore(key, out, phases=[Phase(name="reuse:key", seconds=0.25)])
    assert report is not None and report.bundle == str(out)
    assert sha256_of(out / "model.onnx") == sha256_of(tmp_path / "first" / "model.onnx")
    assert report.reused_from == first.created and report.created != first.created
    assert report.artifacts[0].cached and report.artifacts[0].measured_at == first.artifacts[0].measured_at
    assert [p.name for p in report.phases] == ["reuse:key", "reuse:restore"] and report.phases[0].seconds == 0.25
    assert json.loads((out / "report.json").read_text())["reused_from"] == first.created
    assert f"identical to the build of {first.created}" in (out / "report.html").read_text()
    assert build_reuse.restore("build-other", tmp_path / "nothing") is None
    assert not (tmp_path / "nothing").exists()


def test_a_corrupted_kept_build_is_a_miss_that_leaves_nothing_behind(caches, tmp_path):
    key, _ = _kept_build(tmp_path)
    kept = next((tmp_path / "artifacts").glob(f"{key}/files/model.onnx"))
    kept.write_bytes(b"tampered!!")
    assert build_reuse.restore(key, tmp_path / "again") is None
    assert not (tmp_path / "again").exists()
    assert not (tmp_path / "artifacts" / key).exists()  # discarded: the next build runs and keeps a good one


def test_a_factory_model_is_reused_after_loading_and_a_changed_weight_builds_again(tmp_path, monkeypatch):
    from edgecomp.build import build

    monkeypatch.delenv("EDGECOMP_NO_CACHE", raising=False)
    monkeypatch.setenv("EDGECOMP_ARTIFACT_CACHE_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path / "cache"))
    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef net():\n    torch.manual_seed(0)\n"
                       "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))\n")
    opts = lambda name: BuildOptions(out=tmp_path / name, recipe="", formats=["onnx"], runs=2, warmup=1,
                                     input_shape=[1, 16])
    first = build(f"{factory}:net", "android-arm64", opts("first"))
    assert first.reused_from is None
    again = build(f"{factory}:net", "android-arm64", opts("again"))
    assert again.reused_from == first.created
    assert [p.name for p in again.phases] == ["load", "reuse:key", "reuse:restore"]
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (tmp_path / "first" / "model.onnx").read_bytes()
    factory.write_text(factory.read_text().replace("manual_seed(0)", "manual_seed(1)"))
    changed = build(f"{factory}:net", "android-arm64", opts("changed"))
    assert changed.reused_from is None and "export:onnx" in [p.name for p in changed.phases]
