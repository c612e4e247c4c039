"""Build time: a first build and an identical rebuild, phase by phase, measured in one run; prints one table.

    .venv/bin/python benchmarks/build_time.py [--no-mobilenet] [--runs 50]

Each build is a fresh ``python -m edgecomp build`` process (so imports count, as for a user), timed by wall
clock here; its phases come from the report.json it wrote. The artifact cache starts empty in a temporary
folder (``$EDGECOMP_ARTIFACT_CACHE_DIR``), so the first build exports and measures, and the rebuild may reuse
them. Models: the default model (``digits_cnn``, weights already trained and cached; the planner chooses its
recipe, with its own plan cache as the user has it), and MobileNetV2 224x224 (random weights,
benchmarks/mobilenetv2.py) as fp32 and as int8 (``quantize.int8``). The per-format import cost is measured in
fresh interpreters too. The CPU line names the model and vector ISA (edgecomp/profile/host_cpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
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
           "coreml (coremltools)": "import coremltools"}


def cpu_line() -> str:
    """The CPU's model name, core count and widest vector ISA."""
    from edgecomp.profile.host_cpu import cpu_flags, vector_peaks

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown CPU")
    return f"CPU: {name}, {os.cpu_count()} cores, {vector_peaks(cpu_flags(text))[2]}"


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "EDGECOMP_ARTIFACT_CACHE_DIR": str(cache),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("EDGECOMP_NO_CACHE", None)
    return env


def one_build(model: str | None, flags: list[str], out: Path, cache: Path, runs: int) -> dict:
    """Run one build in a fresh process; its wall time, peak memory and the phases of its report."""
    cmd = [sys.executable, "-m", "edgecomp", "build", *([model] if model else []), "--target", "android-arm64",
           "--runs", str(runs), "--out", str(out), "--force", *flags]
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd] if Path("/usr/bin/time").exists() else cmd,
                          cwd=ROOT, env=_env(cache), capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"build failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    peak_kb = proc.stderr.strip().splitlines()[-1] if Path("/usr/bin/time").exists() else ""
    report = json.loads((out / "report.json").read_text())
    return {"wall": wall, "peak_gb": int(peak_kb) / 1e6 if peak_kb.isdigit() else None,
            "phases": {p["name"]: p["seconds"] for p in report["phases"]},
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
             ("process wall (imports incl.)", first["wall"], again["wall"])]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    ratio = lambda a, b: f"{a / b:.1f}x" if a and b else "-"
    width = max(len(r[0]) for r in rows)
    lines = [f"{label}", f"  {'phase'.ljust(width)}  {'first s':>8}  {'rebuild s':>9}  {'speed-up':>8}"]
    lines += [f"  {n.ljust(width)}  {fmt(a):>8}  {fmt(b):>9}  {ratio(a, b):>8}" for n, a, b in rows]
    peak = lambda r: "-" if r["peak_gb"] is None else f"{r['peak_gb']:.2f} GB"
    lines.append(f"  peak memory: first {peak(first)}, rebuild {peak(again)}; "
                 f"rebuild reused from the cache: {', '.join(again['cached']) or 'nothing'}")
    return "\n".join(lines)


def main() -> None:
    """Measure every case and print the tables, the import costs and the CPU line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-mobilenet", action="store_true", help="only the default model")
    parser.add_argument("--runs", type=int, default=50, help="most timed runs per artifact (default 50)")
    args = parser.parse_args()
    print(cpu_line())
    print("import cost per format (fresh interpreter, s):")
    for name, code in IMPORTS.items():
        print(f"  {name:32s} {import_seconds(code):6.2f}")
    with tempfile.TemporaryDirectory(prefix="edgecomp-build-time-") as tmp:
        for i, (label, model, flags) in enumerate(CASES[:1] if args.no_mobilenet else CASES):
            cache, out = Path(tmp) / f"cache{i}", Path(tmp) / f"bundle{i}"
            if model is not None:  # random init differs per process: fix the weights so a rebuild is identical
                flags = [*flags, "--weights", str(_fixed_weights(Path(tmp)))]
            first = one_build(model, flags, out, cache, args.runs)
            again = one_build(model, flags, out, cache, args.runs)
            print()
            print(table(label, first, again))


if __name__ == "__main__":
    main()
