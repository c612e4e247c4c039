"""A small, reusable layer over the real ``adb`` executable (Debian package ``adb``).

Every call has a timeout, every expected failure is a :class:`DeviceError` with a hint: adb missing,
no device, several devices and no serial, unauthorized or offline device, a device lost mid-run, a
wrong ABI. Remote shell commands are built from argument lists with POSIX quoting, so paths with
spaces work; ``shell`` also returns the remote exit status, which old adb versions drop.

``EDGECOMP_ADB`` names the adb executable to use (the tests point it at a fake); otherwise ``adb`` is
looked up on ``PATH``.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgecomp.errors import DeviceError, did_you_mean

logger = logging.getLogger(__name__)

ADB_ENV = "EDGECOMP_ADB"
INSTALL_HINT = "install it with `apt-get install -y adb` (Debian/Ubuntu) or the Android SDK platform-tools"
_RC_MARK = "__EDGECOMP_RC="
_LOST = ("no devices/emulators found", "not found", "device offline", "error: closed", "protocol fault",
         "connection reset", "device still authorizing", "failed to get feature set")


@dataclass
class DeviceInfo:
    """One line of ``adb devices -l``: serial, state (device, unauthorized, offline, …) and attributes."""

    serial: str
    state: str
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """Model name as adb reports it (underscores for spaces), or ''."""
        return self.attributes.get("model", "")


def find_adb(explicit: str | None = None) -> str:
    """Path of the adb executable: ``explicit``, then ``$EDGECOMP_ADB``, then ``adb`` on PATH."""
    candidate = explicit or os.environ.get(ADB_ENV)
    if candidate:
        path = shutil.which(candidate) if os.sep not in candidate else candidate
        if path and os.access(path, os.X_OK) and Path(path).is_file():
            return path
        raise DeviceError(f"adb executable not found or not executable: {candidate}",
                          f"fix ${ADB_ENV} or {INSTALL_HINT}")
    path = shutil.which("adb")
    if path is None:
        raise DeviceError("adb is not installed (no `adb` on PATH)", INSTALL_HINT)
    return path


def parse_devices(text: str) -> list[DeviceInfo]:
    """Parse the output of ``adb devices -l`` (daemon start-up chatter and blank lines are skipped)."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "daemon")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        attrs = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        state = parts[1]
        if state == "no" and len(parts) > 2 and parts[2] == "permissions":  # "no permissions (user ...)"
            state = "no permissions"
        devices.append(DeviceInfo(serial=parts[0], state=state, attributes=attrs))
    return devices


def remote_quote(args: list[str] | str) -> str:
    """A remote shell command line: a string is passed as is, a list is POSIX-quoted argument by argument."""
    return args if isinstance(args, str) else " ".join(shlex.quote(str(a)) for a in args)


class Adb:
    """adb bound to one executable and (optionally) one device serial."""

    def __init__(self, serial: str | None = None, adb_path: str | None = None, timeout_s: float = 60.0) -> None:
        self.adb_path = find_adb(adb_path)
        self.serial = serial
        self.timeout_s = timeout_s

    # -- raw calls -------------------------------------------------------------------------------------
    def run(self, args: list[str], timeout_s: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``adb [-s SERIAL] ARGS`` with a timeout; map adb's error messages to :class:`DeviceError`."""
        cmd = [self.adb_path] + (["-s", self.serial] if self.serial else []) + list(args)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        logger.debug("adb: %s", " ".join(shlex.quote(c) for c in cmd))
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  errors="replace")
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(
                f"adb {' '.join(args[:2])} did not finish within {timeout:.0f} s (device {self.serial or '?'} "
                "lost or hung mid-run)",
                "check the cable and `adb devices`; raise the timeout for slow models",
            ) from exc
        except OSError as exc:
            raise DeviceError(f"cannot run adb at {self.adb_path}: {exc}", INSTALL_HINT) from exc
        if check and proc.returncode != 0:
            raise self._error(proc.stderr + proc.stdout, args)
        return proc

    def _error(self, text: str, args: list[str]) -> DeviceError:
        low = text.lower()
        who = f"device {self.serial}" if self.serial else "the device"
        if "more than one device" in low:
            return DeviceError("several devices are attached and no serial was given",
                               "pass one serial with --device SERIAL (`edgecomp devices` lists them)")
        if "unauthorized" in low:
            return DeviceError(f"{who} is unauthorized",
                               "unlock the phone and accept the 'Allow USB debugging' dialog, then retry")
        if "offline" in low:
            return DeviceError(f"{who} is offline", "reconnect the cable or run `adb reconnect`, then retry")
        if any(m in low for m in _LOST):
            return DeviceError(f"{who} is not reachable (disconnected or lost mid-run): {text.strip()[:200]}",
                               "reconnect it and check `adb devices`")
        return DeviceError(f"adb {' '.join(args[:2])} failed: {text.strip()[:300]}",
                           "run the same adb command by hand to see more")

    # -- devices -----------------------------------------------------------------------------------------
    def devices(self) -> list[DeviceInfo]:
        """All devices adb knows, whatever their state (``adb devices -l``)."""
        saved, self.serial = self.serial, None
        try:
            return parse_devices(self.run(["devices", "-l"], timeout_s=30).stdout)
        finally:
            self.serial = saved

    def select(self, serial: str | None = None) -> DeviceInfo:
        """Choose the device to use and bind this Adb to it; explain precisely when none is usable."""
        devices = self.devices()
        if serial:
            match = [d for d in devices if d.serial == serial]
            if not match:
                known = [d.serial for d in devices]
                raise DeviceError(
                    f"device '{serial}' is not attached." + did_you_mean(serial, known),
                    f"attached: {', '.join(known) or 'none'} (`edgecomp devices` lists them)")
            device = match[0]
        else:
            if not devices:
                raise DeviceError("no Android device is attached",
                                  "connect a phone with USB debugging enabled (Settings > Developer options) "
                                  "and check `adb devices`")
            ready = [d for d in devices if d.state == "device"]
            if len(devices) > 1 and len(ready) != 1:
                raise DeviceError(
                    f"{len(devices)} devices are attached ({', '.join(d.serial for d in devices)}) and no serial "
                    "was given", "pass one with --device SERIAL")
            device = ready[0] if ready else devices[0]
        self.serial = device.serial
        self._check_state(device)
        return device

    def _check_state(self, device: DeviceInfo) -> None:
        if device.state == "device":
            return
        if device.state == "unauthorized":
            raise DeviceError(f"device {device.serial} is unauthorized",
                              "unlock the phone and accept the 'Allow USB debugging' dialog, then retry")
        if device.state == "offline":
            raise DeviceError(f"device {device.serial} is offline",
                              "reconnect the cable or run `adb reconnect`, then retry")
        raise DeviceError(f"device {device.serial} is not ready (state: {device.state})",
                          "check `adb devices`; on Linux a 'no permissions' state needs udev rules")

    # -- file transfer and shell -------------------------------------------------------------------------
    def shell(self, args: list[str] | str, timeout_s: float | None = None, check: bool = True) -> tuple[int, str]:
        """Run a remote command; return (exit status, stdout+stderr). ``check`` raises on non-zero status."""
        command = f"({remote_quote(args)}); echo {_RC_MARK}$?"
        proc = self.run(["shell", command], timeout_s=timeout_s, check=False)
        match = re.search(re.escape(_RC_MARK) + r"(\d+)\s*$", proc.stdout)
        if match is None:  # the marker never came back: the connection dropped mid-command
            text = (proc.stdout + proc.stderr) or "no output (connection dropped)"
            raise self._error(text, ["shell", remote_quote(args)])
        status = int(match[1])
        out = proc.stdout[: match.start()] + proc.stderr
        if check and status != 0:
            raise DeviceError(f"remote command failed with status {status}: {remote_quote(args)[:200]}\n"
                              f"{out.strip()[-800:]}", "see the output above")
        return status, out

    def push(self, local: str | Path, remote: str, timeout_s: float | None = None) -> None:
        """Copy a local file or folder to the device (``adb push``)."""
        local = Path(local)
        if not local.exists():
            raise DeviceError(f"nothing to push: {local} does not exist", "check the path")
        self.run(["push", str(local), remote], timeout_s=timeout_s)

    def pull(self, remote: str, local: str | Path, timeout_s: float | None = None) -> Path:
        """Copy a device file or folder to ``local`` (``adb pull``)."""
        self.run(["pull", remote, str(local)], timeout_s=timeout_s)
        return Path(local)

    def getprop(self, name: str) -> str:
        """A system property (``getprop NAME``), '' when unset."""
        return self.shell(["getprop", name], timeout_s=20)[1].strip()

    def abis(self) -> list[str]:
        """ABIs the device runs, best first (``ro.product.cpu.abilist``, else ``ro.product.cpu.abi``)."""
        abilist = self.getprop("ro.product.cpu.abilist")
        return [a for a in abilist.split(",") if a] or [self.getprop("ro.product.cpu.abi")]

    def describe(self) -> dict[str, str]:
        """Model, manufacturer, Android version and ABI of the bound device."""
        return {
            "serial": self.serial or "",
            "model": self.getprop("ro.product.model"),
            "manufacturer": self.getprop("ro.product.manufacturer"),
            "android": self.getprop("ro.build.version.release"),
            "abi": self.abis()[0],
        }
