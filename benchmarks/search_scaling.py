"""How the planner's search scales: serial vs ``--workers 2`` vs a 2-node Ray cluster, halving vs exhaustive.

Every run searches the same workload from scratch (no evaluation cache) with the same seed, side by side in
one process, and the tables print as measured:

1. **Executors** (exhaustive, so every run does the same work): wall time of ``Planner.search`` serially
   (torch's default threads: today's behaviour; and ``serial1``: 1 thread, the per-evaluation threads the
   workers get), in 2 local worker processes (1 thread each) and on a 2-node Ray cluster started here
   (``ray start --head --node-ip-address 127.0.0.1 --num-cpus 1`` plus a second
   ``ray start --address ... --num-cpus 1``), with the screening time, the speed-up over serial and whether
   each chose the serial run's recipe with the same numbers. Screening and evaluations both run as tasks
   on the executor.
2. **Successive halving vs exhaustive** (serial): wall time, fine-tune epochs spent, the chosen recipe and
   its validation metric in both, and the halving choice's rank in the exhaustive ranking.
3. **On paper**: the search's makespan on 8, 32 and 128 workers, from the per-candidate times measured in
   the serial runs, scheduled longest-first onto the workers rung by rung (each rung waits for its slowest
   task: the critical path). It ignores start-up, data loading and network costs; it is arithmetic, not a run.

The default workload is the real-data benchmark's ResNet-18-style network on its 32x32 digits image folder
(candidates of tens of seconds each); ``--quick`` is the digits CNN with 3-epoch fine-tunes, for a smoke run.

    EDGECOMP_CACHE_DIR=/tmp/ec_scale .venv/bin/python benchmarks/search_scaling.py [--quick] [--ft-epochs 6]
        [--size-fraction 0.3] [--modes serial,serial1,workers,ray,halving] [--ray-port 6391]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecomp.compress.base import BuildContext
from edgecomp.plan.executors import Executor, ProcessExecutor, SerialExecutor
from edgecomp.plan.planner import Planner
from edgecomp.profile.host_cpu import describe_host
from edgecomp.targets import Budgets, load_profile, load_target

QUICK_METHODS = ["prune.filter", "quantize.int8"]


def workload(quick: bool, size_fraction: float = 0.3) -> tuple[torch.nn.Module, BuildContext, Budgets, str]:
    """The model, build context, budgets and a one-line description of the search to time."""
    target = load_target("android-arm64")
    if quick:
        from edgecomp.zoo import load_zoo_model

        model, spec, data = load_zoo_model()
        target = target.model_copy(update={"methods": QUICK_METHODS})
        budgets = Budgets(size_mb=0.08, accuracy_drop_pct=50)
        what = "digits CNN (quick), methods " + ", ".join(QUICK_METHODS)
    else:
        from benchmarks.real_data import FACTORIES, image_folder, train
        from benchmarks.real_data_models import ResNet18Style
        from edgecomp.data.checks import spec_with_data
        from edgecomp.data.sources import load_data
        from edgecomp.metrics import load_metric
        from edgecomp.model import count_params, with_outputs
        from edgecomp.spec import ModelSpec

        folder = image_folder()
        weights, acc = train(FACTORIES[0], folder, epochs=12)
        model = ResNet18Style()
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        data = load_data(str(folder))
        data.metric = load_metric("top1")
        spec = ModelSpec(name="resnet18_style", input_shape=[1, 3, 32, 32], layout="NCHW")
        spec = spec_with_data(with_outputs(model, spec), data)
        budgets = Budgets(size_mb=round(size_fraction * 4 * count_params(model) / 1e6, 3), accuracy_drop_pct=3)
        what = f"ResNet-18-style on {folder} (test top-1 {acc:.2f} %), android-arm64 methods, {budgets.size_mb} MB"
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=model)
    return model, ctx, budgets, what


def search(model, ctx, budgets, executor: Executor, early_stop: bool, ft_epochs: int) -> dict:
    """One search from scratch; its wall time, epochs, choice and per-candidate task times."""
    planner = Planner(model, ctx, budgets, "tflite", search_time_s=10 * 3600, max_finetune_epochs=ft_epochs,
                      executor=executor, early_stop=early_stop)
    start = time.monotonic()
    planner.search()
    wall = time.monotonic() - start
    print(f"  searched with {executor.name}{' (halving)' if early_stop else ''} in {wall:.1f} s "
          f"(screening {planner.screen_seconds:.1f} s)", flush=True)
    ranked = planner.ranking()
    best = planner.candidates[ranked[0]] if ranked else None
    return {"wall": wall, "screen": planner.screen_seconds, "epochs": planner.epochs_spent, "planner": planner,
            "feasible": sum(1 for c in planner.candidates if c.val_accuracy is not None),
            "chosen": best.label if best else "(none)", "val": best.val_accuracy if best else None,
            "ranking": [planner.candidates[i].label for i in ranked],
            "numbers": [(c.label, c.status, c.val_accuracy, c.accuracy) for c in planner.candidates],
            "rung_times": [planner.screen_task_seconds]
                          + [[r.seconds for c in planner.candidates for r in c.rungs if r.rung == k]
                             for k in range(len(planner.rungs))]}


@contextlib.contextmanager
def ray_cluster(port: int) -> Iterator[str]:
    """A 2-node Ray cluster on this machine (head + one more node, 1 CPU each); stopped afterwards."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    # a cluster bound to 127.0.0.1 for this run only: Ray's token authentication (on by default since 2.5x)
    # is turned off for it, in the nodes and in this driver
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "RAY_AUTH_MODE": "disabled"}
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    address = f"127.0.0.1:{port}"
    head = [ray_bin, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
            "--include-dashboard=false", "--disable-usage-stats"]
    node = [ray_bin, "start", "--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
            "--disable-usage-stats"]
    try:
        for cmd in (head, node):
            subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, timeout=180)
        yield address
    finally:
        # stops every Ray process of this user on the machine: run the benchmark where no other Ray runs
        subprocess.run([ray_bin, "stop", "--force"], check=False, capture_output=True, timeout=120)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def makespan(times: list[float], workers: int) -> float:
    """Longest-processing-time-first list scheduling of ``times`` on ``workers``: when the last one ends."""
    loads = [0.0] * min(workers, max(1, len(times)))
    for t in sorted(times, reverse=True):
        heapq.heapreplace(loads, loads[0] + t)
    return max(loads, default=0.0)


def paper(rung_times: list[list[float]], workers: int) -> tuple[float, float]:
    """(makespan, critical path) of synchronous rungs on ``workers``."""
    return (sum(makespan(times, workers) for times in rung_times),
            sum(max(times, default=0.0) for times in rung_times))


def main() -> None:
    """Run the requested modes and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits CNN, 3-epoch fine-tunes: a smoke run")
    parser.add_argument("--ft-epochs", type=int, help="fine-tune cap per candidate (default 6; 3 with --quick)")
    parser.add_argument("--size-fraction", type=float, default=0.3,
                        help="size budget as a fraction of the fp32 weights (ResNet workload; default 0.3)")
    parser.add_argument("--modes", default="serial,serial1,workers,ray,halving", help="which runs (comma-separated)")
    parser.add_argument("--ray-port", type=int, default=6391, help="GCS port of the benchmark's Ray head")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    modes = args.modes.split(",")
    ft = args.ft_epochs or (3 if args.quick else 6)
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version, modes = "not installed", [m for m in modes if m != "ray"]
    cores = os.cpu_count() or 1
    print(f"CPU: {describe_host()}, {cores} cores ({platform.machine()}); torch {torch.__version__}, "
          f"Ray {ray_version}")
    model, ctx, budgets, what = workload(args.quick, args.size_fraction)
    print(f"workload: {what}; fine-tunes capped at {ft} epochs; seed {ctx.seed}\n")
    runs: dict[str, dict] = {}
    if "serial" in modes or "halving" in modes:
        runs["serial"] = search(model, ctx, budgets, SerialExecutor(), False, ft)
    if "serial1" in modes:
        runs["serial 1 thread"] = search(model, ctx, budgets, SerialExecutor(threads=1), False, ft)
    if "workers" in modes:
        runs["workers 2"] = search(model, ctx, budgets, ProcessExecutor(2), False, ft)
    if "ray" in modes:
        from edgecomp.plan.ray_executor import RayExecutor

        with ray_cluster(args.ray_port) as address:
            runs["Ray 2 nodes"] = search(model, ctx, budgets, RayExecutor(address, threads=1), False, ft)
    if "halving" in modes:
        runs["halving"] = search(model, ctx, budgets, SerialExecutor(), True, ft)

    base = runs.get("serial")
    print("1. Executors (exhaustive search, every candidate fine-tuned in full)")
    one = runs.get("serial 1 thread")
    print(f"{'executor':16s} {'wall s':>8s} {'screen s':>9s} {'speed-up':>9s} {'vs 1 thread':>12s} {'epochs':>7s}  "
          f"{'same choice':>11s}  {'same numbers':>12s}  chosen (val)")
    for name in ("serial", "serial 1 thread", "workers 2", "Ray 2 nodes"):
        r = runs.get(name)
        if r is None:
            continue
        speed = f"{base['wall'] / r['wall']:.2f}x" if base else "-"
        speed1 = f"{one['wall'] / r['wall']:.2f}x" if one else "-"
        same = "yes" if base and r["chosen"] == base["chosen"] else "no" if base else "-"
        numbers = "yes" if base and r["numbers"] == base["numbers"] else "no" if base else "-"
        val = f"{r['val']:.2f}" if r["val"] is not None else "-"
        print(f"{name:16s} {r['wall']:8.1f} {r['screen']:9.1f} {speed:>9s} {speed1:>12s} {r['epochs']:7d}  {same:>11s}  "
              f"{numbers:>12s}  {r['chosen']} ({val})")
    print(f"(serial: torch's default {torch.get_num_threads()} threads; serial 1 thread, workers and Ray: 1 thread per "
          "evaluation. int8 candidates' numbers can differ with the thread count; equal --search-threads give "
          "equal numbers; 'same' compares with the serial row)")
    if base:
        print(f"candidates evaluated: {base['feasible']} of {len(base['planner'].candidates)}")

    if "halving" in runs and base and len(runs["halving"]["planner"].rungs) < 2:
        print("\n2. Successive halving was not used (halving.worth_halving: it would not plan at most half "
                  "the exhaustive epochs); raise --ft-epochs")
    if "halving" in runs and base and len(runs["halving"]["planner"].rungs) >= 2:
        h = runs["halving"]
        rank = base["ranking"].index(h["chosen"]) + 1 if h["chosen"] in base["ranking"] else None
        print("\n2. Successive halving vs exhaustive (serial)")
        print(f"{'search':12s} {'wall s':>8s} {'epochs':>7s}  {'chosen':40s} {'val':>7s}  rank in exhaustive")
        for name, r, rk in (("exhaustive", base, 1), ("halving", h, rank)):
            val = f"{r['val']:.2f}" if r["val"] is not None else "-"
            print(f"{name:12s} {r['wall']:8.1f} {r['epochs']:7d}  {r['chosen']:40s} {val:>7s}  "
                  f"{rk if rk else 'not feasible in exhaustive'} of {len(base['ranking'])}")
        print(f"halving: {base['wall'] / h['wall']:.2f}x faster, {h['epochs']} vs {base['epochs']} epochs; "
              f"choice {'unchanged' if h['chosen'] == base['chosen'] else 'changed'}")
        for entry in h["planner"].rungs:
            cap = entry["max_epochs"]
            print(f"  rung {entry['rung'] + 1} ({cap} epochs): {entry['evaluated']} evaluated"
                  + (f", kept {len(entry['kept'])}" if "kept" in entry else "")
                  + (f"; {entry['next']}" if entry.get("next") else ""))
        for note in h["planner"].notes:
            if "skipped its middle rung" in note:
                print(f"  {note}")

    if base:
        print("\n3. On paper: search makespan on N workers from the measured per-candidate times (serial runs),")
        print("   screening tasks then each rung, longest task first, each waiting for the one before; no start-up,")
        print("   data or network costs. Not measured.")
        print(f"{'workers':>8s} {'exhaustive s':>13s} {'speed-up':>9s} {'halving s':>10s} {'speed-up':>9s} "
              f"{'critical path s (exh/halv)':>27s}")
        one_e = paper(base["rung_times"], 1)[0]
        h_times = runs["halving"]["rung_times"] if "halving" in runs and len(runs["halving"]["planner"].rungs) >= 2 \
            else None
        one_h = paper(h_times, 1)[0] if h_times else None
        for n in (1, 2, 8, 32, 128):
            e, e_cp = paper(base["rung_times"], n)
            hs, h_cp = paper(h_times, n) if h_times else (None, None)
            print(f"{n:8d} {e:13.1f} {one_e / e:8.1f}x "
                  + (f"{hs:10.1f} {one_h / hs:8.1f}x {e_cp:13.1f} / {h_cp:.1f}" if hs else
                     f"{'-':>10s} {'-':>9s} {e_cp:13.1f}"))
    if shutil.which("nproc") and cores < 4:
        print(f"\nnote: this machine has {cores} cores; the speed-ups above are bounded by them.")


if __name__ == "__main__":
    main()
