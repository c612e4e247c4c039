"""Put a bundle on an Android phone for the demo app (android_demo/), through the adb layer.

The app reads bundles from its app-specific external files folder,
``/sdcard/Android/data/<package>/files/bundles/<name>/``, which adb may write without root. Only what
the app runs is pushed: ``edgecomp.json`` and the bundle's ``.tflite`` files, each checked against the
sha256 the manifest records. Files go to a ``<name>.partial`` folder that replaces ``<name>`` only when
every push succeeded, so the app never sees half a bundle. ``--apk`` installs (or updates) the app first.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

from edgecomp.android.adb import Adb
from edgecomp.bundle import MANIFEST_NAME, Manifest, read_manifest, sha256_of
from edgecomp.errors import ConfigError, DeviceError
from edgecomp.fsutil import contained

logger = logging.getLogger(__name__)

APP_PACKAGE = "dev.edgecomp.demo"
APP_FORMATS = ("tflite",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PACKAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")


def bundles_dir(package: str = APP_PACKAGE) -> str:
    """The device folder the app reads bundles from."""
    return f"/sdcard/Android/data/{package}/files/bundles"


@dataclass
class Deployment:
    """What was put on which device, and where."""

    serial: str
    package: str
    remote_dir: str
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    installed_apk: str | None = None


def app_files(bundle: Path, manifest: Manifest) -> list[tuple[Path, str]]:
    """(local file, path inside the bundle) of what the app needs, each checked against the manifest."""
    files = [(contained(bundle, MANIFEST_NAME), MANIFEST_NAME)]
    for entry in manifest.files:
        if entry.format not in APP_FORMATS:
            continue
        local = contained(bundle, entry.path)  # symbolic links resolved: nothing from outside the bundle
        if not local.is_file():
            raise ConfigError(f"the bundle lacks {entry.path}, which {MANIFEST_NAME} lists", "rebuild the bundle")
        if sha256_of(local) != entry.sha256:
            raise ConfigError(f"{entry.path} does not match the sha256 recorded in {MANIFEST_NAME}",
                              "the file changed after the build: rebuild the bundle")
        files.append((local, entry.path))
    if len(files) == 1:
        raise ConfigError(f"bundle {bundle} has no .tflite file for the app to run",
                          "build one with `edgecomp build --target android-arm64`")
    return files


def install_apk(adb: Adb, apk: Path, timeout_s: float = 300.0) -> None:
    """``adb install -r APK``; raises DeviceError with the package manager's reason on failure."""
    proc = adb.run(["install", "-r", str(apk)], timeout_s=timeout_s, check=False)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Success" not in text:
        reason = re.search(r"Failure \[([^\]]+)\]", text)
        raise DeviceError(f"installing {apk.name} failed: {reason[1] if reason else text.strip()[-300:]}",
                          "build the APK with `./gradlew assembleDebug` in android_demo/ (see its README); "
                          "INSTALL_FAILED_UPDATE_INCOMPATIBLE needs `adb uninstall " + APP_PACKAGE + "` first")
    logger.info("installed %s on %s", apk.name, adb.serial)


def deploy_bundle(bundle: str | Path, serial: str | None = None, *, apk: str | Path | None = None,
                  package: str = APP_PACKAGE, name: str | None = None, adb: Adb | None = None) -> Deployment:
    """Push ``bundle`` to the app's bundles folder on the device (installing ``apk`` first if given).

    ``adb`` may be an Adb already bound to the device (it is then used as is).
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    files = app_files(bundle, manifest)
    if apk is not None:
        apk = Path(apk)
        if not apk.is_file() or apk.suffix != ".apk":
            raise ConfigError(f"not an APK file: {apk}",
                              "pass the app built by `./gradlew assembleDebug` (app/build/outputs/apk/debug/)")
    name = name or bundle.resolve().name
    if not _NAME.match(name):
        raise ConfigError(f"bundle name '{name}' is not a plain folder name", "pass --name with letters, digits, ._-")
    if not _PACKAGE.match(package):
        raise ConfigError(f"'{package}' is not an Android package name", f"pass --package like {APP_PACKAGE}")
    remote = f"{bundles_dir(package)}/{name}"
    staging = f"{remote}.partial"
    for _, rel in files:  # FileEntry already refuses '..' and absolute paths; this says so on the device side
        if not posixpath.normpath(f"{staging}/{rel}").startswith(f"{staging}/"):
            raise ConfigError(f"{MANIFEST_NAME} names a file outside the bundle: {rel}", "rebuild the bundle")
    if adb is None or adb.serial is None or (serial and serial != adb.serial):
        adb = adb or Adb()
        adb.select(serial)
    if apk is not None:
        install_apk(adb, apk)
    folders = sorted({f"{staging}/{rel}".rsplit("/", 1)[0] for _, rel in files})
    try:
        adb.shell(f"rm -rf {quote(staging)} && mkdir -p {' '.join(map(quote, folders))}", timeout_s=30)
        for local, rel in files:
            adb.push(local, f"{staging}/{rel}", timeout_s=max(60.0, local.stat().st_size / 2e6))
        adb.shell(f"rm -rf {quote(remote)} && mv {quote(staging)} {quote(remote)}", timeout_s=30)
    except DeviceError:
        try:
            adb.shell(["rm", "-rf", staging], timeout_s=30, check=False)
        except DeviceError:
            logger.warning("could not remove %s from the device", staging)
        raise
    total = sum(local.stat().st_size for local, _ in files)
    logger.info("pushed %d files (%.2f MB) to %s:%s", len(files), total / 1e6, adb.serial, remote)
    return Deployment(serial=adb.serial or "", package=package, remote_dir=remote, files=[r for _, r in files],
                      bytes=total, installed_apk=str(apk) if apk is not None else None)
