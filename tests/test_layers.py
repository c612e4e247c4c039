"""The layering check (tools/check_layers.py): the package imports downwards only, and the check catches it when not."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "check_layers.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "edgecomp"
    for name in ("__init__.py", "errors.py", "compress/__init__.py", "export/__init__.py", "export/onnx.py",
                 "plan/__init__.py", "plan/planner.py", "report/__init__.py", "report/html.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_the_package_imports_downwards_only():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_module_and_function_level_upward_imports_are_listed_with_file_and_line(tmp_path, capsys):
    root = _package(tmp_path, {
        "compress/prune.py": ("from edgecomp.errors import ConfigError\n"
                              "from edgecomp.export.onnx import export\n\n"
                              "def run():\n    from edgecomp.plan import planner\n"
                              "    from ..report import html\n"),
        "plan/planner.py": "from edgecomp.compress import prune\nimport edgecomp.export.onnx\n",
    })
    assert _checker().main(["--root", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    prune = root / "compress" / "prune.py"
    assert out == [
        f"{prune}:2: edgecomp.compress.prune (compress) imports edgecomp.export.onnx (export)",
        f"{prune}:5: edgecomp.compress.prune (compress) imports edgecomp.plan.planner (plan)",
        f"{prune}:6: edgecomp.compress.prune (compress) imports edgecomp.report.html (report)",
    ]


def test_an_allow_list_entry_lets_one_upward_import_through(tmp_path):
    root = _package(tmp_path, {"compress/prune.py": "def run():\n    from edgecomp.plan import planner\n"})
    checker = _checker()
    assert len(checker.check(root, allowed={})) == 1
    assert checker.check(root, allowed={("edgecomp.compress.prune", "edgecomp.plan.planner"): "a reason"}) == []


def test_a_module_in_no_layer_is_an_error(tmp_path, capsys):
    root = _package(tmp_path, {"gadgets.py": ""})
    assert _checker().main(["--root", str(root)]) == 1
    assert "edgecomp.gadgets belongs to no layer" in capsys.readouterr().err
