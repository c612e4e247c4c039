"""`edgecomp deploy --device [SERIAL] BUNDLE [--apk APP.apk]`: put a bundle on a phone for the demo app.

Pushes the bundle's edgecomp.json and .tflite files to
/sdcard/Android/data/<package>/files/bundles/<name>/ (where android_demo/ reads bundles) through adb,
installing the app first when ``--apk`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "deploy"
HELP = "push a bundle to the Android demo app on a device over adb (and install the app with --apk)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `edgecomp deploy`."""
    from edgecomp.android.deploy import APP_PACKAGE

    p.add_argument("bundle", nargs="?", metavar="BUNDLE", help="bundle folder written by `edgecomp build`")
    p.add_argument("--device", nargs="?", const="", default="", metavar="SERIAL",
                   help="the device (default: the only one attached)")
    p.add_argument("--apk", metavar="APP.apk", help="install this build of android_demo/ first")
    p.add_argument("--name", help="folder name on the device (default: the bundle folder's name)")
    p.add_argument("--package", default=APP_PACKAGE, help=f"the app's package (default {APP_PACKAGE})")


def run(args: argparse.Namespace) -> int:
    """Deploy and say where the bundle went."""
    from edgecomp.android.deploy import deploy_bundle
    from edgecomp.errors import ConfigError

    bundle, serial = args.bundle, args.device or None
    if bundle is None and serial and Path(serial).is_dir():  # `--device BUNDLE`: argparse took it for the serial
        bundle, serial = serial, None
    if bundle is None:
        raise ConfigError("no bundle given", "edgecomp deploy --device [SERIAL] BUNDLE [--apk APP.apk]")
    result = deploy_bundle(bundle, serial, apk=args.apk, package=args.package, name=args.name)
    if result.installed_apk:
        print(f"installed {Path(result.installed_apk).name} on {result.serial}")
    print(f"pushed {', '.join(result.files)} ({result.bytes / 1e6:.2f} MB) to {result.serial}:{result.remote_dir}")
    print(f"open the app: adb -s {result.serial} shell am start -n {result.package}/.MainActivity")
    return 0
