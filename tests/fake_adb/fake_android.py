"""The ``am`` and ``pm`` commands of the fake adb's device shell, and the edgecomp demo app on it.

``pm list packages [FILTER]`` lists the packages ``adb install`` recorded in ``$FAKE_DEVICE/packages``
(plus ``$FAKE_ADB_PACKAGES``, comma-separated, installed from the start). ``am start [-S] [-W] -n
PKG/.BenchmarkActivity --es/--ei KEY VALUE...`` plays the app's BenchmarkActivity: it reads the
bundle's edgecomp.json, runs the .tflite with the LiteRT interpreter on the host (warm-up, then timed
runs on an all-zero input, as the app does) and writes the result file the app writes, atomically.
``FAKE_APP_NO_RESULT=1`` makes the activity start and never write (an app that hangs or crashes).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RESULT_VERSION = 1


def installed() -> list[str]:
    """Packages on the fake device."""
    path = Path(os.environ["FAKE_DEVICE"]) / "packages"
    listed = path.read_text().split() if path.exists() else []
    return listed + [p for p in os.environ.get("FAKE_ADB_PACKAGES", "").split(",") if p]


def prop(name: str) -> str:
    """A property of the fake device."""
    for line in (Path(os.environ["FAKE_DEVICE"]) / "props").read_text().splitlines():
        if line.startswith(f"[{name}]: ["):
            return line.split("]: [", 1)[1].rstrip("]")
    return ""


def pm(args: list[str]) -> int:
    """``pm list packages [FILTER]``."""
    if args[:2] != ["list", "packages"]:
        print(f"fake pm: unsupported: {' '.join(args)}", file=sys.stderr)
        return 1
    needle = args[2] if len(args) > 2 else ""
    for package in installed():
        if needle in package:
            print(f"package:{package}")
    return 0


def benchmark(extras: dict[str, str]) -> dict:
    """What BenchmarkActivity computes and writes (see android_demo/.../BenchmarkReport.kt)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    bundle = Path(extras["bundle"])
    manifest = json.loads((bundle / "edgecomp.json").read_text())
    wanted = extras.get("file")
    entry = next((f for f in manifest["files"] if f["format"] == "tflite" and wanted in (None, f["path"])), None)
    if entry is None:
        raise FileNotFoundError(f"no .tflite file '{wanted}' in the bundle")
    threads, runs, warmup = int(extras.get("threads", 4)), int(extras.get("runs", 50)), int(extras.get("warmup", 5))
    start = time.perf_counter()
    interpreter = Interpreter(model_path=str(bundle / entry["path"]), num_threads=threads)
    interpreter.allocate_tensors()
    init_ms = (time.perf_counter() - start) * 1e3
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return {"result_version": RESULT_VERSION, "status": "ok", "model": manifest["model"]["name"],
            "file": entry["path"], "runtime": "litert", "delegate": "xnnpack", "threads": threads,
            "warmup": warmup, "runs": runs, "init_ms": init_ms, "times_ms": times,
            "p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(np.mean(times)),
            "device": {"model": prop("ro.product.model"), "manufacturer": prop("ro.product.manufacturer"),
                       "android": prop("ro.build.version.release"), "abi": prop("ro.product.cpu.abi")}}


def am(args: list[str]) -> int:
    """``am start [-S] [-W] -n COMPONENT [--es K V] [--ei K N]...``."""
    if args[:1] != ["start"]:
        print(f"fake am: unsupported: {' '.join(args)}", file=sys.stderr)
        return 1
    component, extras, rest = "", {}, args[1:]
    while rest:
        flag = rest.pop(0)
        if flag == "-n":
            component = rest.pop(0)
        elif flag in ("--es", "--ei"):
            key, value = rest.pop(0), rest.pop(0)
            extras[key] = value
        elif flag not in ("-S", "-W"):
            print(f"fake am: unsupported flag {flag}", file=sys.stderr)
            return 1
    package, _, activity = component.partition("/")
    print(f"Starting: Intent {{ cmp={component}{' (has extras)' if extras else ''} }}")
    if package not in installed() or activity != ".BenchmarkActivity":
        full = package + activity if activity.startswith(".") else activity
        print(f"Error type 3\nError: Activity class {{{package}/{full}}} does not exist.")
        return 0
    if os.environ.get("FAKE_APP_NO_RESULT"):
        return 0
    try:
        result = benchmark(extras)
    except Exception as exc:  # noqa: BLE001 - the app reports any failure in its result file
        result = {"result_version": RESULT_VERSION, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    out = Path(extras.get("out") or Path(extras["bundle"]) / "benchmark.json")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    tool, argv = sys.argv[1], sys.argv[2:]
    sys.exit(am(argv) if tool == "am" else pm(argv))
