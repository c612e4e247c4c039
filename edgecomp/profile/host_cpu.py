"""The vector peaks of the x86-64 machine edgecomp runs on, read from ``/proc/cpuinfo``.

The calibrated ``host-x86`` profile describes one development machine; another x86-64 machine (with
wider vectors or int8 dot-product instructions) has other peaks, and the per-op efficiencies fitted on
one are meaningless against the other's. :func:`host_profile` gives a profile the peaks of this CPU so
that a calibration on this machine fits efficiencies, not the ISA difference.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from edgecomp.targets import HardwareProfile


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (or in the text given); empty if unknown."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    for line in cpuinfo.splitlines():
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


def describe_host(cpuinfo: str | None = None) -> str:
    """This machine's architecture, vector ISA and CPU model, e.g. ``x86-64 AVX-512 VNNI, AMD EPYC``.

    Host timings differ several-fold between ISAs (int8 with and without VNNI, say), so every host number
    is reported with this line.
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith(("model name", "Model", "Hardware")) and ":" in line), "")
    flags = cpu_flags(cpuinfo)
    features = next((set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines()
                     if line.startswith("Features") and ":" in line), None)
    if flags or (features is None and platform.machine() in ("x86_64", "AMD64")):
        isa = "x86-64 " + vector_peaks(flags)[2]
    elif features is not None or platform.machine() in ("aarch64", "arm64"):
        extras = [name for flag, name in (("asimddp", "dotprod"), ("i8mm", "i8mm"), ("sve", "SVE"))
                  if flag in (features or set())]
        isa = " ".join(["arm64 NEON", *extras])
    else:
        isa = platform.machine() or "unknown CPU"
    return f"{isa}, {model}" if model else isa


def host_profile(profile: HardwareProfile, cpuinfo: str | None = None) -> HardwareProfile:
    """``profile`` with this machine's core count and vector peaks (x86-64 only; otherwise unchanged).

    The clock stays the profile's: a virtual machine reports its nominal clock, not the boost clock
    the cores run at.
    """
    flags = cpu_flags(cpuinfo)
    if not flags or (cpuinfo is None and platform.machine() not in ("x86_64", "AMD64")):
        return profile
    fp32, int8, isa = vector_peaks(flags)
    cores = profile.cores.model_copy(update={"count": os.cpu_count() or profile.cores.count,
                                             "fp32_flops_per_cycle": fp32, "int8_ops_per_cycle": int8})
    # XNNPACK's micro-kernels compute 16 output channels at a time (fp32 on AVX2 and AVX-512, int8 with
    # AVX-512 VNNI), 8 with AVX2 int8; 7 output pixels per call on AVX-512 (7x16 kernels:
    # 28 of 32 zmm registers hold the accumulators), 4 on AVX2; int8 kernels consume 8 input channels at
    # a time (the c8 in the qs8 7x16c8 and 3x8c8 kernels)
    tile = {"fp32": 16, "int8": 16 if fp32 == 64 and "VNNI" in isa else 8}
    rows = 7 if fp32 == 64 else 4
    description = f"This machine: x86-64 with {isa}, {cores.count} cores"
    return profile.model_copy(update={"cores": cores, "description": description, "gemm_tile": tile,
                                      "gemm_rows": rows, "gemm_kr": {"int8": 8}})
