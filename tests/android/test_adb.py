"""The adb layer and on-device profiling, end to end through the fake adb in tests/fake_adb/.

The fake answers as adb 1.0.41 does and runs the pushed benchmark stand-in with LiteRT on the host;
environment variables make it simulate each failure (no device, several, unauthorized, offline,
lost mid-run, hung).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgecomp.android.adb import Adb, find_adb, parse_devices
from edgecomp.android.device import core_mask, elf_abi, profile_on_device
from edgecomp.cli import main
from edgecomp.errors import DeviceError
from edgecomp.profile.predict import read_tflite_layers
from tests.conftest import DATA, FAKE_ADB, use_fake_adb

FAKE = FAKE_ADB
BENCH = FAKE / "benchmark_model"
TINY = DATA / "tiny_cnn_fp32.tflite"  # made by tests/profile_fixtures.py


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models with spaces")
    target = folder / "tiny model.tflite"
    shutil.copy(TINY, target)
    return target


@pytest.fixture
def fake(monkeypatch, tmp_path) -> Path:
    return use_fake_adb(monkeypatch, tmp_path)


def _elf(path: Path, machine: int) -> Path:
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")
    path.write_bytes(header + b"\0" * 44)
    path.chmod(0o755)
    return path


def test_parse_real_adb_devices_output():
    assert parse_devices("List of devices attached\n\n") == []
    text = ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
            "List of devices attached\n"
            "emulator-5554          device product:sdk_gphone64_arm64 model:sdk_gphone64_arm64 device:emu64a "
            "transport_id:1\n"
            "0A1B2C3D               unauthorized usb:1-1 transport_id:2\n"
            "9XYZ                   no permissions (user in plugdev group; are your udev rules wrong?); see "
            "[http://developer.android.com/tools/device.html] usb:1-2 transport_id:3\n\n")
    devs = parse_devices(text)
    assert [(d.serial, d.state) for d in devs] == [("emulator-5554", "device"), ("0A1B2C3D", "unauthorized"),
                                                   ("9XYZ", "no permissions")]
    assert devs[0].model == "sdk_gphone64_arm64" and devs[0].attributes["transport_id"] == "1"


def test_adb_missing_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECOMP_ADB", str(tmp_path / "nope" / "adb"))
    with pytest.raises(DeviceError) as err:
        find_adb()
    assert "apt-get install -y adb" in err.value.hint
    monkeypatch.delenv("EDGECOMP_ADB")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceError, match="not installed") as err:
        find_adb()
    assert "apt-get install -y adb" in err.value.hint


def test_shell_quotes_arguments_and_returns_status(fake):
    adb = Adb()
    adb.select()
    status, out = adb.shell(["echo", "a  b", "$HOME", "it's"])
    assert status == 0 and out.strip() == "a  b $HOME it's"
    status, _ = adb.shell("exit 3", check=False)
    assert status == 3
    with pytest.raises(DeviceError, match="status 3"):
        adb.shell("exit 3")
    assert adb.getprop("ro.product.cpu.abi") == "arm64-v8a" and adb.abis()[1] == "armeabi-v7a"


def test_push_pull_folder_and_file_with_spaces(fake, tmp_path):
    src = tmp_path / "my bundle"
    (src / "sub dir").mkdir(parents=True)
    (src / "sub dir" / "a file.txt").write_text("hello")
    adb = Adb()
    adb.select()
    adb.shell(["mkdir", "-p", "/data/local/tmp/x y"])
    adb.push(src, "/data/local/tmp/x y/")
    assert adb.shell(["cat", "/data/local/tmp/x y/my bundle/sub dir/a file.txt"])[1] == "hello"
    got = adb.pull("/data/local/tmp/x y/my bundle/sub dir/a file.txt", tmp_path / "back.txt")
    assert got.read_text() == "hello"
    with pytest.raises(DeviceError, match="failed to stat remote object"):
        adb.pull("/data/local/tmp/missing", tmp_path / "m")


def test_profile_on_device_end_to_end(fake, model_file, tmp_path):
    prof = profile_on_device(model_file, BENCH, threads=2, runs=5, warmup=1, csv_out=None)
    assert prof.source == "measured:device:FAKE0001" and prof.device["model"] == "Pixel 4"
    assert prof.cpu_mask == "f0"  # cpus 4-7: the 2.42 and 2.84 GHz cores of a Pixel 4
    assert (fake / "FAKE0001" / "taskset.log").read_text().split() == ["f0"]
    lat = prof.latency
    assert lat["runs"] == 5 and lat["mean_ms"] > 0 and lat["init_ms"] > 0 and lat["min_ms"] <= lat["max_ms"]
    layers, _ = read_tflite_layers(model_file)
    assert len(prof.per_op) == len(layers) and {"CONV_2D", "FULLY_CONNECTED"} <= set(prof.by_node_type)
    assert list((fake / "FAKE0001" / "data/local/tmp").iterdir()) == []  # everything pushed was removed


def test_little_cores_csv_and_old_output_generation(fake, model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_BENCHMARK_GENERATION", "old")
    csv = tmp_path / "ops.csv"
    prof = profile_on_device(model_file, BENCH, threads=1, runs=3, warmup=1, cores="little", csv_out=csv)
    assert prof.cpu_mask == "f" and prof.latency["mean_ms"] > 0
    assert prof.csv_path == str(csv) and "CONV_2D" in csv.read_text()
    assert core_mask({0: 1000, 1: 1000}, "big") == "3" and core_mask({0: 1, 1: 2}, "all") is None


def test_no_device_several_devices_and_unknown_serial(fake, model_file, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    with pytest.raises(DeviceError, match="no Android device"):
        profile_on_device(model_file, BENCH)
    monkeypatch.setenv("FAKE_ADB_DEVICES", "PHONE1=device:Pixel 4;PHONE2=device:Pixel 3")
    with pytest.raises(DeviceError, match="2 devices are attached") as err:
        profile_on_device(model_file, BENCH)
    assert "--device SERIAL" in err.value.hint
    with pytest.raises(DeviceError, match="Did you mean 'PHONE2'"):
        profile_on_device(model_file, BENCH, "PHONE22")
    prof = profile_on_device(model_file, BENCH, "PHONE2", runs=2, warmup=1, op_profiling=False)
    assert prof.source == "measured:device:PHONE2" and prof.device["model"] == "Pixel 3" and prof.per_op == []


@pytest.mark.parametrize(("state", "message"), [("unauthorized", "unauthorized"), ("offline", "offline")])
def test_unauthorized_and_offline(fake, model_file, monkeypatch, state, message):
    monkeypatch.setenv("FAKE_ADB_DEVICES", f"PHONE1={state}")
    with pytest.raises(DeviceError, match=message):
        profile_on_device(model_file, BENCH)
    adb = Adb(serial="PHONE1")  # addressed directly, adb itself refuses
    with pytest.raises(DeviceError, match=message):
        adb.shell(["true"])


def test_device_lost_mid_run_and_hung_device(fake, model_file, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_LOSE_AFTER", "4")  # mkdir, getprops... then gone before the benchmark
    with pytest.raises(DeviceError, match="not reachable|lost"):
        profile_on_device(model_file, BENCH, runs=2, warmup=1)
    monkeypatch.delenv("FAKE_ADB_LOSE_AFTER")
    monkeypatch.setenv("FAKE_ADB_HANG_ON", "--num_threads")
    with pytest.raises(DeviceError, match="did not finish within 2 s"):
        profile_on_device(model_file, BENCH, runs=2, warmup=1, timeout_s=2)
    assert list((fake / "FAKE0001" / "data/local/tmp").iterdir()) == []  # cleaned up after the hang


def test_wrong_abi_is_refused_before_pushing(fake, model_file, tmp_path, monkeypatch):
    x86 = _elf(tmp_path / "benchmark_model_x86", 62)
    arm64 = _elf(tmp_path / "benchmark_model_arm64", 183)
    assert elf_abi(x86) == "x86_64" and elf_abi(arm64) == "arm64-v8a" and elf_abi(BENCH) is None
    with pytest.raises(DeviceError, match="built for x86_64 .*wrong ABI"):
        profile_on_device(model_file, x86)
    monkeypatch.setenv("FAKE_ADB_DEVICES", "EMU=device:x86 emulator:x86_64,x86")
    with pytest.raises(DeviceError, match="built for arm64-v8a but the device runs x86_64"):
        profile_on_device(model_file, arm64)
    assert not (fake / "EMU" / "data/local/tmp").exists() or not any((fake / "EMU" / "data/local/tmp").iterdir())


def test_cli_devices_and_profile_device(fake, model_file, tmp_path, capsys):
    assert main(["devices"]) == 0
    assert "FAKE0001" in capsys.readouterr().out
    assert main(["profile", str(model_file), "--device"]) == 2  # no benchmark binary
    assert "--benchmark-binary" in capsys.readouterr().err
    out = tmp_path / "res.json"
    code = main(["profile", str(model_file), "--device", "FAKE0001", "--benchmark-binary", str(BENCH),
                 "--runs", "3", "--warmup", "1", "--threads", "2", "--json", str(out), "--predict", "cortex-a76"])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["source"] == "measured:device:FAKE0001" and res["threads"] == 2
    assert res["predicted"]["source"] == "predicted:cortex-a76" and res["predicted"]["ms"] > 0
    assert "measured:device:FAKE0001" in capsys.readouterr().out
