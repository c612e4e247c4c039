"""Build time: a first build and an identical rebuild, phase by phase, measured in one run; prints one table.

    .venv/bin/python benchmarks/build_time.py [--no-mobilenet] [--runs 50]

Each build is a fresh ``python -m edgecomp build`` process (so imports count, as for a user), timed by wall
clock here, with its CPU time (user + system) beside it: on a busy machine the CPU time is the better guide to
the idle wall time. Its phases come from the report.json it wrote. Every case starts from an empty cache folder
(``$EDGECOMP_CACHE_DIR``: no artifacts, plans or plots) holding only the built-in model's trained weights, so
the first build searches, exports and measures, and the rebuild may reuse them. Models: the default model
(``digits_cnn``; the planner chooses its recipe), and MobileNetV2 224x224 (benchmarks/mobilenetv2.py, fixed
seed-0 weights) as fp32 and as int8 (``quantize.int8``). The per-format import cost is measured in fresh
interpreters too. The CPU line names the model and vector ISA (edgecomp/profile/host_cpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = [  # (label, model, extra build flags)
    ("digits_cnn (default)", None, []),
    ("mobilenetv2 224 fp32", "benchmarks/mobilenetv2.py:MobileNetV2",
     ["--input-shape", "1,3,224,224", "--recipe", ""]),
    ("mobilenetv2 224 int8", "benchmarks/mobilenetv2.py:MobileNetV2",
     ["--input-shape", "1,3,224,224", "--recipe", "quantize.int8"]),
]
IMPORTS = {"edgecomp CLI": "import edgecomp.cli", "build spine (torch)": "import edgecomp.build",
           "onnx (exporter + runtime)": "import onnx, onnxruntime",
           "tflite (litert_torch + runtime)": "import litert_torch, ai_edge_litert.interpreter",
           "coreml (coremltools)": "import coremltools",
           "whole-build reuse path": "import edgecomp.cli, edgecomp.build_reuse, edgecomp.report.html"}


def cpu_line() -> str:
    """The CPU's model name, core count and widest vector ISA."""
    from edgecomp.profile.host_cpu import cpu_flags, vector_peaks

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown CPU")
    return f"CPU: {name}, {os.cpu_count()} cores, {vector_peaks(cpu_flags(text))[2]}"


TARGETS = {"digits_cnn (default)": (15.0, 5.0)}  # the targets: first build, rebuild (s, idle 2 cores)


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "EDGECOMP_CACHE_DIR": str(cache),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for var in ("EDGECOMP_NO_CACHE", "EDGECOMP_ARTIFACT_CACHE_DIR"):
        env.pop(var, None)
    return env


def fresh_cache(folder: Path) -> Path:
    """An empty cache folder holding only the built-in model's trained weights (trained here if need be)."""
    from edgecomp.zoo import load_zoo_model
    from edgecomp.zoo_cache import DEFAULT_MODEL, zoo_weights_path

    load_zoo_model(DEFAULT_MODEL)  # trains and caches it on first use
    weights = zoo_weights_path(DEFAULT_MODEL)
    (folder / "zoo").mkdir(parents=True)
    shutil.copy(weights, folder / "zoo" / weights.name)
    return folder


def one_build(model: str | None, flags: list[str], out: Path, cache: Path, runs: int) -> dict:
    """Run one build in a fresh process; its wall time, peak memory and the phases of its report."""
    cmd = [sys.executable, "-m", "edgecomp", "build", *([model] if model else []), "--target", "android-arm64",
           "--runs", str(runs), "--out", str(out), "--force", *flags]
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd] if Path("/usr/bin/time").exists() else cmd,
                          cwd=ROOT, env=_env(cache), capture_output=True, text=True, check=False)
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"build failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    peak_kb = proc.stderr.strip().splitlines()[-1] if Path("/usr/bin/time").exists() else ""
    report = json.loads((out / "report.json").read_text())
    return {"wall": wall, "cpu": cpu, "peak_gb": int(peak_kb) / 1e6 if peak_kb.isdigit() else None,
            "phases": {p["name"]: p["seconds"] for p in report["phases"]}, "reused_from": report.get("reused_from"),
            "plan_reused": bool((report.get("planner") or {}).get("reused_from")),
            "cached": [a["format"] for a in report["artifacts"] if a.get("cached")]}


def _fixed_weights(folder: Path) -> Path:
    """A MobileNetV2 state_dict from seed 0 (written once), so both builds load the same weights."""
    import torch

    from benchmarks.mobilenetv2 import MobileNetV2

    path = folder / "mobilenetv2-seed0.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(MobileNetV2().state_dict(), path)
    return path


def import_seconds(code: str) -> float:
    """Wall time of a fresh interpreter running ``code`` minus that of one running nothing."""
    def run(c: str) -> float:
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", c], cwd=ROOT, env=_env(Path(tempfile.gettempdir())),
                       capture_output=True, check=False)
        return time.monotonic() - start
    return max(0.0, run(code) - run("pass"))


def table(label: str, first: dict, again: dict) -> str:
    """Side-by-side phase table of a first build and its rebuild, with the ratio."""
    names = list(dict.fromkeys([*first["phases"], *again["phases"]]))
    rows = [(n, first["phases"].get(n), again["phases"].get(n)) for n in names]
    rows += [("phases, summed", sum(first["phases"].values()), sum(again["phases"].values())),
             ("process wall (imports incl.)", first["wall"], again["wall"]),
             ("process CPU, user + system", first["cpu"], again["cpu"])]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    ratio = lambda a, b: f"{a / b:.1f}x" if a and b else "-"
    width = max(len(r[0]) for r in rows)
    lines = [f"{label}", f"  {'phase'.ljust(width)}  {'first s':>8}  {'rebuild s':>9}  {'speed-up':>8}"]
    lines += [f"  {n.ljust(width)}  {fmt(a):>8}  {fmt(b):>9}  {ratio(a, b):>8}" for n, a, b in rows]
    peak = lambda r: "-" if r["peak_gb"] is None else f"{r['peak_gb']:.2f} GB"
    reused = (f"the whole build of {again['reused_from']}" if again["reused_from"] else
              ", ".join([*(["the plan"] if again["plan_reused"] else []), *again["cached"]]) or "nothing")
    lines.append(f"  peak memory: first {peak(first)}, rebuild {peak(again)}; rebuild reused: {reused}")
    if label in TARGETS:
        goals = TARGETS[label]
        lines.append("  targets (idle machine): " + "; ".join(
            f"{what} <= {goal:g} s: {run['wall']:.2f} s wall, {run['cpu']:.2f} s CPU "
            f"({'met' if run['wall'] <= goal else 'met in CPU time' if run['cpu'] <= goal else 'MISSED'})"
            for what, goal, run in (("first", goals[0], first), ("rebuild", goals[1], again))))
    return "\n".join(lines)


def main() -> None:
    """Measure every case and print the tables, the import costs and the CPU line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-mobilenet", action="store_true", help="only the default model")
    parser.add_argument("--runs", type=int, default=50, help="most timed runs per artifact (default 50)")
    args = parser.parse_args()
    print(cpu_line())
    print("load average at start (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("import cost per format (fresh interpreter, s):")
    for name, code in IMPORTS.items():
        print(f"  {name:32s} {import_seconds(code):6.2f}")
    with tempfile.TemporaryDirectory(prefix="edgecomp-build-time-") as tmp:
        for i, (label, model, flags) in enumerate(CASES[:1] if args.no_mobilenet else CASES):
            cache, out = fresh_cache(Path(tmp) / f"cache{i}"), Path(tmp) / f"bundle{i}"
            if model is not None:  # random init differs per process: fix the weights so a rebuild is identical
                flags = [*flags, "--weights", str(_fixed_weights(Path(tmp)))]
            first = one_build(model, flags, out, cache, args.runs)
            again = one_build(model, flags, out, cache, args.runs)
            print()
            print(table(label, first, again))


if __name__ == "__main__":
    main()
