"""``edgecomp profile --calibrate host``: fit this machine's ISA family on the built-in micro-benchmarks.

Each micro-benchmark (:mod:`edgecomp.profile.microbench`, fp32 and int8) is timed here with LiteRT
in this process, at 1 thread and at every thread count asked for, over a few shuffled rounds
(:mod:`edgecomp.profile.timed_runs`; the fastest run counts: the cost on an unloaded machine). The host
template is made this machine (:func:`~edgecomp.profile.host_cpu.host_profile`), fitted
(:func:`~edgecomp.profile.calibrate.fit_profile`), and the fit stored as this machine's family in ``calibration.families`` of a copy of the template
written to the user's profiles folder, never into the installed package.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edgecomp.profile.calibrate import (
    Measurement,
    family_entry_of,
    fit_profile,
    user_profile_path,
    with_family,
    write_profile,
)
from edgecomp.profile.host_cpu import HOST_PROFILES, host_profile, read_host
from edgecomp.profile.microbench import microbench_files
from edgecomp.profile.timed_runs import time_rounds, time_tflite, to_measurements
from edgecomp.targets import HardwareProfile, load_profile

logger = logging.getLogger(__name__)


def measure_microbench(threads: tuple[int, ...], rounds: int = 2, names: list[str] | None = None,
                       source: str = "measured:host") -> list[Measurement]:
    """Time every micro-benchmark at each thread count here; the fastest over ``rounds`` shuffled rounds."""
    files = microbench_files(names)
    timed = time_rounds(files, threads, time_tflite, rounds)
    return to_measurements(files, timed, lambda key, t: f"microbench:{key[0]}:{key[1]}", source,
                           drop_contended=True)


def calibrate_host(name: str = "host", threads: tuple[int, ...] | None = None, rounds: int = 2,
                   out: Path | None = None) -> tuple[HardwareProfile, Path]:
    """Fit the host template ``name`` (``host`` = this machine's) to this machine's ISA family; write it to
    the user's profiles folder (or ``out``). Returns (the template with the new family entry, its path)."""
    info = read_host()
    if name == "host":
        name = HOST_PROFILES.get(info.arch, "host-x86")
    template = load_profile(name)
    threads = threads or tuple(sorted({1, min(2, info.cores)}))
    t0 = time.perf_counter()
    runs = measure_microbench(threads, rounds)
    _, result = fit_host_family(template, runs, f"edgecomp profile --calibrate host, threads {list(threads)}")
    path = write_profile(result, out or user_profile_path(template.name))
    logger.info("calibrated %s for %s on %d micro-benchmark runs in %.0f s", template.name, info.family, len(runs),
                time.perf_counter() - t0)
    return result, path


def fit_host_family(template: HardwareProfile, measurements: list[Measurement],
                    how: str) -> tuple[HardwareProfile, HardwareProfile]:
    """Fit the host ``template``, made this machine, to ``measurements`` taken here.

    Returns the fitted machine profile and the template with the fit stored as this machine's ISA family
    entry (``calibration.families``), its ``fitted_on`` naming the machine and ``how`` it was fitted.
    """
    info = read_host()
    fitted = fit_profile(host_profile(template), measurements)
    entry = family_entry_of(fitted, f"{info.isa}, {info.model or 'unknown model'}, {info.cores} cores ({how})")
    return fitted, with_family(template, info.family, entry)
