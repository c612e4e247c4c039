"""ARM64 verification: the comparison rules (fast), bundle and userland errors (fast), and the real check
of the default model's fp32 and int8 files under qemu-user ARM64 emulation (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgecomp.bundle import SAMPLES_NAME, FileEntry, Manifest, sha256_of, write_json
from edgecomp.errors import ConfigError, ParityError
from edgecomp.export.parity import ATOL, RTOL, compare_across_machines
from edgecomp.verify import userland as ul
from tests.bundle_helpers import fake_bundle

# --------------------------------------------------------------------------------------------- fast


def _logits(n: int = 400, classes: int = 10, seed: int = 0) -> np.ndarray:
    """O(1) logits with a clear winner per row, like a trained classifier's."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1, (n, classes)).astype(np.float32)
    y[np.arange(n), rng.integers(0, classes, n)] += 3.0
    return y


def test_fp32_rule_accepts_rounding_noise_and_rejects_a_real_difference():
    host = _logits()
    tol = ATOL + RTOL * float(np.abs(host).max())
    noisy = host + np.float32(tol / 4) * np.sign(np.random.default_rng(1).normal(size=host.shape)).astype(np.float32)
    assert compare_across_machines(host, noisy, "fp32").passed
    perturbed = host.copy()
    perturbed[7, 3] += np.float32(3 * tol)  # one element off by 3x the tolerance
    result = compare_across_machines(host, perturbed, "fp32")
    assert not result.passed
    assert result.max_abs_err == pytest.approx(3 * tol, rel=1e-3)
    assert not compare_across_machines(host, np.where(host > 2, np.nan, host), "fp32").passed


def test_fp32_tolerance_scales_with_the_outputs():
    host = _logits() * 100  # large outputs: the same relative error must still pass
    assert compare_across_machines(host, host * (1 + 5e-4), "fp32").passed
    assert not compare_across_machines(host, host * (1 + 5e-3), "fp32").passed


def test_int8_rule_needs_top1_agreement_and_cosine():
    host = _logits()
    assert compare_across_machines(host, host + 0.05, "int8").passed  # rounding-like shift keeps classes
    flipped = host.copy()
    rows = np.arange(8)  # 2% of the samples change their top-1 class
    flipped[rows] = np.roll(host[rows], 1, axis=1)
    result = compare_across_machines(host, flipped, "int8")
    assert result.top1_agreement == pytest.approx(0.98)
    assert not result.passed
    noise = np.random.default_rng(2).normal(0, 1.5, host.shape).astype(np.float32)
    assert not compare_across_machines(host, host + noise, "int8").passed  # cosine falls well under 0.99
    assert compare_across_machines(host, host, "int8").bit_exact


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        compare_across_machines(np.zeros((4, 10)), np.zeros((4, 11)), "fp32")


def test_missing_userland_names_the_setup_command(tmp_path):
    with pytest.raises(ul.EmulationError) as info:
        ul.load_userland(tmp_path / "nothing-here")
    assert "no ARM64 userland" in info.value.message
    assert ul.SETUP_COMMAND in info.value.hint


def test_bundle_errors_are_clear(tmp_path):
    from edgecomp.verify.arm64 import verify_bundle

    with pytest.raises(ConfigError, match="does not exist"):
        verify_bundle(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no samples.npz"):
        verify_bundle(fake_bundle(tmp_path / "b1", samples=False))
    changed = fake_bundle(tmp_path / "b2")
    (changed / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="sha256"):
        verify_bundle(changed)
    with pytest.raises(ConfigError, match="unknown architecture"):
        verify_bundle(fake_bundle(tmp_path / "b3"), arch="riscv64")


def test_cpu_specs_are_checked():
    assert ul.check_cpu("cortex-a76") == "cortex-a76"
    assert ul.check_cpu("max,sme=off,sve=off") == "max"
    with pytest.raises(ul.EmulationError, match="cortex-a76"):
        ul.check_cpu("cortex-a67")
    with pytest.raises(ul.EmulationError, match="not a qemu CPU spec"):
        ul.check_cpu("max,sme=maybe")


def _matmul_onnx(path: Path, w: np.ndarray, batch: int | str) -> None:
    """A one-MatMul ONNX classifier on 1x8x8 inputs with a fixed (int) or dynamic (str) batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, w.shape[1]])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("batch", [4, "n"])
def test_worker_runs_fixed_and_dynamic_batches_on_the_host(tmp_path, batch):
    from edgecomp.verify import worker

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (64, 10)).astype(np.float32)
    x = rng.normal(0, 1, (10, 1, 8, 8)).astype(np.float32)  # 10 samples: the fixed batch of 4 needs padding
    _matmul_onnx(tmp_path / "m.onnx", w, batch)
    np.save(tmp_path / "x.npy", x)
    meta = worker.run_request({"inputs": str(tmp_path / "x.npy"), "out": str(tmp_path / "o.npz"),
                               "meta": str(tmp_path / "m.json"), "models": [
                                   {"path": str(tmp_path / "m.onnx"), "format": "onnx"},
                                   {"path": str(tmp_path / "missing.tflite"), "format": "tflite"}]})
    assert meta["models"][0]["ok"] and meta["models"][0]["input"]["batch"] == (4 if batch == 4 else 10)
    assert not meta["models"][1]["ok"]  # one bad file is reported, the others still run
    with np.load(tmp_path / "o.npz") as out:
        np.testing.assert_allclose(out["m0_o0"], x.reshape(10, 64) @ w, rtol=1e-5, atol=1e-5)


def test_worker_quantizes_like_tflite_and_adapts_the_layout():
    from edgecomp.verify import worker

    q = worker._quantize(np.array([-1.0, -0.05, 0.0, 0.05, 0.149, 20.0, -20.0], np.float32), np.int8, (0.1, -3))
    np.testing.assert_array_equal(q, np.array([-13, -3, -3, -3, -2, 127, -128], np.int8))
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert worker._adapt_layout(x, [1, 3, 4, 5]) is x
    np.testing.assert_array_equal(worker._adapt_layout(x, [1, 4, 5, 3]), x.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="do not fit"):
        worker._adapt_layout(x, [1, 3, 5, 4])


def test_cli_without_a_bundle_exits_2(capsys):
    from edgecomp.cli import main

    assert main(["verify"]) == 2
    assert "--setup-arm64" in capsys.readouterr().err


def test_cli_reports_a_missing_userland(tmp_path, capsys, monkeypatch):
    from edgecomp.cli import main

    monkeypatch.setenv("EDGECOMP_ARM64_ROOT", str(tmp_path / "empty"))
    assert main(["verify", str(fake_bundle(tmp_path / "b")), "--arch", "arm64"]) == 2
    err = capsys.readouterr().err
    assert "no ARM64 userland" in err and ul.SETUP_COMMAND in err


def test_verify_opens_only_files_inside_the_bundle(tmp_path):
    from edgecomp.verify.arm64 import verify_bundle

    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"not really onnx")  # the same bytes, so the sha256 in the manifest matches
    linked = fake_bundle(tmp_path / "b1")
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(outside)
    with pytest.raises(ConfigError, match="outside that folder"):
        verify_bundle(linked)
    samples = fake_bundle(tmp_path / "b2")
    (samples / SAMPLES_NAME).rename(tmp_path / SAMPLES_NAME)
    (samples / SAMPLES_NAME).symlink_to(tmp_path / SAMPLES_NAME)
    with pytest.raises(ConfigError, match="outside that folder"):
        verify_bundle(samples)


def test_cli_refuses_a_folder_as_the_report_file_before_running(tmp_path, capsys, monkeypatch):
    from edgecomp.cli import main
    from edgecomp.verify import arm64

    monkeypatch.setattr(arm64, "verify_bundle", lambda *a, **k: pytest.fail("the check started"))
    assert main(["verify", str(fake_bundle(tmp_path / "b")), "--out", str(tmp_path)]) == 2
    assert f"error: --out {tmp_path} is a folder" in capsys.readouterr().err


def _project(folder: Path) -> dict[str, bytes]:
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.c").write_bytes(b"int main() {}")
    (folder / "README").write_bytes(b"my project")
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _fake_assemble(stage: Path, qemu: Path) -> dict:
    (stage / "sysroot").mkdir()
    return {"layout": ul.LAYOUT_VERSION, "python": "3.11"}


def test_setup_refuses_a_root_that_is_not_a_userland_before_any_work(tmp_path, monkeypatch, capsys):
    from edgecomp.cli import main

    root = tmp_path / "project"
    before = _project(root)
    monkeypatch.setattr(ul, "ensure_qemu", lambda: pytest.fail("the setup started"))
    assert main(["verify", "--setup-arm64", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"error: --root {root} is a folder that edgecomp did not write (no {ul.MARKER}" in err
    assert "--force" in err
    assert {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_setup_with_force_replaces_the_folder_whole(tmp_path, monkeypatch):
    root = tmp_path / "project"
    _project(root)
    monkeypatch.setattr(ul, "ensure_qemu", lambda: Path("/bin/true"))
    monkeypatch.setattr(ul, "_assemble", _fake_assemble)
    info = ul.setup_userland(root, force=True)
    assert not info["skipped"] and sorted(p.name for p in root.iterdir()) == ["sysroot", ul.MARKER]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no staging or old copy left
    ul.setup_userland(root, force=True)  # a userland (it has the marker) is replaced without question
    assert json.loads((root / ul.MARKER).read_text())["layout"] == ul.LAYOUT_VERSION


def test_wheel_members_cannot_leave_the_site_folder(tmp_path):
    import zipfile

    site = tmp_path / "stage" / "site"
    good = tmp_path / "good.whl"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("numpy/__init__.py", "x = 1")
    ul.unpack_wheel(good, site)
    assert (site / "numpy" / "__init__.py").read_text() == "x = 1"
    for name in ("../evil.py", "numpy/../../../evil.py", "/tmp/evil.py"):
        bad = tmp_path / "bad.whl"
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("numpy/core.py", "y = 2")
            z.writestr(name, "import os")
        with pytest.raises(ul.EmulationError, match="outside that folder"):
            ul.unpack_wheel(bad, site)
    assert sorted(p.name for p in tmp_path.rglob("*evil*")) == []
    assert not (site / "numpy" / "core.py").exists()  # nothing of a bad wheel is unpacked


# --------------------------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def userland():
    """The ARM64 userland, set up here if missing; skip only if it is missing and cannot be set up."""
    try:
        return ul.load_userland()
    except ul.EmulationError:
        pass
    try:
        ul.setup_userland()
    except ul.EmulationError as exc:
        pytest.skip(f"ARM64 userland missing and cannot be set up here: {exc.message}")
    return ul.load_userland()


def _build(target_dir: Path, *extra: str) -> Path:
    """`edgecomp build` of the default model for android-arm64 into ``target_dir``."""
    cmd = [sys.executable, "-m", "edgecomp", "build", "--target", "android-arm64", "--out", str(target_dir),
           "--runs", "2", *extra]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"edgecomp build {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    return target_dir


def _int8_recipe_available() -> bool:
    from edgecomp.compress.base import stage_names

    return "quantize.int8" in stage_names()


def _int8_bundle_from(fp32: Path, dest: Path) -> Path:
    """The default model quantized to int8 with PT2E (per-channel symmetric) and converted by litert-torch.

    Stand-in for `edgecomp build --recipe quantize.int8` until that recipe exists; calibrated on the
    digits training split, run on the fp32 bundle's samples.
    """
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgecomp.export.tflite import tflite_io
    from edgecomp.zoo import load_zoo_model

    model, spec, data = load_zoo_model()
    example = (torch.zeros(spec.input_shape),)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model.eval(), example).module(), quantizer)
    with torch.no_grad():
        for row in torch.from_numpy(np.asarray(data.arrays("train")[0][:256], np.float32)).split(1):
            prepared(row)
    quantized = convert_pt2e(prepared, fold_quantize=False)
    dest.mkdir(parents=True)
    path = dest / "model.tflite"
    litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    shutil.copy(fp32 / SAMPLES_NAME, dest / SAMPLES_NAME)
    inputs, outputs = tflite_io(path)
    manifest = json.loads((fp32 / "edgecomp.json").read_text())
    entry = FileEntry(format="tflite", path="model.tflite", bytes=path.stat().st_size, sha256=sha256_of(path),
                      dtype="int8", inputs=inputs, outputs=outputs)
    write_json(dest / "edgecomp.json", Manifest(**{**manifest, "files": [entry.model_dump()]}))
    return dest


@pytest.mark.slow
def test_default_model_fp32_and_int8_compute_the_same_on_arm64(userland, tmp_path_factory):
    from edgecomp.verify.arm64 import format_table, require_passed, verify_bundle

    root = tmp_path_factory.mktemp("arm64")
    fp32 = _build(root / "fp32")
    int8 = None
    if _int8_recipe_available():
        try:
            int8 = _build(root / "int8", "--recipe", "quantize.int8", "--skip-failed-formats")
        except RuntimeError as exc:  # the recipe is young; the ARM64 check itself must still run on int8
            warnings.warn(f"int8 via `edgecomp build --recipe quantize.int8` failed; using PT2E directly: {exc}",
                          stacklevel=1)
    if int8 is None:
        int8 = _int8_bundle_from(fp32, root / "int8b")

    reports = {}
    for name, bundle in (("fp32", fp32), ("int8", int8)):
        report = verify_bundle(bundle, root=userland.root)
        print(format_table(report))
        reports[name] = report
        assert report.emulated["machine"] == "aarch64"
        assert "asimddp" in report.emulated["cpu_features"]  # the dot-product int8 kernels are reachable
        assert report.samples >= 100
        require_passed(report)

    fp32_files = {a.format: a for a in reports["fp32"].artifacts}
    assert set(fp32_files) == {"tflite", "onnx"}
    for artifact in fp32_files.values():
        out = artifact.outputs[0]
        assert out.max_abs_err <= out.tolerance
    int8_tflite = next(a for a in reports["int8"].artifacts if a.format == "tflite")
    assert int8_tflite.dtype == "int8"
    assert int8_tflite.outputs[0].top1_agreement >= 0.99
    assert int8_tflite.outputs[0].cosine_mean >= 0.99


@pytest.mark.slow
def test_a_file_that_differs_fails_the_check(userland, tmp_path, monkeypatch):
    """End to end through the emulator: an artifact whose ARM64 outputs are perturbed must be reported."""
    from edgecomp.verify import arm64

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (64, 10)).astype(np.float32)
    bundle = fake_bundle(tmp_path / "b", samples=False)
    _matmul_onnx(bundle / "model.onnx", w, "n")
    manifest = Manifest.model_validate_json((bundle / "edgecomp.json").read_text())
    entry = manifest.files[0].model_copy(update={"sha256": sha256_of(bundle / "model.onnx")})
    write_json(bundle / "edgecomp.json", manifest.model_copy(update={"files": [entry]}))
    np.savez(bundle / SAMPLES_NAME, x=rng.normal(0, 1, (32, 1, 8, 8)).astype(np.float32))

    assert arm64.verify_bundle(bundle, root=userland.root).passed

    real_run = ul.Userland.run

    def perturbed_run(self, *args, **kwargs):  # run the real emulator, then corrupt one output value
        proc = real_run(self, *args, **kwargs)
        request = json.loads(Path(args[1]).read_text())
        with np.load(request["out"]) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["m0_o0"][3, 2] += 0.5
        np.savez(request["out"], **arrays)
        return proc

    monkeypatch.setattr(ul.Userland, "run", perturbed_run)
    report = arm64.verify_bundle(bundle, root=userland.root)
    assert not report.passed
    with pytest.raises(ParityError, match="model.onnx"):
        arm64.require_passed(report)


def test_setup_refuses_clearly_without_qemu_and_root(tmp_path, monkeypatch):
    monkeypatch.setattr(ul, "find_qemu", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ul.EmulationError) as info:
        ul.setup_userland(tmp_path / "land")
    assert "apt-get install -y qemu-user-static" in info.value.hint
    assert not (tmp_path / "land").exists()
