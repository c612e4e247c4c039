"""`edgecomp deploy` and `edgecomp profile --device --via app`, end to end through the fake adb.

The fake device's file system is a folder; its ``am start`` plays the demo app's BenchmarkActivity by
running the bundle's .tflite with LiteRT on the host and writing the app's result file.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from edgecomp.android.deploy import APP_PACKAGE, deploy_bundle
from edgecomp.android.via_app import RESULT_VERSION, parse_result, profile_via_app
from edgecomp.bundle import MANIFEST_NAME, read_manifest, sha256_of, write_json
from edgecomp.cli import main
from edgecomp.errors import ConfigError, DeviceError
from tests.conftest import FAKE_ADB, use_fake_adb

FAKE = FAKE_ADB
SERIAL = "FAKE0001"


@pytest.fixture
def fake(monkeypatch, tmp_path) -> Path:
    """A fake adb with one Pixel 4 attached; returns that device's file system folder."""
    return use_fake_adb(monkeypatch, tmp_path) / SERIAL


@pytest.fixture
def apk(tmp_path) -> Path:
    """A stand-in APK: a zip, which is all the fake package manager checks."""
    path = tmp_path / "app-debug.apk"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("AndroidManifest.xml", b"\x03\x00\x08\x00")
    return path


def _remote(device: Path, name: str) -> Path:
    return device / f"sdcard/Android/data/{APP_PACKAGE}/files/bundles/{name}"


def test_deploy_pushes_the_manifest_and_tflite_into_the_apps_folder(fake, digits_bundle, capsys):
    assert main(["deploy", str(digits_bundle), "--device"]) == 0
    remote = _remote(fake, digits_bundle.name)
    assert sorted(p.name for p in remote.iterdir()) == [MANIFEST_NAME, "model.tflite"]
    for name in (MANIFEST_NAME, "model.tflite"):
        assert (remote / name).read_bytes() == (digits_bundle / name).read_bytes()
    assert not remote.with_name(remote.name + ".partial").exists()
    assert f"{SERIAL}:/sdcard/Android/data/{APP_PACKAGE}/files/bundles/{digits_bundle.name}" in capsys.readouterr().out


def test_deploy_installs_the_apk_and_accepts_device_before_bundle(fake, digits_bundle, apk, capsys):
    assert main(["deploy", "--device", str(digits_bundle), "--apk", str(apk), "--name", "digits"]) == 0
    assert (fake / "packages").read_text().split() == [APP_PACKAGE]
    assert (_remote(fake, "digits") / "model.tflite").is_file()
    assert "installed app-debug.apk" in capsys.readouterr().out


def test_redeploy_replaces_the_old_bundle_whole(fake, digits_bundle):
    deploy_bundle(digits_bundle, name="digits")
    stale = _remote(fake, "digits") / "old_model.tflite"
    stale.write_bytes(b"old")
    deploy_bundle(digits_bundle, SERIAL, name="digits")
    assert not stale.exists() and (_remote(fake, "digits") / "model.tflite").is_file()


def test_a_broken_apk_fails_with_the_package_managers_reason_and_pushes_nothing(fake, digits_bundle, tmp_path, capsys):
    bad = tmp_path / "broken.apk"
    bad.write_text("not a zip")
    assert main(["deploy", str(digits_bundle), "--device", SERIAL, "--apk", str(bad)]) == 2
    assert "INSTALL_PARSE_FAILED_NOT_APK" in capsys.readouterr().err
    assert not _remote(fake, digits_bundle.name).exists()


def test_a_bundle_whose_model_changed_after_the_build_is_refused(fake, digits_bundle, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(digits_bundle, copy)
    with (copy / "model.tflite").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ConfigError, match="does not match the sha256"):
        deploy_bundle(copy)
    assert not fake.exists() or not _remote(fake, "tampered").exists()


def test_a_device_lost_mid_push_leaves_no_bundle_in_place(fake, digits_bundle, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_LOSE_AFTER", "1")  # gone once the staging folder is made, before the pushes
    with pytest.raises(DeviceError, match="not reachable|not found|no Android device"):
        deploy_bundle(digits_bundle, name="digits")
    assert not _remote(fake, "digits").exists()


def _crafted(digits_bundle: Path, folder: Path, path: str) -> Path:
    """A copy of the bundle whose manifest lists ``evil.tflite`` under ``path`` (its sha256 matching)."""
    shutil.copytree(digits_bundle, folder)
    (folder / "evil.tflite").write_bytes(b"evil")
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["files"].append({**data["files"][0], "path": path, "sha256": sha256_of(folder / "evil.tflite"), "bytes": 4})
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    return folder


def test_a_manifest_path_cannot_put_files_outside_the_bundle_on_the_device(fake, digits_bundle, tmp_path):
    crafted = _crafted(digits_bundle, tmp_path / "crafted", "sub/../../../../evil.tflite")
    (crafted / "a/b/c/d").mkdir(parents=True)
    (crafted / "sub").symlink_to("a/b/c/d")  # locally the path resolves inside the bundle, on the device not
    with pytest.raises(ConfigError, match="not a relative path inside the bundle"):
        deploy_bundle(crafted, name="crafted")
    for path in ("/abs/evil.tflite", "..\\evil.tflite"):
        with pytest.raises(ConfigError, match="not a relative path inside the bundle"):
            deploy_bundle(_crafted(digits_bundle, tmp_path / f"c{len(path)}", path))
    assert not fake.exists() or not list(fake.rglob("evil*"))


def test_deploy_pushes_nothing_from_outside_the_bundle(fake, digits_bundle, tmp_path):
    linked = tmp_path / "linked"
    shutil.copytree(digits_bundle, linked)
    secret = tmp_path / "secret.tflite"
    (linked / "model.tflite").rename(secret)
    (linked / "model.tflite").symlink_to(secret)
    with pytest.raises(ConfigError, match="outside that folder"):
        deploy_bundle(linked, name="linked")
    with pytest.raises(ConfigError, match="not an Android package name"):
        deploy_bundle(digits_bundle, package="dev.edgecomp.demo/../../../..")
    for name in ("..", ".", "a/b"):
        with pytest.raises(ConfigError, match="not a plain folder name"):
            deploy_bundle(digits_bundle, name=name)
    assert not fake.exists() or not _remote(fake, "linked").exists()


def test_no_bundle_and_not_a_bundle_are_config_errors(fake, tmp_path, capsys):
    assert main(["deploy", "--device"]) == 2
    assert "no bundle given" in capsys.readouterr().err
    assert main(["deploy", str(tmp_path), "--device"]) == 2
    assert "no edgecomp.json" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- --via app
def test_profile_via_app_measures_on_the_device(fake, digits_bundle, apk):
    deploy_bundle(digits_bundle, apk=apk)
    prof = profile_via_app(digits_bundle / "model.tflite", threads=2, runs=7, warmup=2, poll_s=0.1)
    lat = prof.latency
    assert lat.source == f"measured:device:{SERIAL}" and lat.runs == 7 and lat.threads == 2
    assert 0 < lat.p50_ms <= lat.p90_ms and lat.init_ms > 0
    assert prof.device["model"] == "Pixel 4" and prof.file == "model.tflite"
    assert prof.raw["device"]["abi"] == "arm64-v8a"
    remote = _remote(fake, digits_bundle.name)
    assert not list(remote.glob("benchmark-*.json")), "the result file is left on the device"


def test_profile_command_via_app(fake, digits_bundle, apk, tmp_path, capsys):
    deploy_bundle(digits_bundle, apk=apk)
    out = tmp_path / "result.json"
    argv = ["profile", str(digits_bundle / "model.tflite"), "--device", "--via", "app", "--runs", "4",
            "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["source"] == f"measured:device:{SERIAL}" and result["via"] == "app"
    assert result["latency"]["runs"] == 4 and result["threads"] == 1
    assert f"measured:device:{SERIAL}" in capsys.readouterr().out


def test_via_app_needs_a_device_and_a_bundle(fake, digits_bundle, tmp_path, capsys):
    assert main(["profile", str(digits_bundle / "model.tflite"), "--via", "app"]) == 2
    assert "add --device" in capsys.readouterr().err
    loose = tmp_path / "loose.tflite"
    shutil.copy(digits_bundle / "model.tflite", loose)
    with pytest.raises(ConfigError, match="not in a bundle"):
        profile_via_app(loose)


def test_via_app_says_when_the_app_is_not_installed(fake, digits_bundle):
    with pytest.raises(DeviceError, match="not installed") as err:
        profile_via_app(digits_bundle, runs=2)
    assert "--apk" in err.value.hint


def test_via_app_reports_the_apps_own_failure(fake, digits_bundle, apk, tmp_path):
    broken = tmp_path / "broken_bundle"
    shutil.copytree(digits_bundle, broken)
    (broken / "model.tflite").write_bytes(b"this is not a flatbuffer")
    manifest = read_manifest(broken)
    entry = manifest.files[0].model_copy(update={"sha256": sha256_of(broken / "model.tflite"), "bytes": 24})
    write_json(broken / MANIFEST_NAME, manifest.model_copy(update={"files": [entry]}))
    deploy_bundle(digits_bundle, apk=apk)
    with pytest.raises(DeviceError, match="the app's benchmark failed on FAKE0001: ValueError"):
        profile_via_app(broken, runs=2, poll_s=0.1)


def test_via_app_times_out_when_the_app_writes_nothing(fake, digits_bundle, apk, monkeypatch):
    deploy_bundle(digits_bundle, apk=apk)
    monkeypatch.setenv("FAKE_APP_NO_RESULT", "1")
    with pytest.raises(DeviceError, match="no benchmark result within 1 s"):
        profile_via_app(digits_bundle, runs=2, timeout_s=1, poll_s=0.2)


def test_parse_result_rejects_other_versions_and_missing_fields():
    good = {"result_version": RESULT_VERSION, "status": "ok", "file": "m.tflite", "threads": 4, "warmup": 1,
            "runs": 3, "init_ms": 5.0, "times_ms": [1.0, 2.0, 4.0], "device": {}}
    lat = parse_result(good, "X")
    assert (lat.p50_ms, lat.runs, lat.source) == (2.0, 3, "measured:device:X")
    with pytest.raises(DeviceError, match="result version 2"):
        parse_result({**good, "result_version": 2}, "X")
    with pytest.raises(DeviceError, match="lacks"):
        parse_result({k: v for k, v in good.items() if k != "init_ms"}, "X")
    with pytest.raises(DeviceError, match="lacks"):
        parse_result({**good, "times_ms": []}, "X")
