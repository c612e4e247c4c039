"""Worker process for host latency: loads one artifact, times it, prints one JSON line.

Run as ``python -m edgecomp.profile.host_worker RUNNER PATH THREADS RUNS WARMUP [TOLERANCE MIN_RUNS]``, RUNNER
being the format's ``module:callable`` (``export.base.Format.runner``), which builds the runner from
``(path, threads)``: with a
TOLERANCE (a fraction, e.g. 0.02) it stops once the 95 % confidence interval of the median is within
TOLERANCE of the median (after at least MIN_RUNS runs), else after RUNS. ``measure_host`` starts it
isolated (``python -I`` in an empty temporary folder, see ``host.isolated_module_command``), so PATH must be
absolute. It imports only numpy and the runner's module (no torch, for the formats whose runtime needs none), so
its peak resident memory is that of running the model.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


Z95 = 1.959964


def median_ci_halfwidth(times: list[float]) -> float:
    """Half-width of the distribution-free 95 % confidence interval of the median (order statistics).

    With n sorted samples the interval runs from the r-th to the s-th, r = floor(n/2 - z*sqrt(n)/2) and
    s = ceil(1 + n/2 + z*sqrt(n)/2) (1-based, clipped to 1..n); it holds whatever the latency distribution.
    """
    n = len(times)
    if n == 0:
        return float("inf")
    ordered = sorted(times)
    spread = Z95 * n ** 0.5 / 2
    lo = min(max(int(np.floor(n / 2 - spread)), 1), n)
    hi = min(max(int(np.ceil(1 + n / 2 + spread)), 1), n)
    return (ordered[hi - 1] - ordered[lo - 1]) / 2


def converged(times: list[float], tolerance: float, min_runs: int) -> bool:
    """True once there are ``min_runs`` times and the median's 95 % CI half-width is within ``tolerance``."""
    if len(times) < min_runs:
        return False
    return median_ci_halfwidth(times) <= tolerance * float(np.median(times))


def main(argv: list[str]) -> None:
    """Time up to ``RUNS`` inferences after ``WARMUP`` and print latencies (ms) and memory (MB) as JSON."""
    runner_ref, path, threads, runs, warmup = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    tolerance = float(argv[5]) if len(argv) > 5 else None
    min_runs = int(argv[6]) if len(argv) > 6 else 10
    import importlib

    module, _, attr = runner_ref.partition(":")
    make_runner = getattr(importlib.import_module(module), attr)

    rss_before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    runner = make_runner(path, threads)
    init_ms = (time.perf_counter() - t0) * 1e3
    x = np.random.default_rng(0).standard_normal(tuple(int(s) for s in runner.input_shape)).astype(np.float32)
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t) * 1e3)
        if tolerance is not None and converged(times, tolerance, min_runs):
            break
    print(json.dumps({
        "times_ms": times, "init_ms": init_ms,
        "peak_rss_mb": _status_kb("VmHWM") / 1024, "rss_before_load_mb": rss_before / 1024,
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
