"""A wheel built from the checkout carries the built-in targets and profiles, and an install of it finds
them from any folder, without the source tree (and without being fooled by a top-level ``targets/``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgecomp.targets import KINDS, packaged_dir

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout, built from a copy of it (a build writes build/ and *.egg-info in place)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "edgecomp", src / "edgecomp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-w", str(tmp / "dist"), str(src)])
    [built] = (tmp / "dist").glob("edgecomp-*.whl")
    return built


def test_the_wheel_holds_every_target_and_profile(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for kind in KINDS:
        shipped = {f"edgecomp/resources/{kind}/{p.name}" for p in packaged_dir(kind).glob("*.yaml")}
        assert shipped, f"no built-in {kind} in the checkout"
        assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)}"


def test_an_installed_wheel_finds_its_targets_and_profiles_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
          "--target", str(site), str(wheel)])
    (site / "targets").mkdir()  # another distribution's top-level targets/ must not be read
    (site / "targets" / "impostor.yaml").write_text("schema_version: 1\nname: impostor\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EDGECOMP_"))}
    env["PYTHONPATH"] = str(site)
    probe = ("import json, edgecomp; from edgecomp.targets import available, load_profile, load_target; "
             "t = load_target('android-arm64'); "
             "print(json.dumps({'file': edgecomp.__file__, 'target': t.name, 'profile': load_profile(t.hardware).name, "
             "'targets': sorted(available('targets')), 'profiles': sorted(available('profiles'))}))")
    found = json.loads(_run([sys.executable, "-c", probe], cwd=elsewhere, env=env).stdout.strip().splitlines()[-1])
    assert Path(found["file"]).resolve() == (site / "edgecomp" / "__init__.py").resolve()
    assert found["target"] == "android-arm64" and found["profile"] == "cortex-a76"
    assert found["targets"] == sorted(p.stem for p in packaged_dir("targets").glob("*.yaml"))
    assert found["profiles"] == sorted(p.stem for p in packaged_dir("profiles").glob("*.yaml"))
    shown = _run([sys.executable, "-m", "edgecomp", "targets", "show", "android-arm64"], cwd=elsewhere, env=env)
    assert "name: android-arm64" in shown.stdout
