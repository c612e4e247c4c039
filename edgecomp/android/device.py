"""Profile a .tflite model on an Android device over adb with TFLite's ``benchmark_model``.

The benchmark binary cannot be downloaded here, so the user supplies it (``--benchmark-binary``): the
prebuilt ``android_aarch64_benchmark_model`` from the TensorFlow/LiteRT "performance measurement" docs
(nightly builds), or ``bazel build -c opt --config=android_arm64
//tensorflow/lite/tools/benchmark:benchmark_model``. The run: push the model and the binary to a fresh
folder under /data/local/tmp, pin the threads to the big (or little, or all) cores with ``taskset``
(cores grouped by /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq), run it, parse its output, pull
the op-profiling CSV if one was asked for, and remove the folder, whatever happened.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgecomp.android.adb import Adb
from edgecomp.android.benchmark_output import BenchmarkResult, parse_benchmark_output
from edgecomp.errors import DeviceError

logger = logging.getLogger(__name__)

REMOTE_ROOT = "/data/local/tmp"
Cores = Literal["big", "little", "all"]
Delegate = Literal["xnnpack", "gpu", "nnapi", "none"]
_ELF_MACHINES = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}
BINARY_HINT = ("use the android_aarch64 benchmark_model from the TFLite performance-measurement docs, or build "
               "it: bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model")


@dataclass
class DeviceProfile:
    """What one device run measured, with where it ran and how."""

    source: str
    device: dict[str, str]
    threads: int
    cores: str
    cpu_mask: str | None
    delegate: str
    latency: dict[str, Any]
    per_op: list[dict[str, Any]] = field(default_factory=list)
    by_node_type: dict[str, float] = field(default_factory=dict)
    csv_path: str | None = None
    raw_output: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (without the raw output)."""
        out = asdict(self)
        out.pop("raw_output")
        return out


def elf_abi(path: Path) -> str | None:
    """The Android ABI an ELF executable is built for, or None if the file is not ELF (e.g. a script)."""
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return None
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine}")


def check_binary(binary: Path, device_abis: list[str]) -> None:
    """Fail early when the benchmark binary is missing or built for an ABI the device cannot run."""
    if not binary.is_file():
        raise DeviceError(f"benchmark binary not found: {binary}", BINARY_HINT)
    abi = elf_abi(binary)
    if abi is None:
        logger.warning("%s is not an ELF executable; running it anyway", binary)
        return
    if abi not in device_abis:
        raise DeviceError(
            f"{binary.name} is built for {abi} but the device runs {', '.join(device_abis)} (wrong ABI)",
            BINARY_HINT)


def core_mask(freqs: dict[int, int], cores: Cores) -> str | None:
    """Hex taskset mask of the big cores (all but the slowest cluster), the little ones, or None for all."""
    if cores == "all" or not freqs:
        return None
    slowest = min(freqs.values())
    chosen = [c for c, f in freqs.items() if (f > slowest) == (cores == "big")]
    if not chosen:  # one cluster only: every core is both big and little
        chosen = list(freqs)
    return format(sum(1 << c for c in chosen), "x")


def read_cpu_freqs(adb: Adb) -> dict[int, int]:
    """Map cpu number to cpuinfo_max_freq (kHz), read on the device; {} if cpufreq is not readable."""
    script = ("for d in /sys/devices/system/cpu/cpu[0-9]*; do "
              "echo \"${d##*/cpu} $(cat $d/cpufreq/cpuinfo_max_freq 2>/dev/null)\"; done")
    _, out = adb.shell(script, timeout_s=20, check=False)
    freqs = {}
    for line in out.splitlines():
        m = re.match(r"^(\d+)\s+(\d+)\s*$", line.strip())
        if m:
            freqs[int(m[1])] = int(m[2])
    return freqs


def benchmark_args(remote_model: str, threads: int, runs: int, warmup: int, delegate: Delegate,
                   op_profiling: bool, remote_csv: str | None) -> list[str]:
    """benchmark_model's command-line flags for one run."""
    args = [f"--graph={remote_model}", f"--num_threads={threads}", f"--num_runs={runs}",
            f"--warmup_runs={warmup}", f"--use_xnnpack={'true' if delegate == 'xnnpack' else 'false'}"]
    if delegate == "gpu":
        args.append("--use_gpu=true")
    elif delegate == "nnapi":
        args.append("--use_nnapi=true")
    if op_profiling:
        args.append("--enable_op_profiling=true")
        if remote_csv:
            args.append(f"--profiling_output_csv_file={remote_csv}")
    return args


def profile_on_device(model: str | Path, benchmark_binary: str | Path, serial: str | None = None, *,
                      threads: int = 4, runs: int = 50, warmup: int = 5, cores: Cores = "big",
                      delegate: Delegate = "xnnpack", op_profiling: bool = True, csv_out: str | Path | None = None,
                      timeout_s: float = 600.0, adb: Adb | None = None) -> DeviceProfile:
    """Run ``model`` on a device with ``benchmark_model`` and return the parsed measurement."""
    model, binary = Path(model), Path(benchmark_binary)
    if not model.is_file():
        raise DeviceError(f"model file not found: {model}", "check the path")
    if model.suffix != ".tflite":
        raise DeviceError(f"on-device profiling runs .tflite models, not {model.suffix or model.name}",
                          "export a .tflite first (edgecomp build --target android-arm64)")
    adb = adb or Adb()
    adb.select(serial)
    info = adb.describe()
    abis = adb.abis()
    check_binary(binary, abis)
    remote_dir = f"{REMOTE_ROOT}/edgecomp-{secrets.token_hex(4)}"
    remote_model = f"{remote_dir}/{model.name}"
    remote_bin = f"{remote_dir}/{binary.name}"
    remote_csv = f"{remote_dir}/op_profile.csv" if csv_out and op_profiling else None
    try:
        adb.shell(["mkdir", "-p", remote_dir], timeout_s=30)
        adb.push(model, remote_model, timeout_s=max(60.0, model.stat().st_size / 2e6))
        adb.push(binary, remote_bin, timeout_s=120)
        adb.shell(["chmod", "755", remote_bin], timeout_s=30)
        mask = core_mask(read_cpu_freqs(adb), cores)
        command = [remote_bin] + benchmark_args(remote_model, threads, runs, warmup, delegate, op_profiling,
                                                remote_csv)
        if mask is not None:
            status, _ = adb.shell("command -v taskset >/dev/null", timeout_s=20, check=False)
            if status == 0:
                command = ["taskset", mask] + command
            else:
                logger.warning("taskset is not available on the device; threads are not pinned")
                mask = None
        logger.info("running benchmark_model on %s (%s, %s cores, %d threads)", adb.serial, info["model"], cores,
                    threads)
        status, output = adb.shell(command, timeout_s=timeout_s, check=False)
        logger.debug("benchmark_model output:\n%s", output)
        if status != 0:
            tail = "\n".join(output.strip().splitlines()[-8:])
            raise DeviceError(f"benchmark_model exited with status {status} on {adb.serial}:\n{tail}",
                              "run it by hand with `adb shell` to see more; " + BINARY_HINT)
        result = parse_benchmark_output(output)
        csv_path = None
        if remote_csv:
            csv_path = str(adb.pull(remote_csv, Path(csv_out), timeout_s=60))
    finally:
        _cleanup(adb, remote_dir)
    return _to_profile(result, adb.serial or "", info, threads, cores, mask, delegate, csv_path, output)


def _cleanup(adb: Adb, remote_dir: str) -> None:
    try:
        adb.shell(["rm", "-rf", remote_dir], timeout_s=30, check=False)
    except DeviceError as exc:  # the device may be gone: nothing more to do
        logger.warning("could not remove %s from the device: %s", remote_dir, exc.message)


def _to_profile(result: BenchmarkResult, serial: str, info: dict[str, str], threads: int, cores: str,
                mask: str | None, delegate: str, csv_path: str | None, output: str) -> DeviceProfile:
    prof = result.run_profile
    per_op = [{"node_type": r.node_type, "name": r.name, "avg_ms": r.avg_ms, "percent": r.percent}
              for r in (prof.run_order if prof else [])]
    by_type = {r.node_type: r.avg_ms for r in (prof.by_node_type if prof else [])}
    return DeviceProfile(source=f"measured:device:{serial}", device=info, threads=threads, cores=cores,
                         cpu_mask=mask, delegate=delegate, latency=result.latency_ms(), per_op=per_op,
                         by_node_type=by_type, csv_path=csv_path, raw_output=output)
