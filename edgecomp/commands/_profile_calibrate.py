"""``edgecomp profile --calibrate NAME --device SERIAL``: fit a hardware profile on an attached phone.

The built-in micro-benchmarks (:mod:`edgecomp.profile.microbench`) run on the device with TFLite's
benchmark_model (:func:`edgecomp.android.device.profile_on_device`, pinned to the big cores). The starting
point is the profile ``NAME`` if one exists, else one made from the device: its cores and clocks
(cpufreq), its vector ISA (``/proc/cpuinfo``: NEON, dot-product, i8mm) and the host-arm64 priors. The
fitted profile goes to the user's profiles folder, from where ``--hardware NAME`` and ``--predict NAME``
find it.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from edgecomp.android.adb import Adb
from edgecomp.android.device import profile_on_device, read_cpu_freqs
from edgecomp.errors import ConfigError, DeviceError
from edgecomp.profile.calibrate import fit_profile, user_profile_path, write_profile
from edgecomp.profile.host_cpu import parse_cpuinfo
from edgecomp.profile.microbench import microbench_files
from edgecomp.profile.timed_runs import Round, time_rounds, to_measurements
from edgecomp.targets import PLAIN_NAME, CoreSpec, HardwareProfile, available, load_profile

logger = logging.getLogger(__name__)


def device_prior(name: str, adb: Adb) -> HardwareProfile:
    """A starting profile named ``name`` from what the device says: clusters from cpufreq's maximum clocks
    (a lone fastest core is the prime core), peaks from its /proc/cpuinfo features, host-arm64's priors."""
    import re

    if not re.fullmatch(PLAIN_NAME, name):
        raise ConfigError(f"'{name}' cannot name a profile", "use letters, digits, '.', '_' and '-'")
    _, text = adb.shell(["cat", "/proc/cpuinfo"], timeout_s=20, check=False)
    info = parse_cpuinfo(text, "aarch64")
    fp32, int8 = info.peaks()
    clusters = sorted(Counter(read_cpu_freqs(adb).values()).items(), reverse=True)  # (kHz, count), fastest first
    spec = lambda khz, n: CoreSpec(count=n, clock_ghz=khz / 1e6, fp32_flops_per_cycle=fp32,
                                   int8_ops_per_cycle=int8)
    prime = None
    if len(clusters) >= 3 and clusters[0][1] == 1:  # 1 prime + big + little: threads use prime, then big
        prime, clusters = spec(*clusters[0]), clusters[1:]
    cores = spec(*clusters[0]) if clusters else CoreSpec(count=max(info.cores, 1), clock_ghz=2.0,
                                                        fp32_flops_per_cycle=fp32, int8_ops_per_cycle=int8)
    template = load_profile("host-arm64")
    model = adb.describe().get("model", "an Android device")
    return template.model_copy(update={
        "name": name, "cores": cores, "prime_cores": prime,
        "description": f"{model} ({info.isa}), fitted on the device from edgecomp's micro-benchmarks",
        "gemm_kr": {"int8": 8 if "i8mm" in info.flags else 4 if "asimddp" in info.flags else 1},
        "calibration": {}})


def calibrate_device(name: str, serial: str | None, benchmark_binary: str | Path, threads: tuple[int, ...] = (1, 4),
                     runs: int = 20, warmup: int = 3, names: list[str] | None = None,
                     timeout_s: float = 600.0) -> tuple[HardwareProfile, Path]:
    """Run the micro-benchmarks on the device at each thread count, fit ``name`` to them and write it to the
    user's profiles folder. Returns the fitted profile and where it was written."""
    adb = Adb()
    device = adb.select(serial)
    prior = load_profile(name) if name in available("profiles") else device_prior(name, adb)
    if prior.arch != "arm64":
        raise ConfigError(f"{name} is an {prior.arch} profile; a phone calibrates arm64 profiles",
                          "pick another NAME for the phone's profile")
    files = microbench_files(names)
    if not files:
        raise DeviceError("no built-in micro-benchmarks found", "reinstall edgecomp (its package data is missing)")

    def on_device(path: Path, t: int) -> Round:  # benchmark_model's median of ``runs``: one figure
        result = profile_on_device(path, benchmark_binary, adb.serial, threads=t, runs=runs, warmup=warmup,
                                   op_profiling=False, timeout_s=timeout_s, adb=adb)
        ms = result.latency.get("p50_ms") or result.latency.get("mean_ms")
        if not ms:
            raise DeviceError(f"benchmark_model printed no latency for {path.name}", "run it by hand to see why")
        logger.info("%s, %d threads: %.3f ms", path.stem, t, ms)
        return Round([ms])

    timed = time_rounds(files, threads, on_device)
    measurements = to_measurements(files, timed, lambda key, t: f"microbench:{key[0]}:{key[1]}",
                                   f"measured:device:{device.serial}")
    fitted = fit_profile(prior, measurements)
    fitted = fitted.model_copy(update={"calibration": {**fitted.calibration, "device": device.serial,
                                                       "device_model": device.model or ""}})
    return fitted, write_profile(fitted, user_profile_path(name))
