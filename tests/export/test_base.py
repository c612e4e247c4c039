"""The format registry: a format defined here, in the test file, is built, bundled, run and profiled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecomp.bundle import TensorInfo
from edgecomp.compress.base import ExportOptions
from edgecomp.errors import ConfigError, ExportError
from edgecomp.export.base import Format, format_names, get_format
from edgecomp.export.common import ExportedArtifact


class TorchScriptRunner:
    """Runs a TorchScript file (the test format's runtime)."""

    def __init__(self, path, threads: int = 2) -> None:
        self.module = torch.jit.load(str(path))
        self.input_shape = json.loads(Path(str(path) + ".shape").read_text())

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [self.module(torch.from_numpy(x)).numpy()]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[0]


class TorchScriptFormat(Format):
    """A format no edgecomp module knows: a traced TorchScript file."""

    name = "tsfmt"
    filename = "model.ts"
    dtypes = ("fp32",)
    runner = f"{__name__}:TorchScriptRunner"

    def export(self, model, spec, options, path, calibration=None) -> ExportedArtifact:
        traced = torch.jit.trace(model.eval(), torch.zeros(spec.input_shape))
        traced.save(str(path))
        Path(str(path) + ".shape").write_text(json.dumps(spec.input_shape))
        shape = list(spec.input_shape)
        out = [int(d) for d in traced(torch.zeros(shape)).shape]
        return ExportedArtifact(self.name, path, "fp32", [TensorInfo(name="x", shape=shape, dtype="float32")],
                                [TensorInfo(name="y", shape=out, dtype="float32")])


def test_a_format_defined_in_a_test_is_built_bundled_run_and_profiled(tmp_path):
    from edgecomp.build import BuildOptions, build
    from edgecomp.export.runtime import make_runner

    assert "tsfmt" in format_names()
    report = build(None, "android-arm64", BuildOptions(out=tmp_path / "b", recipe=[], formats=["tsfmt"], runs=3,
                                                      warmup=1, cache=False))
    (record,) = report.artifacts
    assert record.format == "tsfmt" and record.parity.status == "passed"
    assert record.latency is not None and record.latency.source == "measured:host"  # the host worker ran it
    manifest = json.loads((tmp_path / "b" / "edgecomp.json").read_text())
    assert [(f["format"], f["path"]) for f in manifest["files"]] == [("tsfmt", "model.ts")]
    runner = make_runner("tsfmt", tmp_path / "b" / "model.ts")
    assert runner(np.zeros(runner.input_shape, np.float32)).shape == (1, 10)


def test_an_unknown_format_and_an_uncarried_dtype_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown format 'tflit'.*Did you mean 'tflite'"):
        get_format("tflit")
    with pytest.raises(ExportError) as info:
        get_format("tsfmt").check(ExportOptions(dtype="int8"))
    assert "tsfmt cannot carry int8" in info.value.message
    assert "onnx" in info.value.hint and "tflite" in info.value.hint and "ecz" not in info.value.hint


def test_a_missing_optional_dependency_names_the_install_command(monkeypatch):
    monkeypatch.setattr(get_format("pte").__class__, "requires", ("no_such_module_xyz",))
    with pytest.raises(ExportError) as info:
        get_format("pte").check(ExportOptions())
    assert "pip install 'edgecomp[executorch]'" in info.value.hint
