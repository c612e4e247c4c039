"""The CPU edgecomp runs on, read from ``/proc/cpuinfo``: cores, clock, vector ISA and its peaks.

A host profile (``host-x86``, ``host-arm64``) is a template: :func:`host_profile` fills in this machine's
core count, clock and vector peaks, and takes the per-op efficiencies fitted for this machine's ISA
family (``x86-avx2``, ``x86-avx512-vnni``, ``arm64-dotprod``, ...) from the profile's
``calibration.families`` block, so that a profile fitted on one AVX-512 VNNI machine is not applied
unchanged to an AVX2 machine without VNNI. A family nobody fitted is an "uncalibrated prior", and says so.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecomp.targets import HardwareProfile

UNCALIBRATED = "uncalibrated prior"
# Keys of a family entry that are HardwareProfile fields (the rest is provenance).
_FAMILY_FIELDS = ("efficiency", "overhead_us", "thread_sync_us", "memory_bandwidth_gbs", "cache_bandwidth_gbs",
                  "small_k", "small_k_int8", "parallel_efficiency", "memory_parallel_efficiency", "gemm_tile", "gemm_rows",
                  "gemm_kr", "cache_mb", "l2_kb")


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about a machine: architecture, model, cores, clock and ISA features."""

    arch: str  # "x86_64" or "arm64" (or the platform's name for anything else)
    model: str
    cores: int
    clock_ghz: float | None
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def family(self) -> str:
        """The ISA family whose fitted efficiencies apply: ``x86-avx512-vnni``, ``arm64-i8mm``, ..."""
        if self.arch == "x86_64":
            width = "avx512" if "avx512f" in self.flags else "avx2" if "avx2" in self.flags else "sse"
            vnni = "avx512_vnni" in self.flags if width == "avx512" else "avx_vnni" in self.flags
            return f"x86-{width}" + ("-vnni" if vnni and width != "sse" else "")
        if self.arch == "arm64":
            return "arm64-i8mm" if "i8mm" in self.flags else "arm64-dotprod" if "asimddp" in self.flags \
                else "arm64-neon"
        return self.arch

    @property
    def isa(self) -> str:
        """The vector ISA in words, e.g. ``x86-64 AVX-512 VNNI`` or ``arm64 NEON dotprod i8mm``."""
        if self.arch == "x86_64":
            return "x86-64 " + vector_peaks(set(self.flags))[2]
        if self.arch == "arm64":
            extras = [name for flag, name in (("asimddp", "dotprod"), ("i8mm", "i8mm"), ("sve", "SVE"))
                      if flag in self.flags]
            return " ".join(["arm64 NEON", *extras])
        return self.arch or "unknown CPU"

    def peaks(self) -> tuple[float, float]:
        """(fp32 FLOP, int8 ops) per cycle of one core of this ISA."""
        if self.arch == "arm64":
            return arm_peaks(set(self.flags))
        fp32, int8, _ = vector_peaks(set(self.flags))
        return fp32, int8


def _read(path: str) -> str:
    p = Path(path)
    try:
        return p.read_text() if p.is_file() else ""
    except OSError:
        return ""


def parse_cpuinfo(text: str, machine: str | None = None) -> CpuInfo:
    """Parse a ``/proc/cpuinfo`` text (x86-64 ``flags`` or arm64 ``Features``) into a :class:`CpuInfo`.

    ``machine`` (``platform.machine()``) decides the architecture only when the text has neither.
    The clock is the one in an x86 model name (``@ 2.40GHz``), else the highest ``cpu MHz``; arm64
    cpuinfo has no clock (None).
    """
    lines = [line.split(":", 1) for line in text.splitlines() if ":" in line]
    pairs = [(k.strip(), v.strip()) for k, v in lines]
    flags = next((v.split() for k, v in pairs if k == "flags"), None)
    features = next((v.split() for k, v in pairs if k == "Features"), None)
    if flags is not None:
        arch = "x86_64"
    elif features is not None:
        arch = "arm64"
    else:
        m = (machine or "").lower()
        arch = "x86_64" if m in ("x86_64", "amd64") else "arm64" if m in ("aarch64", "arm64") else m
    model = next((v for k, v in pairs if k in ("model name", "Model", "Hardware") and v), "")
    cores = sum(1 for k, _ in pairs if k == "processor")
    clock = None
    found = re.search(r"@\s*([0-9.]+)\s*GHz", model)
    if found:
        clock = float(found.group(1))
    else:
        mhz = [float(v) for k, v in pairs if k == "cpu MHz" and re.fullmatch(r"[0-9.]+", v)]
        clock = max(mhz) / 1000 if mhz else None
    if not model and arch == "arm64":
        part = next((v for k, v in pairs if k == "CPU part"), "")
        model = _ARM_PARTS.get(part.lower(), f"Arm CPU part {part}" if part else "")
    return CpuInfo(arch, model, max(cores, 1), clock, frozenset(flags or features or ()))


# The Arm "CPU part" numbers of common cores (Arm's technical reference manuals, MIDR_EL1.PartNum).
_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd08": "Cortex-A72", "0xd0a": "Cortex-A75",
              "0xd0b": "Cortex-A76", "0xd0c": "Neoverse N1", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1",
              "0xd40": "Neoverse V1", "0xd49": "Neoverse N2", "0xd4f": "Neoverse V2"}


def read_host() -> CpuInfo:
    """This machine's :class:`CpuInfo` (``/proc/cpuinfo``; cores from ``os.cpu_count``; an arm64 clock from
    cpufreq's ``cpuinfo_max_freq``)."""
    info = parse_cpuinfo(_read("/proc/cpuinfo"), platform.machine())
    clock = info.clock_ghz
    if clock is None:
        khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
        clock = int(khz) / 1e6 if khz.isdigit() else None
    cores = os.cpu_count() or info.cores
    return CpuInfo(info.arch, info.model, cores, clock, info.flags)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (or in the text given); empty if unknown."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def vector_peaks(flags: set[str]) -> tuple[float, float, str]:
    """(fp32 FLOP per cycle, int8 ops per cycle, ISA name) of one x86-64 core with these flags.

    Two FMA pipes of the widest vector unit (fp32: 2 pipes x width/32 lanes x 2 FLOP); int8 with VNNI
    (``vpdpbusd``: 4 MACs per 32-bit lane) is 4x that in ops, without it 2x (``vpmaddubsw`` chains).
    """
    width = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    vnni = ("avx512_vnni" in flags) if width == 512 else ("avx_vnni" in flags)
    fp32 = width / 8
    isa = {512: "AVX-512", 256: "AVX2", 128: "SSE"}[width] + (" VNNI" if vnni else "")
    return fp32, fp32 * (4 if vnni else 2), isa


def arm_peaks(features: set[str]) -> tuple[float, float]:
    """(fp32 FLOP, int8 ops) per cycle of one arm64 core, assuming two 128-bit NEON FMA pipes (A76 and later,
    Neoverse N1): fp32 2 x 4 lanes x 2; int8 with ``sdot`` 4x that, with ``smmla`` (i8mm) 8x, else 2x."""
    fp32 = 16.0
    return fp32, fp32 * (8 if "i8mm" in features else 4 if "asimddp" in features else 2)


def describe_host(cpuinfo: str | None = None) -> str:
    """This machine's architecture, vector ISA and CPU model, e.g. ``x86-64 AVX-512 VNNI, AMD EPYC``.

    Host timings differ several-fold between ISAs (int8 with and without VNNI, say), so every host number
    is reported with this line.
    """
    info = read_host() if cpuinfo is None else parse_cpuinfo(cpuinfo, platform.machine())
    return f"{info.isa}, {info.model}" if info.model else info.isa


def _micro_kernels(info: CpuInfo) -> dict[str, Any]:
    """XNNPACK's GEMM micro-kernel shape on this ISA: output channels per tile, output pixels per block
    (mr) and input channels consumed at a time (kr)."""
    if info.arch == "arm64":  # 4x8 / 6x8 fp32 NEON kernels; int8 c4 (sdot) or c8 (i8mm) kernels, 16 wide
        return {"gemm_tile": {"fp32": 8, "int8": 16}, "gemm_rows": 6,
                "gemm_kr": {"int8": 8 if "i8mm" in info.flags else 4 if "asimddp" in info.flags else 1}}
    wide = "avx512f" in info.flags
    # 16 output channels (fp32 on AVX2 and AVX-512, int8 with AVX-512 VNNI), 8 with AVX2 int8; 7 output
    # pixels per call on AVX-512 (28 of 32 zmm registers hold accumulators), 4 on AVX2; int8 kernels
    # consume 8 input channels at a time (the c8 of the qs8 7x16c8 and 3x8c8 kernels). With AVX2, a layer of
    # fewer than 16 output channels runs one 8-lane register wide (XNNPACK's nr2 kernels): measured here, a
    # 3x3 convolution of 16 to 8 channels ran at 13.5 GMAC/s, 16 to 16 at 14.3, 16 to 24 at 11.0 (24 of 32 lanes)
    tile = {"fp32": 16, "int8": 16 if wide and "avx512_vnni" in info.flags else 8}
    if not wide:
        tile["fp32_narrow"] = 8
    return {"gemm_tile": tile, "gemm_rows": 7 if wide else 4, "gemm_kr": {"int8": 8}}


def family_entry(profile: HardwareProfile, family: str) -> dict[str, Any] | None:
    """The fitted values stored in ``profile`` for ISA ``family`` (``calibration.families``), or None."""
    entry = (profile.calibration.get("families") or {}).get(family)
    return entry if isinstance(entry, dict) else None


def host_profile(profile: HardwareProfile, cpuinfo: str | None = None) -> HardwareProfile:
    """``profile`` made this machine: its cores, clock and vector peaks, with the efficiencies fitted for its
    ISA family (or the profile's own values, labelled an uncalibrated prior, when nobody fitted that family).

    ``cpuinfo`` (a recorded ``/proc/cpuinfo``) stands for this machine in tests. A machine of another
    architecture than the profile's leaves it unchanged.
    """
    info = read_host() if cpuinfo is None else parse_cpuinfo(cpuinfo, platform.machine())
    if info.arch != profile.arch or (info.arch == "x86_64" and not info.flags):
        return profile
    fp32, int8 = info.peaks()
    entry = family_entry(profile, info.family)
    clock = info.clock_ghz or (entry or {}).get("clock_ghz") or profile.cores.clock_ghz
    cores = profile.cores.model_copy(update={"count": info.cores, "clock_ghz": clock,
                                             "fp32_flops_per_cycle": fp32, "int8_ops_per_cycle": int8})
    update: dict[str, Any] = {"cores": cores, "prime_cores": None, **_micro_kernels(info)}
    if entry is not None:
        update.update({k: entry[k] for k in _FAMILY_FIELDS if k in entry})
        fitted = f"efficiencies fitted for {info.family} on {entry.get('fitted_on', 'a machine of this family')}"
    else:
        fitted = (f"{UNCALIBRATED}: no efficiencies fitted for {info.family}; "
                  "run `edgecomp profile --calibrate host` to fit them here")
    model = f", {info.model}" if info.model else ""
    update["description"] = f"This machine: {info.isa}{model}, {info.cores} cores at {clock:g} GHz ({fitted})"
    calibration = dict(profile.calibration, isa_family=info.family, host=f"{info.isa}{model}")
    if entry is None:
        calibration["status"] = UNCALIBRATED
    else:
        calibration.pop("status", None)
        calibration.update({k: entry[k] for k in ("fitted_at", "median_abs_error_pct") if k in entry})
    update["calibration"] = calibration
    return profile.model_copy(update=update)


HOST_PROFILES = {"x86_64": "host-x86", "arm64": "host-arm64"}


def resolve_profile(name_or_path: str) -> HardwareProfile:
    """Load a hardware profile as :func:`edgecomp.targets.load_profile` does, except that ``host`` names this
    machine's host profile and a host profile (``host-x86``, ``host-arm64``) is made this machine
    (:func:`host_profile`)."""
    from edgecomp.targets import load_profile

    if name_or_path == "host":
        name_or_path = HOST_PROFILES.get(read_host().arch, "host-x86")
    profile = load_profile(name_or_path)
    return host_profile(profile) if profile.name in HOST_PROFILES.values() else profile
