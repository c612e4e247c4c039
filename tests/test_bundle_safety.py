"""Writing a bundle never deletes the user's files: refusals, permissions, locks, signals, full disks.

Most tests call ``bundle.staging`` (``fsutil.replace_folder``) directly with tiny files; two go through
``edgecomp build`` on a 16-input linear model exported to ONNX only.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgecomp.bundle import MANIFEST_NAME, FileEntry, Manifest, now_iso, staging
from edgecomp.cli import main
from edgecomp.errors import ConfigError
from edgecomp.fsutil import OutputError
from edgecomp.spec import ModelSpec
from edgecomp.targets import load_profile, load_target

REPO = Path(__file__).resolve().parents[1]
MANIFEST = Manifest(schema_version=1, edgecomp_version="0", created=now_iso(), target="host",
                    model=ModelSpec(name="m", input_shape=[1, 16]), files=[]).model_dump_json()
MODEL_PY = "from torch import nn\n\ndef tiny():\n    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))\n"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _user_folder(path: Path, mode: int = 0o750) -> dict[str, bytes]:
    """A folder of someone's files (no edgecomp.json); returns its contents."""
    (path / "notes").mkdir(parents=True)
    (path / "thesis.txt").write_bytes(b"three years of work")
    (path / "notes" / "todo.md").write_bytes(b"- back up")
    path.chmod(mode)
    return _contents(path)


def _contents(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _write_bundle(dest: Path, text: str = "new", **kwargs) -> None:
    with staging(dest, **kwargs) as folder:
        (folder / MANIFEST_NAME).write_text(MANIFEST)
        (folder / "model.onnx").write_text(text)


def _leftovers(parent: Path, name: str) -> list[str]:
    """Staging folders, moved-aside copies and lock files of ``name`` left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((f".{name}.", f".edgecomp-{name}")))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ------------------------------------------------------------------------------ what is at the destination
def test_a_folder_edgecomp_did_not_write_is_refused_and_left_untouched(tmp_path):
    docs = tmp_path / "mydocs"
    before = _user_folder(docs)
    with pytest.raises(OutputError, match="did not write") as err:
        _write_bundle(docs)
    assert "--force" in err.value.hint
    assert _contents(docs) == before and _mode(docs) == 0o750
    assert _leftovers(tmp_path, "mydocs") == []


def test_force_replaces_a_users_folder_and_keeps_its_mode(tmp_path):
    docs = tmp_path / "mydocs"
    _user_folder(docs, mode=0o751)
    _write_bundle(docs, force=True)
    assert _contents(docs) == {MANIFEST_NAME: MANIFEST.encode(), "model.onnx": b"new"}
    assert _mode(docs) == 0o751
    assert _leftovers(tmp_path, "mydocs") == []


def test_a_new_bundle_gets_normal_permissions_and_a_rebuild_replaces_it(tmp_path, umask_022):
    dest = tmp_path / "b"
    _write_bundle(dest, "first")
    assert _mode(dest) == 0o755  # 0o777 & ~umask, not mkdtemp's 0o700
    _write_bundle(dest, "second")
    assert (dest / "model.onnx").read_text() == "second" and _mode(dest) == 0o755
    empty = tmp_path / "empty"
    empty.mkdir()
    _write_bundle(empty)  # an empty folder holds nothing to lose
    assert (empty / MANIFEST_NAME).is_file()


def test_siblings_named_like_the_old_copy_or_the_lock_survive(tmp_path):
    dest = tmp_path / "b"
    _write_bundle(dest, "first")
    mine = {".b.old": b"someone's", ".b.lock": b"mine too"}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    _write_bundle(dest, "second")
    assert {name: (tmp_path / name).read_bytes() for name in mine} == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.lock", ".b.old", "b"]


def test_a_file_or_a_link_at_the_destination_is_refused(tmp_path):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"%PDF")
    with pytest.raises(OutputError, match="is a file"):
        _write_bundle(target)
    assert target.read_bytes() == b"%PDF"
    with pytest.raises(OutputError, match="is a file"):
        _write_bundle(target, force=True)
    assert target.read_bytes() == b"%PDF"
    bundle = tmp_path / "real"
    _write_bundle(bundle)
    link = tmp_path / "link"
    link.symlink_to(bundle)
    with pytest.raises(OutputError, match="symbolic link"):
        _write_bundle(link)
    assert link.is_symlink() and (bundle / "model.onnx").read_text() == "new"


def test_the_current_folder_and_its_parents_are_refused_even_with_force(tmp_path, monkeypatch):
    work = tmp_path / "project" / "src"
    work.mkdir(parents=True)
    (work / "main.py").write_text("print()")
    monkeypatch.chdir(work)
    for out in (".", "..", str(work)):
        with pytest.raises(OutputError, match="current folder"):
            _write_bundle(Path(out), force=True)
    assert (work / "main.py").read_text() == "print()"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


# ------------------------------------------------------------------------------------------- names and paths
_TARGET = ("schema_version: 1\nname: {name}\ndescription: x\nruntime: litert\nformats: [onnx]\n"
           "dtypes: [fp32]\nhardware: cortex-a76\n")
_PROFILE = ("schema_version: 1\nname: {name}\ndescription: x\narch: arm64\nmemory_bandwidth_gbs: 10\n"
            "cores: {{count: 1, clock_ghz: 1.0, fp32_flops_per_cycle: 8, int8_ops_per_cycle: 32}}\n")


@pytest.mark.parametrize("name", ["x/../../victim", "..", "/tmp/x", ".hidden", "a b"])
def test_target_and_profile_names_must_be_plain(tmp_path, name):
    for text, load in ((_TARGET, load_target), (_PROFILE, load_profile)):
        path = tmp_path / "t.yaml"
        path.write_text(text.format(name=json.dumps(name)))
        with pytest.raises(ConfigError, match="key 'name'"):
            load(str(path))
    path.write_text(_PROFILE.format(name="my-board_2.0"))
    assert load_profile(str(path)).name == "my-board_2.0"


@pytest.mark.parametrize("path", ["../x", "/abs/model.onnx", "sub/../../x", "a\\b.onnx", "", "a//b", "x/"])
def test_manifest_paths_must_stay_inside_the_bundle(path):
    entry = {"format": "onnx", "path": "model.onnx", "bytes": 1, "sha256": "0", "dtype": "fp32",
             "inputs": [], "outputs": []}
    assert FileEntry.model_validate(entry).path == "model.onnx"
    assert FileEntry.model_validate({**entry, "path": "sub/model.mlpackage"}).path == "sub/model.mlpackage"
    with pytest.raises(ValidationError, match="not a relative path inside the bundle"):
        FileEntry.model_validate({**entry, "path": path})


# ------------------------------------------------------------------------------ concurrency, signals, disks
_SWAPPER = """
import json, sys, time
from pathlib import Path
from edgecomp.bundle import staging
from edgecomp.fsutil import OutputError
dest, go, manifest = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while not go.exists():
    time.sleep(0.001)
done = busy = 0
other = []
for i in range(50):
    try:
        with staging(dest) as folder:
            (folder / "edgecomp.json").write_text(manifest)
            (folder / "model.onnx").write_bytes(bytes(2000))
        done += 1
    except OutputError as exc:
        if exc.message == f"another build is writing {dest}":
            busy += 1
        else:
            other.append(exc.message)
    except Exception as exc:
        other.append(repr(exc))
print(json.dumps({"done": done, "busy": busy, "other": other}))
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_two_writers_of_one_destination_fail_clearly_or_succeed_and_leave_nothing(tmp_path):
    dest, go = tmp_path / "out" / "b", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _SWAPPER, str(dest), str(go), MANIFEST], stdout=subprocess.PIPE,
                              text=True, env=_env()) for _ in range(2)]
    time.sleep(0.5)  # both importing; the go file starts them together
    go.touch()
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [r["other"] for r in results] == [[], []]
    assert all(r["done"] + r["busy"] == 50 for r in results)
    assert sum(r["done"] for r in results) > 0
    assert sorted(p.name for p in dest.parent.iterdir()) == ["b"]  # no staging, aside or lock left
    assert _contents(dest) == {MANIFEST_NAME: MANIFEST.encode(), "model.onnx": bytes(2000)}


_TERMINATED = """
import sys, time
from pathlib import Path
import edgecomp.commands.build as build_command
from edgecomp.bundle import staging
from edgecomp.cli import main

def run(args):
    with staging(Path(sys.argv[1])) as folder:
        (folder / "model.onnx").write_bytes(bytes(1000))
        print("staged", flush=True)
        time.sleep(60)

build_command.run = run
sys.exit(main(["build"]))
"""


def test_sigterm_during_a_build_removes_the_staging_folder(tmp_path):
    dest = tmp_path / "b"
    _write_bundle(dest, "kept")
    proc = subprocess.Popen([sys.executable, "-c", _TERMINATED, str(dest)], stdout=subprocess.PIPE, text=True,
                            env=_env())
    assert proc.stdout.readline().strip() == "staged"
    assert [name for name in _leftovers(tmp_path, "b") if name.startswith(".b.")]  # staging, while it runs
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _leftovers(tmp_path, "b") == []
    assert (dest / "model.onnx").read_text() == "kept"


def test_ctrl_c_or_an_error_inside_staging_leaves_the_old_bundle_and_nothing_else(tmp_path):
    dest = tmp_path / "b"
    _write_bundle(dest, "kept")
    for exc in (KeyboardInterrupt(), ValueError("export failed")):
        with pytest.raises(type(exc)), staging(dest) as folder:
            (folder / "model.onnx").write_text("half")
            raise exc
    assert (dest / "model.onnx").read_text() == "kept" and _leftovers(tmp_path, "b") == []


def test_a_full_disk_is_a_clear_error_and_leaves_the_old_bundle(tmp_path, monkeypatch):
    dest = tmp_path / "b"
    _write_bundle(dest, "kept")
    real_write = Path.write_bytes

    def full(self, data):
        if self.name == "model.onnx":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError, match="No space left on device") as err, staging(dest) as folder:
        (folder / MANIFEST_NAME).write_bytes(MANIFEST.encode())
        (folder / "model.onnx").write_bytes(b"x")
    assert "model.onnx" in err.value.message and "free some space" in err.value.hint
    assert (dest / "model.onnx").read_text() == "kept" and _leftovers(tmp_path, "b") == []


# ------------------------------------------------------------------------------------------ edgecomp build
@pytest.fixture
def tiny_model(tmp_path) -> list[str]:
    path = tmp_path / "models.py"
    path.write_text(MODEL_PY)
    return [f"{path}:tiny", "--input-shape", "1,1,4,4", "--recipe", "", "--formats", "onnx", "--runs", "2"]


def test_build_refuses_a_users_folder_before_any_work_and_force_replaces_it(tmp_path, tiny_model, monkeypatch,
                                                                             capsys, umask_022):
    import edgecomp.build

    docs = tmp_path / "mydocs"
    before = _user_folder(docs)
    real_apply = edgecomp.build.apply_recipe
    monkeypatch.setattr(edgecomp.build, "apply_recipe", lambda *a: pytest.fail("the build started"))
    assert main(["build", *tiny_model, "--out", str(docs)]) == 2
    err = capsys.readouterr().err
    assert f"error: --out {docs} is a folder that edgecomp did not write" in err and "--force" in err
    assert _contents(docs) == before and _mode(docs) == 0o750
    for out in (".", str(tmp_path / "models.py")):
        monkeypatch.chdir(tmp_path)
        assert main(["build", *tiny_model, "--out", out]) == 2
        assert "error: --out" in capsys.readouterr().err
    monkeypatch.setattr(edgecomp.build, "apply_recipe", real_apply)
    assert main(["build", *tiny_model, "--out", str(docs), "--force"]) == 0
    assert {"edgecomp.json", "model.onnx", "report.json"} <= set(os.listdir(docs))
    assert not (docs / "thesis.txt").exists() and _mode(docs) == 0o750
    assert _leftovers(tmp_path, "mydocs") == []


def test_a_full_disk_during_a_build_is_a_clear_error_with_nothing_left(tmp_path, tiny_model, monkeypatch, capsys):
    import edgecomp.build

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(edgecomp.build, "write_json", full)
    out = tmp_path / "b"
    assert main(["build", *tiny_model, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: cannot write" in err and "No space left on device" in err and "free some space" in err
    assert "Traceback" not in err
    assert not out.exists() and _leftovers(tmp_path, "b") == []
