"""How long ``edgecomp build`` takes to decide on a ResNet-18-size model with no ``--data``, before and after.

Each row runs the real CLI (a subprocess) on ``benchmarks/resnet18_style.py:resnet18`` (11.7M parameters,
46.8 MB fp32, 3x96x96 input) for ``--target android-arm64`` with no ``--data``, and times it from the start of
the process to the decision: the planner's "chosen:" line, or the exit when nothing fits. Once the planner
has chosen, the process is stopped (the export that follows is not part of the decision) unless ``--full``.
A run still undecided after ``--timeout`` seconds is stopped and shown as such, with the candidates it had
started evaluating by then.

The same rows run against two source trees: ``--before`` (default /work/main: the tree as it was) and
``--after`` (default: this checkout), each on its own ``PYTHONPATH``.

    .venv/bin/python benchmarks/no_data_decision.py [--before /work/main] [--after .] [--timeout 300]
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MODEL = str(Path(__file__).with_name("resnet18_style.py")) + ":resnet18"
CASES = (("android-arm64 budgets (10 MB)", []), ("--max-size 15", ["--max-size", "15"]))


@dataclass
class Row:
    """One timed build."""

    tree: str
    case: str
    seconds: float
    outcome: str
    evaluated: int


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put((time.monotonic(), line.rstrip("\n")))
    lines.put((time.monotonic(), None))


def run_case(tree: Path, extra: list[str], timeout: float, full: bool) -> tuple[float, str, int]:
    """Run the CLI from ``tree``; return (seconds to the decision, what was decided, candidates evaluated)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(tree), "EDGECOMP_CACHE_DIR": f"{tmp}/cache"}
        cmd = [sys.executable, "-m", "edgecomp", "build", MODEL, "--input-shape", "1,3,96,96", "--target",
               "android-arm64", "--out", f"{tmp}/bundle", "--fresh-search", "--no-cache", *extra]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
        evaluated, error, decided = 0, "", None
        try:
            while decided is None:
                try:
                    at, line = lines.get(timeout=max(0.1, start + timeout - time.monotonic()))
                except queue.Empty:
                    return timeout, f"no decision after {timeout:.0f} s (still searching)", evaluated
                if line is None:
                    proc.wait()
                    outcome = f"exit {proc.returncode}: {error}" if proc.returncode else "built"
                    return at - start, outcome, evaluated
                evaluated += "evaluating" in line
                if line.startswith(("error:", "  hint:")):
                    error += line.strip() + " "
                if (m := re.search(r"\[plan\] chosen: (.*)", line)) is not None:
                    decided = (at - start, f"chose {m.group(1)}")
            if full:
                proc.wait()
            return decided[0], decided[1], evaluated
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the build this function started, and its children
                proc.wait()


def main() -> None:
    """Time every case on the before and after trees and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="/work/main", help="source tree as it was")
    parser.add_argument("--after", default=str(Path(__file__).resolve().parents[1]), help="source tree now")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before an undecided run is stopped")
    parser.add_argument("--full", action="store_true", help="let a decided build finish its export")
    parser.add_argument("--only", choices=("before", "after"), help="time one tree only (no table)")
    args = parser.parse_args()
    rows = []
    for label, tree in (("before", args.before), ("after", args.after)):
        if args.only and label != args.only:
            continue
        for case, extra in CASES:
            seconds, outcome, evaluated = run_case(Path(tree), extra, args.timeout, args.full)
            rows.append(Row(label, case, seconds, outcome, evaluated))
            print(f"{label:6s} {case:30s} {seconds:7.1f} s  evaluated {evaluated:2d}  {outcome}", flush=True)
    if args.only:
        return
    print("\nResNet-18-style, 11.7M params, 3x96x96, --target android-arm64, no --data "
          f"(wall time to the decision; stopped after {args.timeout:.0f} s)")
    print(f"{'case':30s} {'before s':>9s} {'after s':>8s} {'ratio':>6s}  after: decision")
    for case, _ in CASES:
        before = next(r for r in rows if r.tree == "before" and r.case == case)
        after = next(r for r in rows if r.tree == "after" and r.case == case)
        more = ">" if before.outcome.startswith("no decision") else ""
        print(f"{case:30s} {more + f'{before.seconds:.1f}':>9s} {after.seconds:8.1f} "
              f"{more + f'{before.seconds / after.seconds:.0f}x':>6s}  {after.outcome[:300]}")
        print(f"{'':30s} before: {before.outcome[:200]} ({before.evaluated} candidates evaluated)")


if __name__ == "__main__":
    main()
