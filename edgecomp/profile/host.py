"""Latency and memory of an artifact measured on this machine (labelled ``measured:host``).

Each measurement runs in a fresh worker process (see ``host_worker``) so that peak memory belongs
to the model's runtime alone, not to torch or to earlier measurements. The worker runs isolated
(``python -I`` in an empty temporary folder): neither the current folder, nor the artifact's folder, nor
``PYTHON*`` variables or the user site can put modules on its path (a ``json.py`` in the build folder
must not run inside it).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgecomp.errors import EdgecompError
from edgecomp.quiet import THIRDPARTY
from edgecomp.records import Latency

logger = logging.getLogger(__name__)


# Run a module as __main__ in an isolated interpreter (-I: no cwd, script folder, PYTHON* variables or user
# site on sys.path). The folder edgecomp was imported from is appended (not prepended: it must not shadow the
# standard library), so the worker also starts where edgecomp runs from a checkout without being installed.
_RUN_MODULE = ("import runpy, sys; root, module = sys.argv.pop(1), sys.argv.pop(1); "
               "sys.path.append(root) if root not in sys.path else None; "
               "runpy.run_module(module, run_name='__main__', alter_sys=True)")


def isolated_module_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args`` isolated from the caller's folders and environment."""
    import edgecomp

    root = str(Path(edgecomp.__file__).resolve().parents[1])
    return [sys.executable, "-I", "-c", _RUN_MODULE, root, module, *args]


def measure_host(fmt: str, path: str | Path, threads: int = 2, runs: int = 50, warmup: int = 5,
                 timeout_s: float = 300, tolerance: float | None = None, min_runs: int = 10) -> Latency:
    """Time inferences of the artifact after ``warmup`` in a fresh process; p50/p90 and memory.

    Without ``tolerance`` it times exactly ``runs``; with one (a fraction, e.g. 0.02) it stops as soon as the
    95 % confidence interval of the p50 is within ``tolerance`` of it (after ``min_runs``), or at ``runs``.
    """
    from edgecomp.export.base import get_format

    plugin = get_format(fmt)
    if plugin.runner is None:
        raise EdgecompError(f"no host runtime for {fmt}: {plugin.no_runner_note}", "profile it on its own platform")
    extra = [] if tolerance is None else [str(tolerance), str(min_runs)]
    cmd = isolated_module_command("edgecomp.profile.host_worker", plugin.runner, str(Path(path).resolve()), str(threads),
                                  str(runs), str(warmup), *extra)
    try:
        with tempfile.TemporaryDirectory(prefix="edgecomp-host-") as cwd:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise EdgecompError(f"host profiling of {path} took over {timeout_s:.0f} s", "use fewer --runs") from exc
    chatter = proc.stderr.strip().splitlines()  # the runtime's INFO lines (XNNPACK delegate): debug log only
    for line in chatter:
        THIRDPARTY.debug("[%s host profiling] %s", fmt, line)
    if proc.returncode != 0:
        raise EdgecompError(f"host profiling of {path} failed: {' / '.join(chatter[-5:])[-500:]}",
                            "check that the file runs with its runtime (--debug shows its full output)")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    from edgecomp.profile.host_cpu import describe_host
    from edgecomp.profile.host_worker import median_ci_halfwidth

    times = np.asarray(result["times_ms"])
    p50 = float(np.percentile(times, 50))
    halfwidth = median_ci_halfwidth(result["times_ms"])
    return Latency(
        p50_ms=p50, p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(times.mean()), std_ms=float(times.std()), init_ms=result["init_ms"],
        peak_memory_mb=result["peak_rss_mb"], model_memory_mb=result["peak_rss_mb"] - result["rss_before_load_mb"],
        runs=len(times), threads=threads, source="measured:host", machine=describe_host(),
        max_runs=runs if tolerance is not None else None,
        tolerance_pct=tolerance * 100 if tolerance is not None else None,
        ci_halfwidth_pct=round(100 * halfwidth / p50, 3) if p50 > 0 and np.isfinite(halfwidth) else None,
    )
