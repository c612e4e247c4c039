"""``edgecomp profile --calibrate host``: fit this machine's ISA family on the built-in micro-benchmarks.

Each micro-benchmark (:mod:`edgecomp.profile.microbench`, fp32 and int8) is timed here with LiteRT
in this process, at 1 thread and at every thread count asked for, over a few shuffled rounds (the
fastest run counts: the cost on an unloaded machine). The host template is made this machine
(:func:`~edgecomp.profile.host_cpu.host_profile`), fitted (:func:`~edgecomp.profile.calibrate.fit_profile`),
and the fit stored as this machine's family in ``calibration.families`` of a copy of the template
written to the user's profiles folder, never into the installed package.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np

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
from edgecomp.profile.predict import read_tflite_layers
from edgecomp.targets import HardwareProfile, load_profile

logger = logging.getLogger(__name__)


def time_tflite(path: Path, threads: int, runs: int = 30, budget_s: float = 0.1) -> float:
    """Fastest of up to ``runs`` LiteRT invocations of ``path`` (ms) after a warm-up, in this process.

    With one thread XNNPACK runs in the calling thread, so its CPU time is the inference's cost without
    the time slices other processes take on a shared machine; with more, wall time.
    """
    from ai_edge_litert.interpreter import Interpreter

    from edgecomp.quiet import captured_output

    with captured_output("LiteRT"):
        interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        x = (rng.standard_normal(d["shape"]) if np.issubdtype(d["dtype"], np.floating)
             else rng.integers(-100, 100, d["shape"]))
        interp.set_tensor(d["index"], x.astype(d["dtype"]))
    for _ in range(2):
        interp.invoke()
    clock = time.thread_time if threads == 1 else time.perf_counter
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (time.perf_counter() - start < budget_s or len(times) < 3):
        t = clock()
        interp.invoke()
        times.append((clock() - t) * 1e3)
    return min(times)


def measure_microbench(threads: tuple[int, ...], rounds: int = 2, names: list[str] | None = None,
                       source: str = "measured:host") -> list[Measurement]:
    """Time every micro-benchmark at each thread count here; the fastest over ``rounds`` shuffled rounds."""
    files = microbench_files(names)
    keys = [(name, dtype, t) for (name, dtype) in files for t in threads]
    best = {key: float("inf") for key in keys}
    for r in range(rounds):
        random.Random(r).shuffle(keys)
        for name, dtype, t in keys:
            best[(name, dtype, t)] = min(best[(name, dtype, t)], time_tflite(files[(name, dtype)], t))
    layers = {key: read_tflite_layers(path) for key, path in files.items()}
    return [Measurement(f"microbench:{name}:{dtype}", layers[(name, dtype)][0], layers[(name, dtype)][1], t,
                        best[(name, dtype, t)], source) for (name, dtype, t) in sorted(best)]


def calibrate_host(name: str = "host", threads: tuple[int, ...] | None = None, rounds: int = 2,
                   out: Path | None = None) -> tuple[HardwareProfile, Path]:
    """Fit the host template ``name`` (``host`` = this machine's) to this machine's ISA family; write it to
    the user's profiles folder (or ``out``). Returns (the template with the new family entry, its path)."""
    info = read_host()
    if name == "host":
        name = HOST_PROFILES.get(info.arch, "host-x86")
    template = load_profile(name)
    machine = host_profile(template)
    threads = threads or tuple(sorted({1, min(2, info.cores)}))
    t0 = time.perf_counter()
    runs = measure_microbench(threads, rounds)
    fitted = fit_profile(machine, runs)
    entry = family_entry_of(fitted, f"{info.isa}, {info.model or 'unknown model'}, {info.cores} cores "
                                    f"(edgecomp profile --calibrate host, threads {list(threads)})")
    result = with_family(template, info.family, entry)
    path = write_profile(result, out or user_profile_path(template.name))
    logger.info("calibrated %s for %s on %d micro-benchmark runs in %.0f s", template.name, info.family, len(runs),
                time.perf_counter() - t0)
    return result, path
