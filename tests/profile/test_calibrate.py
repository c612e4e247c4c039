"""Calibration writes to the user's profiles folder, never into the package: on this machine from the
built-in micro-benchmarks (`--calibrate host`), and on a phone through the fake adb (`--device`)."""

from __future__ import annotations

import shutil

import pytest

from edgecomp.cli import main
from edgecomp.profile.host_calibrate import calibrate_host
from edgecomp.profile.host_cpu import read_host, resolve_profile
from edgecomp.profile.predict import is_calibrated, predict_from_layers
from edgecomp.targets import load_profile, packaged_dir, user_dir
from tests.conftest import DATA, FAKE_ADB, use_fake_adb


@pytest.fixture
def user_profiles(monkeypatch, tmp_path):
    folder = tmp_path / "user-profiles"
    monkeypatch.setenv("EDGECOMP_USER_PROFILES_DIR", str(folder))
    return folder


def test_calibrate_host_fits_this_machines_family_into_the_user_folder(user_profiles):
    before = {p.name: p.read_bytes() for p in packaged_dir("profiles").glob("*.yaml")}
    template, path = calibrate_host("host", threads=(1,), rounds=1)
    assert path.parent == user_profiles == user_dir("profiles")
    family = read_host().family
    entry = template.calibration["families"][family]
    assert entry["runs"] >= 20 and entry["median_abs_error_pct"] < 25
    here = resolve_profile("host")  # now found in the user folder, and made this machine
    assert f"fitted for {family}" in here.description and is_calibrated(here)
    assert here.efficiency == pytest.approx(entry["efficiency"])
    assert {p.name: p.read_bytes() for p in packaged_dir("profiles").glob("*.yaml")} == before


def test_cli_calibrate_of_a_builtin_profile_writes_the_user_copy(user_profiles, capsys):
    packaged = (packaged_dir("profiles") / "host-x86.yaml").read_bytes()
    code = main(["profile", str(DATA / "tiny_cnn_fp32.tflite"), str(DATA / "tiny_cnn_int8.tflite"), "--threads",
                 "1", "--runs", "3", "--warmup", "1", "--calibrate", "host-x86"])
    assert code == 0
    assert f"written to {user_profiles / 'host-x86.yaml'}" in capsys.readouterr().out
    assert (packaged_dir("profiles") / "host-x86.yaml").read_bytes() == packaged
    assert len(load_profile("host-x86").calibration["runs"]) == 2


def test_cli_refuses_host_microbenchmarks_for_a_phone_profile(capsys):
    assert main(["profile", "--calibrate", "cortex-a76"]) == 2
    err = capsys.readouterr().err
    assert "cannot calibrate 'cortex-a76'" in err and "--device SERIAL" in err
    assert main(["profile"]) == 2 and "no model file given" in capsys.readouterr().err


def test_calibrate_on_a_device_through_fake_adb(monkeypatch, tmp_path, user_profiles, capsys):
    from edgecomp.commands._profile_calibrate import calibrate_device

    use_fake_adb(monkeypatch, tmp_path)
    bench = tmp_path / "benchmark_model"
    shutil.copy(FAKE_ADB / "benchmark_model", bench)
    _, path = calibrate_device("my-phone", "FAKE0001", bench, threads=(1,), runs=3, warmup=1,
                               names=["conv3x3", "depthwise"])
    assert path == user_profiles / "my-phone.yaml"
    again = load_profile("my-phone")  # valid against the schema, found by name
    assert again.arch == "arm64" and again.calibration["device"] == "FAKE0001"
    assert (again.prime_cores.count, again.prime_cores.clock_ghz) == (1, 2.8416)  # Pixel 4: 1 prime + 3 big
    assert (again.cores.count, again.cores.clock_ghz, again.cores.int8_ops_per_cycle) == (3, 2.4192, 64)
    assert len(again.calibration["runs"]) == 4 and all(
        r["source"] == "measured:device:FAKE0001" for r in again.calibration["runs"])
    assert predict_from_layers([], again, 4).calibration == "calibrated"
    # the CLI path: no benchmark binary is a clear error naming the fix
    monkeypatch.delenv("EDGECOMP_BENCHMARK_BINARY", raising=False)
    assert main(["profile", "--calibrate", "my-phone", "--device", "FAKE0001"]) == 2
    assert "--benchmark-binary" in capsys.readouterr().err
