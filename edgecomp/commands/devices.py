"""`edgecomp devices`: list attached Android devices (adb devices -l) with model, Android version and ABI."""

from __future__ import annotations

import argparse
import json

NAME = "devices"
HELP = "list attached Android devices (via adb) with model, Android version and ABI"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `edgecomp devices`."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print one line per device; devices that are not ready show their state and what to do."""
    from edgecomp.android.adb import Adb
    from edgecomp.errors import DeviceError

    adb = Adb(timeout_s=20)
    rows = []
    for dev in adb.devices():
        row = {"serial": dev.serial, "state": dev.state, "model": dev.model.replace("_", " "), "android": "",
               "abi": ""}
        if dev.state == "device":
            try:
                info = Adb(serial=dev.serial, adb_path=adb.adb_path, timeout_s=20).describe()
                row.update(model=info["model"] or row["model"], android=info["android"], abi=info["abi"])
            except DeviceError as exc:
                row["state"] = f"error: {exc.message}"
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no Android devices attached (connect one with USB debugging enabled; `adb devices` shows it)")
        return 0
    print(f"{'SERIAL':22s} {'STATE':14s} {'MODEL':20s} {'ANDROID':8s} ABI")
    for r in rows:
        print(f"{r['serial']:22s} {r['state']:14s} {r['model']:20s} {r['android']:8s} {r['abi']}")
    return 0
