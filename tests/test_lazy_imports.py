"""Converters and runtimes are imported only when their format is exported or run.

Each check runs in a fresh interpreter, so modules other tests imported cannot hide (or fake) an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONVERTERS = ("litert_torch", "ai_edge_litert", "coremltools", "tensorflow")
RUNTIMES = ("onnxruntime", "onnx")


def _loaded_after(code: str, watch: tuple[str, ...], cwd: Path | None = None) -> list[str]:
    """Run ``code`` in a fresh interpreter; the modules of ``watch`` that it left in sys.modules."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {list(watch)!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_and_light_commands_import_no_torch_converter_or_runtime():
    code = ("from edgecomp.cli import build_parser, main\nbuild_parser()\n"
            "assert main(['targets']) == 0\nassert main(['schema']) == 0")
    assert _loaded_after(code, ("torch", *CONVERTERS, *RUNTIMES)) == []


def test_importing_the_build_spine_imports_no_converter_or_runtime():
    code = "import edgecomp.build, edgecomp.export.formats, edgecomp.report.html, edgecomp.commands.build"
    assert _loaded_after(code, (*CONVERTERS, *RUNTIMES)) == []


def test_an_onnx_only_build_never_imports_the_tflite_or_coreml_converters(tmp_path):
    code = ("from edgecomp.build import BuildOptions, build\n"
            f"build(None, 'android-arm64', BuildOptions(out={str(tmp_path / 'b')!r}, recipe=[], formats=['onnx'], "
            "runs=1, warmup=1, cache=False))")
    loaded = _loaded_after(code, (*CONVERTERS, "onnxruntime"), cwd=tmp_path)
    assert loaded == ["onnxruntime"]  # the format's own runtime ran (parity), nothing else was imported


def test_an_identical_rebuild_imports_neither_torch_nor_any_converter_or_runtime(tmp_path):
    env = {"EDGECOMP_ARTIFACT_CACHE_DIR": str(tmp_path / "artifacts"), "EDGECOMP_NO_CACHE": ""}
    build = ("import os\nos.environ.update(" + repr(env) + ")\nos.environ.pop('EDGECOMP_NO_CACHE')\n"
             "from edgecomp.cli import main\n"
             f"assert main(['build', '--recipe', '', '--formats', 'onnx', '--runs', '2', '--out', "
             f"{str(tmp_path / 'b')!r}, '--force']) == 0")
    assert "torch" in _loaded_after(build, ("torch",), cwd=tmp_path)  # the first build runs
    assert _loaded_after(build, ("torch", *CONVERTERS, *RUNTIMES, "matplotlib"), cwd=tmp_path) == []
    assert json.loads((tmp_path / "b" / "report.json").read_text())["reused_from"]
