"""Profile a bundle on an Android device through the demo app's BenchmarkActivity (no benchmark_model).

The bundle is deployed (:mod:`edgecomp.android.deploy`), then started with
``am start -S -n <package>/.BenchmarkActivity --es bundle DIR --es file F --ei runs N --ei threads T
--ei warmup W --es out RESULT``. The app runs W warm-up and N timed inferences with LiteRT (XNNPACK) and
writes RESULT atomically; this module waits for it (with a timeout), pulls it and turns it into a
:class:`~edgecomp.profile.host.Latency` labelled ``measured:device:<serial>``.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecomp.android.adb import Adb
from edgecomp.android.deploy import APP_PACKAGE, deploy_bundle
from edgecomp.bundle import MANIFEST_NAME
from edgecomp.errors import ConfigError, DeviceError
from edgecomp.records import Latency

logger = logging.getLogger(__name__)

ACTIVITY = ".BenchmarkActivity"
RESULT_VERSION = 1
RESULT_FIELDS = ("result_version", "status", "file", "threads", "warmup", "runs", "init_ms", "times_ms", "device")
APP_HINT = "install the app built from this edgecomp's android_demo/ (its result file is malformed)"
INSTALL_HINT = "install the app: `edgecomp deploy --device SERIAL BUNDLE --apk app-debug.apk` (android_demo/README.md)"


@dataclass
class AppProfile:
    """One benchmark run of the app: latency, the device, and the app's own result file."""

    latency: Latency
    device: dict[str, str]
    remote_bundle: str
    file: str
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The shape `edgecomp profile` prints and writes (like a benchmark_model run's)."""
        return {"source": self.latency.source, "via": "app", "device": self.device, "threads": self.latency.threads,
                "file": self.file, "remote_bundle": self.remote_bundle,
                "latency": self.latency.model_dump(exclude={"source", "threads"})}


def find_bundle(path: str | Path) -> tuple[Path, str | None]:
    """(bundle folder, .tflite name in it) for a bundle folder (name None: the app's choice) or a file in one."""
    path = Path(path)
    if path.is_dir():
        bundle, name = path, None
    elif path.suffix == ".tflite":
        bundle, name = path.parent, path.name
    else:
        raise ConfigError(f"--via app runs a bundle's .tflite, not {path.name}", "pass a bundle folder or its .tflite")
    if not (bundle / MANIFEST_NAME).is_file():
        raise ConfigError(f"{path} is not in a bundle (no {MANIFEST_NAME} beside it)",
                          "build one with `edgecomp build --target android-arm64`, or profile with --benchmark-binary")
    return bundle, name


def parse_result(data: dict[str, Any], serial: str) -> Latency:
    """The app's result file as a Latency; DeviceError when the app failed, wrote another version or bad fields.

    Times must be finite and non-negative, ``runs`` must equal the number of times, ``threads`` be 1 or more.
    """
    if not isinstance(data, dict):
        raise DeviceError(f"the app's result is a JSON {type(data).__name__}, not an object", APP_HINT)
    if data.get("result_version") != RESULT_VERSION:
        raise DeviceError(f"the app wrote result version {data.get('result_version')}, edgecomp reads "
                          f"{RESULT_VERSION}", "install the app built from this edgecomp's android_demo/")
    if data.get("status") != "ok":
        raise DeviceError(f"the app's benchmark failed on {serial}: {data.get('error', 'no reason given')}",
                          "check the bundle, or watch `adb logcat -s edgecomp`")
    missing = [k for k in RESULT_FIELDS if k not in data]
    if missing or not data.get("times_ms"):
        raise DeviceError(f"the app's result lacks {missing or ['timed runs']}", APP_HINT)
    times = _numbers(data["times_ms"], "times_ms")
    init_ms = _numbers([data["init_ms"]], "init_ms")[0]
    runs, threads = _count(data["runs"], "runs"), _count(data["threads"], "threads")
    if not isinstance(data["device"], dict):
        raise DeviceError("the app's result field device is not an object", APP_HINT)
    if runs != times.size:
        raise DeviceError(f"the app's result says runs={runs} but holds {times.size} times_ms", APP_HINT)
    return Latency(p50_ms=float(np.percentile(times, 50)), p90_ms=float(np.percentile(times, 90)),
                   mean_ms=float(times.mean()), std_ms=float(times.std()), init_ms=float(init_ms),
                   runs=int(times.size), threads=threads, source=f"measured:device:{serial}")


def _numbers(values: Any, name: str) -> np.ndarray:
    """The app's ``name`` as finite non-negative float64 milliseconds; DeviceError naming the field otherwise."""
    bad = DeviceError(f"the app's result field {name} holds {str(values)[:80]}, not finite times of 0 ms or more",
                      APP_HINT)
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise bad
    times = np.asarray(values, dtype=np.float64)
    if times.ndim != 1 or not bool(np.isfinite(times).all()) or bool((times < 0).any()):
        raise bad
    return times


def _count(value: Any, name: str) -> int:
    """The app's ``name`` as a whole number of 1 or more; DeviceError naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DeviceError(f"the app's result field {name} is {value!r}, not a whole number of 1 or more", APP_HINT)
    return value


def _wait_for(adb: Adb, remote: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if adb.shell(["test", "-f", remote], timeout_s=30, check=False)[0] == 0:
            return
        if time.monotonic() > deadline:
            raise DeviceError(f"the app wrote no benchmark result within {timeout_s:.0f} s on {adb.serial}",
                              "watch `adb logcat -s edgecomp` while it runs; raise --timeout for slow models")
        time.sleep(poll_s)


def profile_via_app(model: str | Path, serial: str | None = None, *, threads: int = 4, runs: int = 50,
                    warmup: int = 5, timeout_s: float = 600.0, package: str = APP_PACKAGE, poll_s: float = 0.5,
                    adb: Adb | None = None) -> AppProfile:
    """Deploy the bundle holding ``model`` and time it with the app's BenchmarkActivity on the device."""
    if runs < 1 or warmup < 0 or threads < 1:
        raise ConfigError("runs and threads must be at least 1, warmup 0 or more", "")
    bundle, file_name = find_bundle(model)
    adb = adb or Adb()
    adb.select(serial)
    _, packages = adb.shell(["pm", "list", "packages", package], timeout_s=30, check=False)
    if f"package:{package}" not in packages.split():
        raise DeviceError(f"the edgecomp demo app ({package}) is not installed on {adb.serial}", INSTALL_HINT)
    deployment = deploy_bundle(bundle, adb.serial, package=package, adb=adb)
    remote_out = f"{deployment.remote_dir}/benchmark-{secrets.token_hex(4)}.json"
    command = ["am", "start", "-S", "-n", f"{package}/{ACTIVITY}", "--es", "bundle", deployment.remote_dir,
               "--ei", "runs", str(runs), "--ei", "threads", str(threads), "--ei", "warmup", str(warmup),
               "--es", "out", remote_out] + (["--es", "file", file_name] if file_name else [])
    logger.info("benchmarking %s in the app on %s (%d threads, %d runs)", bundle.name, adb.serial, threads, runs)
    try:
        status, out = adb.shell(command, timeout_s=60, check=False)
        if status != 0 or any(line.startswith("Error") for line in out.splitlines()):
            raise DeviceError(f"am start of {package}/{ACTIVITY} failed: {out.strip()[-300:]}", INSTALL_HINT)
        _wait_for(adb, remote_out, timeout_s, poll_s)
        with tempfile.TemporaryDirectory() as tmp:
            text = adb.pull(remote_out, Path(tmp) / "result.json", timeout_s=60).read_text()
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DeviceError(f"the app's result file is not JSON: {text[:200]!r}",
                              "install the app built from this edgecomp's android_demo/") from exc
    finally:
        try:
            adb.shell(["rm", "-f", remote_out], timeout_s=30, check=False)
        except DeviceError as exc:
            logger.warning("could not remove %s: %s", remote_out, exc.message)
    latency = parse_result(data, adb.serial or "")
    device = {"serial": adb.serial or "", **{str(k): str(v) for k, v in data["device"].items()}}
    return AppProfile(latency=latency, device=device, remote_bundle=deployment.remote_dir,
                      file=str(data.get("file", file_name or "")), raw=data)
