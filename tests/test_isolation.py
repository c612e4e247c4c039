"""Helper processes that run Python are isolated: modules planted in the current folder, the artifact's
folder or $PYTHONPATH never run inside them (``python -I``, started in a folder of edgecomp's own)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecomp.profile.host import measure_host
from edgecomp.verify import arm64
from edgecomp.verify import userland as ul
from tests.bundle_helpers import fake_bundle

DATA = Path(__file__).parent / "data"


def _plant(folder: Path, marker: Path) -> None:
    """Put a json.py and a numpy.py into ``folder`` that write ``marker`` when imported."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("json", "numpy"):
        (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r} + ' from {folder}\\n')\n")


def test_host_worker_runs_no_module_from_the_cwd_the_artifact_folder_or_pythonpath(tmp_path, monkeypatch):
    build, marker = tmp_path / "build", tmp_path / "hijacked.txt"
    _plant(build, marker)
    _plant(build / "model", marker)
    _plant(tmp_path / "on-pythonpath", marker)
    shutil.copy(DATA / "tiny_cnn_fp32.tflite", build / "model" / "tiny.tflite")
    monkeypatch.chdir(build)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "on-pythonpath"))
    latency = measure_host("tflite", "model/tiny.tflite", threads=1, runs=3, warmup=1)  # relative to the cwd
    assert not marker.exists(), marker.read_text()
    assert latency.source == "measured:host" and latency.runs == 3 and latency.p50_ms > 0


def test_verify_host_run_is_isolated(tmp_path, monkeypatch):
    bundle = fake_bundle(tmp_path / "bundle")
    marker = tmp_path / "hijacked.txt"
    _plant(tmp_path / "cwd", marker)
    monkeypatch.chdir(tmp_path / "cwd")
    calls = []
    real_run = subprocess.run

    def recording_run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return real_run(cmd, **kwargs)

    class StopBeforeEmulation:
        site = tmp_path / "site"

        def run(self, *args, **kwargs):
            raise ul.EmulationError("stop here: the host run is done", "-")

    monkeypatch.setattr(arm64.subprocess, "run", recording_run)
    monkeypatch.setattr(arm64, "load_userland", lambda root: StopBeforeEmulation())
    with pytest.raises(ul.EmulationError, match="stop here"):  # so the host run itself succeeded
        arm64.verify_bundle(bundle)
    [(cmd, kwargs)] = calls
    assert cmd[:3] == [sys.executable, "-I", str(arm64.WORKER)]
    cwd = Path(kwargs["cwd"])
    assert cwd.is_absolute() and cwd.resolve() != (tmp_path / "cwd").resolve()
    assert not cwd.exists()  # a temporary folder of its own, removed afterwards
    assert not marker.exists()


def test_emulated_python_is_isolated(tmp_path):
    land = ul.Userland(root=tmp_path, qemu=Path("/usr/bin/qemu-aarch64-static"),
                       python=tmp_path / "sysroot/usr/bin/python3.11", info={})
    cmd = land.command("worker.py", "request.json")
    assert cmd[cmd.index(str(land.python)) + 1:] == ["-I", "worker.py", "request.json"]


def test_pip_download_is_isolated(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ul, "_run", lambda cmd, what, **kwargs: calls.append((cmd, kwargs)))
    monkeypatch.chdir(tmp_path)
    ul._pip_download(["numpy"], Path("stage/wheels"), "3.11")
    [(cmd, kwargs)] = calls
    assert cmd[:4] == [sys.executable, "-I", "-m", "pip"]
    assert cmd[cmd.index("-d") + 1] == str(tmp_path.resolve() / "stage" / "wheels")  # absolute: cwd changes
    assert Path(kwargs["cwd"]).resolve() != tmp_path.resolve()

