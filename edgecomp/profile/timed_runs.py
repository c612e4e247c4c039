"""Time .tflite graphs at several thread counts and turn the times into calibration measurements.

One measuring loop for every caller: ``edgecomp profile --calibrate host``
(:mod:`edgecomp.profile.host_calibrate`, LiteRT in this process), ``--calibrate NAME --device SERIAL``
(``benchmark_model`` over adb) and ``benchmarks/predictor.py``. :func:`time_rounds` times every
(file, thread count) once per round, in a shuffled order, so that all of them see the same load on a
shared machine; a :class:`Timed` keeps each round's fastest and median run. The fastest run over the
rounds is the cost on an unloaded machine (load only ever adds time: on the shared 2-core virtual machine
this was written on, a round's median drifted by up to 20 % between sessions minutes apart, the fastest
run by 0.1 % in the median model); how far the rounds' medians lie above it says how loaded the machine
was. Runs on several threads are timed by the wall clock, so a round during which the process did not have
a CPU for each thread (its CPU time over the wall time says so) does not count, and a file none of whose
rounds had them is marked ``contended``. :func:`to_measurements` reads each file's layers once and
makes the :class:`~edgecomp.profile.calibrate.Measurement` list the fit takes.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgecomp.profile.calibrate import Measurement
from edgecomp.profile.predict import read_tflite_layers

logger = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
# A round on N threads during which the process used less than this share of N CPUs was contended: another
# process held a core, so a thread waited for it. Judged over the whole round, not per run: Linux books the CPU
# time of a thread running on another core only at scheduler ticks (4 ms), longer than many runs.
CLEAN_CPU_SHARE = 0.6


@dataclass
class Round:
    """One round of one file at one thread count: the times (ms) of its runs, or one figure a tool reported;
    ``clean`` is False when the process did not have a CPU for each thread during the round."""

    times: list[float]
    clean: bool = True


Timer = Callable[[Path, int], Round]


@dataclass
class Timed:
    """The times of one file at one thread count over the rounds: each round's fastest and median run."""

    fastest: list[float] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)

    def add(self, round_: Round) -> None:
        """Record one round."""
        self.fastest.append(min(round_.times))
        self.medians.append(float(statistics.median(round_.times)))
        self.clean.append(round_.clean)

    @property
    def contended(self) -> bool:
        """True when no round had a CPU for every thread: the time is a loaded machine's."""
        return not any(self.clean)

    def _kept(self, values: list[float]) -> list[float]:
        return [v for v, c in zip(values, self.clean) if c] or values

    @property
    def ms(self) -> float:
        """The fastest run of the uncontended rounds (ms): the cost on an unloaded machine."""
        return min(self._kept(self.fastest))

    @property
    def load_excess(self) -> float:
        """How much slower the best round's median is than the fastest run (0.05 = 5 %): the noise left."""
        return min(self._kept(self.medians)) / self.ms - 1


def process_cpu_s() -> float:
    """CPU seconds this process's threads have used so far (all threads together)."""
    return time.process_time()


def time_tflite(path: Path, threads: int, runs: int = 30, budget_s: float = 0.1, warmup: int = 2) -> Round:
    """Up to ``runs`` LiteRT invocations of ``path`` in this process, after ``warmup``: at least 3, then as
    many as fit in ``budget_s``.

    With one thread XNNPACK runs in the calling thread, so its CPU time is the inference's cost without the
    time slices other processes take on a shared machine. With more, wall time, and the round is marked
    contended (``clean`` False) when the process had less than ``CLEAN_CPU_SHARE`` of ``threads`` CPUs over
    it: another process held a core, so a thread waited (and the others did its share, or waited for it).
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
    for _ in range(warmup):
        interp.invoke()
    clock = time.thread_time if threads == 1 else time.perf_counter
    times: list[float] = []
    cpu, start = process_cpu_s(), time.perf_counter()
    while len(times) < runs and (time.perf_counter() - start < budget_s or len(times) < 3):
        t = clock()
        interp.invoke()
        times.append((clock() - t) * 1e3)
    cpus = (process_cpu_s() - cpu) / max(time.perf_counter() - start, 1e-9)  # CPUs the process had, on average
    return Round(times, clean=threads == 1 or cpus >= CLEAN_CPU_SHARE * threads)


def time_rounds(files: Mapping[K, Path], threads: Sequence[int], timer: Timer = time_tflite,
                rounds: int = 1, extra_rounds: int = 0) -> dict[tuple[K, int], Timed]:
    """Time every file at every thread count once per round, in a new shuffled order each round; then, for up
    to ``extra_rounds`` more rounds, only those with no uncontended run yet (a quieter moment may come).

    Returns (file key, threads) -> :class:`Timed`, in the order of ``files`` and ``threads``.
    """
    keys = [(key, t) for key in files for t in threads]
    timed: dict[tuple[K, int], Timed] = {key: Timed() for key in keys}
    for r in range(rounds + extra_rounds):
        order = keys if r < rounds else [key for key in keys if timed[key].contended]
        if not order:
            break
        order = random.Random(r).sample(order, len(order))
        for key, t in order:
            timed[(key, t)].add(timer(files[key], t))
            logger.debug("%s, %d thread(s), round %d: %.3f ms", key, t, r + 1, timed[(key, t)].fastest[-1])
    return timed


def to_measurements(files: Mapping[K, Path], timed: Mapping[tuple[K, int], Timed], name: Callable[[K, int], str],
                    source: str = "measured:host", drop_contended: bool = False) -> list[Measurement]:
    """One :class:`Measurement` per timed (file, threads), named by ``name(key, threads)``; each file's layers
    are read once. ``drop_contended`` leaves out those with no round that had a CPU per thread (a fit must not
    learn a loaded machine's thread scaling)."""
    layers = {key: read_tflite_layers(path) for key, path in files.items()}
    kept = {k: v for k, v in timed.items() if not (drop_contended and v.contended)}
    if len(kept) < len(timed):
        logger.warning("left out %d of %d timings: another process held a CPU during every run of them (run again "
                       "on a quieter machine to fit how this one scales with threads)", len(timed) - len(kept),
                       len(timed))
    return [Measurement(name(key, t), *layers[key], t, result.ms, source) for (key, t), result in kept.items()]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages and the core count, e.g. ``load 0.42 0.51 1.20 on 2 cores``."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
