"""Shared fixtures, and the check that every bundle the tests build follows the manifest schema.

At the end of a session every ``edgecomp.json`` under pytest's temporary folders (where the tests
write their bundles) is validated against the committed ``schemas/edgecomp.schema.json``; one that
does not validate fails the session with the file and the reason.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "schemas" / "edgecomp.schema.json"


# Builds in tests export afresh (a test may replace an exporter); tests of the cache turn it back on.
os.environ.setdefault("EDGECOMP_NO_CACHE", "1")
# Calibrations a test writes go to a scratch folder, never the user's own profiles (targets.user_dir).
# The process that makes the folder removes it when it exits (xdist's workers inherit the controller's).
if "EDGECOMP_USER_PROFILES_DIR" not in os.environ:
    _scratch_profiles = tempfile.mkdtemp(prefix="edgecomp-user-profiles-")
    os.environ["EDGECOMP_USER_PROFILES_DIR"] = _scratch_profiles
    atexit.register(shutil.rmtree, _scratch_profiles, ignore_errors=True)

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"  # small committed inputs (tiny .tflite files, benchmark outputs)
FAKE_ADB = TESTS / "fake_adb"
_FAKE_ADB_KNOBS = ("FAKE_ADB_DEVICES", "FAKE_ADB_LOSE_AFTER", "FAKE_ADB_HANG_ON", "FAKE_BENCHMARK_GENERATION",
                   "FAKE_ADB_PACKAGES", "FAKE_ADB_APK_PACKAGE", "FAKE_APP_NO_RESULT")


def use_fake_adb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point edgecomp at tests/fake_adb with no failure knob set; returns the devices' root folder."""
    root = tmp_path / "devices"
    root.mkdir()
    monkeypatch.setenv("EDGECOMP_ADB", str(FAKE_ADB / "adb"))
    monkeypatch.setenv("FAKE_ADB_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for var in _FAKE_ADB_KNOBS:
        monkeypatch.delenv(var, raising=False)
    return root


def manifest_errors(path: Path) -> list[str]:
    """Reasons why the manifest at ``path`` does not validate against the committed schema ([] if it does)."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(json.loads(path.read_text()))]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Train and infer in-process on one torch thread: on a shared 2-core machine two contend and tiny
    models run several times slower (subprocesses such as `edgecomp build` keep their own setting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory) -> Path:
    """A real bundle of the default model for android-arm64 (.tflite only, to keep it quick)."""
    from edgecomp.cli import main

    out = tmp_path_factory.mktemp("digits bundle") / "digits_cnn-android-arm64"
    assert main(["build", "--target", "android-arm64", "--formats", "tflite", "--runs", "3", "--out", str(out)]) == 0
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Validate every edgecomp.json the session's tests wrote; fail the session if one is invalid."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = getattr(factory, "_basetemp", None) if factory is not None else None
    if base is None or not Path(base).is_dir():
        return
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return
    bad = {p: errs for p in sorted(Path(base).rglob("edgecomp.json")) if (errs := manifest_errors(p))}
    if bad:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"{p}: {'; '.join(errs[:3])}" for p, errs in bad.items()]
        message = "bundles written by the tests do not follow schemas/edgecomp.schema.json:\n  " + "\n  ".join(lines)
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
