"""A fake ``adb`` for tests: the subset edgecomp uses, answering as the real adb 1.0.41 does.

Implemented: ``devices -l``, ``-s SERIAL``, ``push``, ``pull``, ``shell CMD``, ``install``. Each device is
a folder under ``$FAKE_ADB_ROOT/<serial>/`` standing for its file system; ``shell`` runs the command with the
host's ``/bin/sh`` after mapping ``/data/local/tmp``, ``/sys/devices/system/cpu`` and ``/proc/cpuinfo`` into that folder,
so quoting is parsed by a real shell. ``getprop`` and ``taskset`` are shell functions (taskset logs its
mask to ``$FAKE_ADB_ROOT/<serial>/taskset.log`` and runs the command). A pushed benchmark binary is
whatever file the test pushes (``tests/fake_adb/benchmark_model`` runs the model with LiteRT on the host).
``/sdcard`` is mapped too; ``am`` and ``pm`` are shell functions backed by ``fake_android.py`` (the
edgecomp demo app's BenchmarkActivity, played with LiteRT on the host). ``install`` records the package
``$FAKE_ADB_APK_PACKAGE`` (default dev.edgecomp.demo: the fake cannot read a binary AndroidManifest.xml)
for any zip file, and fails as the package manager does for anything else.

Environment:
  FAKE_ADB_ROOT        folder holding the devices' file systems (required)
  FAKE_ADB_DEVICES     ``SERIAL=STATE[:MODEL[:ABILIST]]`` separated by ``;`` (default: one Pixel 4);
                       STATE is device, unauthorized or offline; an empty value means no device
  FAKE_ADB_CPU_FREQS   comma-separated cpuinfo_max_freq (kHz) of cpu0..cpuN (default: Pixel 4's 4+3+1)
  FAKE_ADB_CPUINFO     a file whose text the device's /proc/cpuinfo shows (default: a Pixel 4's, with dotprod)
  FAKE_ADB_LOSE_AFTER  the device disappears after this many shell commands (simulates a lost device)
  FAKE_ADB_HANG_ON     a shell command containing this text hangs (simulates a device that stops answering)
  FAKE_ADB_PYTHON      the python that runs Python scripts pushed to the device (default: this one)
  FAKE_ADB_APK_PACKAGE the package ``install`` records (default dev.edgecomp.demo)
  FAKE_ADB_PACKAGES    comma-separated packages installed from the start (default none)
  FAKE_APP_NO_RESULT   the app's BenchmarkActivity starts but never writes its result
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DEVICES = "FAKE0001=device:Pixel 4:arm64-v8a,armeabi-v7a,armeabi"
DEFAULT_FREQS = "1785600,1785600,1785600,1785600,2419200,2419200,2419200,2841600"
UNAUTHORIZED = ("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                "Try 'adb kill-server' if that seems wrong.\nOtherwise check for a confirmation dialog on your device.")


def fail(message: str, code: int = 1) -> None:
    """Print an adb-style error to stderr and exit."""
    print(message, file=sys.stderr)
    sys.exit(code)


def devices() -> list[dict]:
    """The simulated devices, each a dict of serial, state, model and abilist."""
    spec = os.environ.get("FAKE_ADB_DEVICES", DEFAULT_DEVICES)
    out = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        serial, _, rest = item.partition("=")
        state, model, abilist = (rest.split(":", 2) + ["", ""])[:3] if rest else ("device", "", "")
        out.append({"serial": serial, "state": state or "device", "model": model or "Pixel 4",
                    "abilist": abilist or "arm64-v8a,armeabi-v7a,armeabi"})
    return out


def root() -> Path:
    """The folder with the devices' file systems."""
    value = os.environ.get("FAKE_ADB_ROOT")
    if not value:
        fail("fake adb: FAKE_ADB_ROOT is not set", 2)
    return Path(value)


def lost(dev: dict) -> bool:
    """True once the device has answered FAKE_ADB_LOSE_AFTER shell commands."""
    limit = os.environ.get("FAKE_ADB_LOSE_AFTER")
    if limit is None:
        return False
    counter = root() / dev["serial"] / "shell_count"
    return counter.exists() and int(counter.read_text() or 0) >= int(limit)


def prepare(dev: dict) -> Path:
    """Create the device's folders, properties and cpufreq files on first use."""
    base = root() / dev["serial"]
    (base / "data/local/tmp").mkdir(parents=True, exist_ok=True)
    freqs = os.environ.get("FAKE_ADB_CPU_FREQS", DEFAULT_FREQS).split(",")
    for i, freq in enumerate(freqs):
        d = base / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpuinfo_max_freq").write_text(freq.strip() + "\n")
    cpuinfo = os.environ.get("FAKE_ADB_CPUINFO")
    (base / "proc").mkdir(exist_ok=True)
    (base / "proc/cpuinfo").write_text(Path(cpuinfo).read_text() if cpuinfo else "".join(
        f"processor\t: {i}\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
        f"asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x51\nCPU part\t: {'0x805' if i < 4 else '0x804'}\n\n"
        for i in range(len(freqs))))
    abis = dev["abilist"].split(",")
    props = {"ro.product.model": dev["model"], "ro.product.manufacturer": "Google",
             "ro.build.version.release": "13", "ro.build.version.sdk": "33",
             "ro.product.cpu.abi": abis[0], "ro.product.cpu.abilist": dev["abilist"]}
    (base / "props").write_text("".join(f"[{k}]: [{v}]\n" for k, v in props.items()))
    return base


def cmd_devices() -> None:
    """``adb devices -l``."""
    print("List of devices attached")
    for i, dev in enumerate(devices(), start=1):
        if lost(dev):
            continue
        if dev["state"] == "device":
            model = dev["model"].replace(" ", "_")
            extra = f" product:fake model:{model} device:fake transport_id:{i}"
        else:
            extra = f" usb:1-{i} transport_id:{i}"
        print(f"{dev['serial']:<22} {dev['state']}{extra}")
    print()


def pick(serial: str | None) -> dict:
    """The device a command addresses, failing as adb does."""
    present = [d for d in devices() if not lost(d)]
    if serial is not None:
        match = [d for d in present if d["serial"] == serial]
        if not match:
            fail(f"error: device '{serial}' not found")
        dev = match[0]
    elif not present:
        fail("error: no devices/emulators found")
    elif len(present) > 1:
        fail("error: more than one device/emulator")
    else:
        dev = present[0]
    if dev["state"] == "unauthorized":
        fail(UNAUTHORIZED)
    if dev["state"] == "offline":
        fail("error: device offline")
    return dev


def to_host(base: Path, remote: str) -> Path:
    """Map a device path to its place under the device folder."""
    return base / remote.lstrip("/")


def cmd_push(dev: dict, local: str, remote: str) -> None:
    """``adb push LOCAL REMOTE`` (a file, or a folder copied recursively)."""
    base = prepare(dev)
    src = Path(local)
    if not src.exists():
        fail(f"adb: error: cannot stat '{local}': No such file or directory")
    dst = to_host(base, remote)
    if remote.endswith("/") or dst.is_dir():
        dst = dst / src.name
    if not dst.parent.is_dir():
        fail(f"adb: error: failed to copy '{local}' to '{remote}': remote secure_mkdirs failed: No such file")
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
        count = sum(1 for p in src.rglob("*") if p.is_file())
    else:
        shutil.copy(src, dst)
        count = 1
    size = sum(p.stat().st_size for p in ([src] if src.is_file() else src.rglob("*")) if p.is_file())
    print(f"{local}: {count} file{'s' if count != 1 else ''} pushed, 0 skipped. 95.1 MB/s ({size} bytes in 0.001s)")


def cmd_pull(dev: dict, remote: str, local: str) -> None:
    """``adb pull REMOTE LOCAL``."""
    base = prepare(dev)
    src = to_host(base, remote)
    if not src.exists():
        fail(f"adb: error: failed to stat remote object '{remote}': No such file or directory")
    dst = Path(local)
    if dst.is_dir():
        dst = dst / src.name
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy(src, dst)
    print(f"{remote}: 1 file pulled, 0 skipped. 80.2 MB/s ({src.stat().st_size} bytes in 0.001s)")


def cmd_install(dev: dict, args: list[str]) -> int:
    """``adb install [-r] [-t] [-g] APK``: record the package on the device."""
    base = prepare(dev)
    apk = Path(args[-1]) if args else None
    if apk is None or not apk.is_file():
        fail(f"adb: failed to stat {apk}: No such file or directory")
    print("Performing Streamed Install")
    if apk.read_bytes()[:4] != b"PK\x03\x04":
        print(f"adb: failed to install {apk}: Failure [INSTALL_PARSE_FAILED_NOT_APK: Failed to parse {apk}]")
        return 1
    package = os.environ.get("FAKE_ADB_APK_PACKAGE", "dev.edgecomp.demo")
    packages = base / "packages"
    listed = packages.read_text().split() if packages.exists() else []
    packages.write_text("\n".join(sorted(set(listed) | {package})) + "\n")
    print("Success")
    return 0


def cmd_shell(dev: dict, command: str) -> int:
    """``adb shell CMD``: run CMD with /bin/sh inside the device folder; returns its status."""
    base = prepare(dev)
    counter = base / "shell_count"
    counter.write_text(str(int(counter.read_text() or 0) + 1 if counter.exists() else 1))
    hang = os.environ.get("FAKE_ADB_HANG_ON")
    if hang and hang in command:
        time.sleep(3600)
    for remote in ("/data/local/tmp", "/sys/devices/system/cpu", "/sdcard", "/proc/cpuinfo"):
        command = command.replace(remote, str(base) + remote)
    python = os.environ.get("FAKE_ADB_PYTHON", sys.executable)
    prelude = (
        'getprop() { if [ $# -eq 0 ]; then cat "$FAKE_PROPS"; else '
        'sed -n "s/^\\[$1\\]: \\[\\(.*\\)\\]$/\\1/p" "$FAKE_PROPS"; fi; }\n'
        'taskset() { echo "$1" >> "$FAKE_DEVICE/taskset.log"; shift; "$@"; }\n'
        'am() { "$FAKE_PYTHON" "$FAKE_ANDROID" am "$@"; }\n'
        'pm() { "$FAKE_PYTHON" "$FAKE_ANDROID" pm "$@"; }\n'
    )
    env = dict(os.environ, FAKE_PROPS=str(base / "props"), FAKE_DEVICE=str(base), FAKE_PYTHON=python,
               FAKE_ANDROID=str(Path(__file__).with_name("fake_android.py")),
               PATH=str(Path(python).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["/bin/sh", "-c", prelude + command], cwd=str(base), env=env, check=False)
    return proc.returncode


def main(argv: list[str]) -> int:
    """Dispatch one adb invocation."""
    serial = None
    if argv[:1] == ["-s"]:
        if len(argv) < 2:
            fail("adb: -s requires an argument")
        serial, argv = argv[1], argv[2:]
    if not argv:
        fail("adb: usage: no command specified")
    verb, args = argv[0], argv[1:]
    if verb == "devices":
        cmd_devices()
        return 0
    if verb == "version":
        print("Android Debug Bridge version 1.0.41\nVersion 29.0.6-fake")
        return 0
    dev = pick(serial)
    if verb == "push" and len(args) == 2:
        cmd_push(dev, *args)
        return 0
    if verb == "pull" and len(args) == 2:
        cmd_pull(dev, *args)
        return 0
    if verb == "shell":
        return cmd_shell(dev, " ".join(args))
    if verb == "install":
        return cmd_install(dev, args)
    if verb == "get-state":
        print(dev["state"])
        return 0
    fail(f"adb: unknown command {verb} (the fake implements devices, push, pull, shell, install)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
