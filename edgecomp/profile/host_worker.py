"""Worker process for host latency: loads one artifact, times it, prints one JSON line.

Run as ``python -m edgecomp.profile.host_worker FORMAT PATH THREADS RUNS WARMUP``; ``measure_host`` starts it
isolated (``python -I`` in an empty temporary folder, see ``host.isolated_module_command``), so PATH must be
absolute. It imports only numpy and the runtime (no torch), so its peak resident memory is that of running
the model.
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


def main(argv: list[str]) -> None:
    """Time ``RUNS`` inferences after ``WARMUP`` and print latencies (ms) and memory (MB) as JSON."""
    fmt, path, threads, runs, warmup = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    from edgecomp.export.runtime import make_runner

    rss_before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    runner = make_runner(fmt, path, threads)
    init_ms = (time.perf_counter() - t0) * 1e3
    shape = runner.inp["shape"] if fmt == "tflite" else [d if isinstance(d, int) else 1 for d in runner.input.shape]
    x = np.random.default_rng(0).standard_normal(tuple(int(s) for s in shape)).astype(np.float32)
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "times_ms": times, "init_ms": init_ms,
        "peak_rss_mb": _status_kb("VmHWM") / 1024, "rss_before_load_mb": rss_before / 1024,
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
