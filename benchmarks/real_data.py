"""The planner on users' kind of work: an image folder, ResNet-18- and MobileNetV2-style models, top-1 and a custom metric.

1. Renders scikit-learn's digits as a folder of 32x32 RGB PNGs in class folders (light augmentation, see
   ``real_data_models.make_digit_folder``) and trains a ResNet-18-style and a MobileNetV2-style network on it
   through edgecomp's own image-folder loader (cached, with the test accuracy printed).
2. Builds each with ``edgecomp build real_data_models.py:<factory> --weights W --data FOLDER --target android-arm64``
   through the planner, under a loose (0.5 x the fp32 size) and a tight (0.15 x) size budget, with top-1, and the
   ResNet under the tight budget again with a custom metric (``--metric real_data_models.py:macro_f1``).
   Table per build: candidate, metric before/after (test split), drop, predicted size, predicted latency, fate.
3. No data: a full-width ResNet-18-style model (11 M parameters, 44.7 MB) over android-arm64's 10 MB budget, built
   with no ``--data``: wall time to the decision and what was chosen or why nothing was.

    EDGECOMP_CACHE_DIR=/tmp/ec_real .venv/bin/python benchmarks/real_data.py [--epochs 12] [--ft-epochs 3]
        [--search-time 900] [--builds resnet18_style:tight,resnet18_style:tight:macro_f1,no-data]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_data_models import ResNet18Style, make_digit_folder
from edgecomp.build import BuildOptions, build
from edgecomp.errors import EdgecompError
from edgecomp.targets import Budgets

MODELS_PY = Path(__file__).resolve().parent / "real_data_models.py"
FACTORIES = ("resnet18_style", "mobilenetv2_style")
BUDGET_FACTORS = {"loose": 0.5, "tight": 0.15}  # size budget as a fraction of the fp32 model
BUILDS = ("resnet18_style:loose", "resnet18_style:tight", "mobilenetv2_style:loose", "mobilenetv2_style:tight",
          "resnet18_style:tight:macro_f1", "no-data")


def cache_dir() -> Path:
    """Where the folder and trained weights live between runs."""
    from edgecomp.zoo import cache_dir as edgecomp_cache

    path = edgecomp_cache() / "real_data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def image_folder() -> Path:
    """The rendered digits folder (made once)."""
    root = cache_dir() / "digits32"
    if not (root / "9").is_dir():
        start = time.monotonic()
        n = make_digit_folder(root)
        print(f"rendered {n} images into {root} in {time.monotonic() - start:.1f} s")
    return root


def train(factory: str, folder: Path, epochs: int) -> tuple[Path, float]:
    """Train ``factory`` on the folder's train split with edgecomp's loader; cached weights and test top-1."""
    from benchmarks import real_data_models
    from edgecomp.data.sources import load_data
    from edgecomp.finetune import FinetuneConfig, finetune
    from edgecomp.metrics import evaluate, load_metric

    weights = cache_dir() / f"{factory}-e{epochs}-v2.pt"  # v2: the shared BasicBlock (shortcut.*)
    data = load_data(str(folder))
    data.metric = load_metric("top1")
    torch.manual_seed(0)
    model = getattr(real_data_models, factory)()
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        start = time.monotonic()
        finetune(model, data, FinetuneConfig(epochs=epochs, lr=2e-3, patience=4))
        torch.save(model.state_dict(), weights)
        print(f"trained {factory} for up to {epochs} epochs in {time.monotonic() - start:.0f} s")
    return weights, evaluate(model, data, "test")


def plan(factory: str, weights: Path, folder: Path, size_mb: float, metric: str | None, ft_epochs: int,
         search_s: float, workers: int | None = None) -> dict:
    """One planned build; returns its report (or the error)."""
    out = Path(tempfile.mkdtemp()) / "bundle"
    opts = BuildOptions(out=out, weights=str(weights), data=str(folder), metric=metric, formats=["tflite"],
                        budgets=Budgets(size_mb=size_mb), max_finetune_epochs=ft_epochs, search_time_s=search_s,
                        reuse_plans=True, runs=10, workers=workers)
    start = time.monotonic()
    try:
        report = build(f"{MODELS_PY}:{factory}", "android-arm64", opts).model_dump()
    except EdgecompError as exc:
        return {"error": exc.message + (f" -- hint: {exc.hint}" if exc.hint else ""),
                "seconds": time.monotonic() - start}
    report["seconds"] = time.monotonic() - start
    return report


def print_plan(title: str, report: dict) -> None:
    """The planner's candidates as a table."""
    print(f"\n{title}  ({report['seconds']:.0f} s)")
    if "error" in report:
        print(f"  no recipe: {report['error']}")
        return
    src = report["model"]["accuracy"]
    metric = report["model"]["metric"]
    print(f"  source {metric} {src:.2f} on the test split; data: {report['model']['data']}")
    print(f"  {'candidate':<44} {metric + ' val':>10} {metric + ' test':>10} {'drop':>6} {'size MB':>8} "
          f"{'pred ms':>8}  fate")
    for c in report["planner"]["candidates"]:
        def f(v, spec=".2f"):
            return "-" if v is None else format(v, spec)
        size = None if c.get("predicted_bytes") is None else c["predicted_bytes"] / 1e6
        fate = c["status"] + (f" ({c['reason']})" if c.get("reason") and c["status"] != "chosen" else "")
        print(f"  {' -> '.join(c['recipe']) or 'fp32 (untouched)':<44} {f(c.get('val_accuracy')):>10} "
              f"{f(c.get('accuracy')):>10} {f(c.get('accuracy_drop')):>6} {f(size, '.3f'):>8} "
              f"{f(c.get('predicted_ms')):>8}  {fate[:70]}")
    p = report["planner"]
    print(f"  search: {p.get('executor', 'serial')} x{p.get('workers', 1)}, screening {p.get('screen_seconds', 0):.0f} s, "
          f"{p.get('epochs_spent', 0)} fine-tune epochs, rungs {[r['max_epochs'] for r in p.get('rungs', [])]}")
    art = report["artifacts"][0]
    print(f"  chosen: {' -> '.join(report['recipe']) or 'untouched'}; real .tflite {art['bytes'] / 1e6:.3f} MB, "
          f"parity {art['parity']['status']}")


def no_data_decision() -> None:
    """A full-width ResNet-18-style model with no --data, over the 10 MB budget: time to the decision."""
    model_py = Path(tempfile.mkdtemp()) / "wide.py"
    model_py.write_text(
        f"import sys; sys.path.insert(0, {str(MODELS_PY.parent.parent)!r})\n"
        "from benchmarks.real_data_models import ResNet18Style\n"
        "def resnet18():\n    return ResNet18Style(num_classes=1000, width=64)\n")
    params = sum(p.numel() for p in ResNet18Style(1000, 64).parameters())
    cmd = [sys.executable, "-m", "edgecomp", "build", f"{model_py}:resnet18", "--input-shape", "1,3,96,96",
           "--target", "android-arm64", "--out", str(model_py.parent / "b"), "--formats", "tflite"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.monotonic() - start
    last = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-3:]
    print(f"\nno data: ResNet-18-style, {params:,} parameters ({params * 4 / 1e6:.1f} MB fp32), 3x96x96, "
          f"android-arm64 (10 MB), no --data")
    print(f"  exit {proc.returncode} after {seconds:.1f} s wall")
    for line in last:
        print(f"  | {line}")


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="training epochs for each model (cached)")
    parser.add_argument("--ft-epochs", type=int, default=3, help="cap on every candidate's recovery fine-tune")
    parser.add_argument("--search-time", type=float, default=900.0, help="planner search time per build, s")
    parser.add_argument("--skip-no-data", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="search with N local worker processes")
    parser.add_argument("--builds", default=",".join(BUILDS),
                        help="which builds, in order (default: all): MODEL:BUDGET[:METRIC] and no-data")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    folder = image_folder()
    builds = [b for b in args.builds.split(",") if b and not (b == "no-data" and args.skip_no_data)]
    trained = {}
    for factory in FACTORIES:
        if any(b.split(":")[0] == factory for b in builds):
            trained[factory] = train(factory, folder, args.epochs)
            print(f"{factory}: test top-1 {trained[factory][1]:.2f} % after training")
    for spec in builds:
        if spec == "no-data":
            no_data_decision()
            continue
        factory, mode, *metric = spec.split(":")
        weights = trained[factory][0]
        fp32_mb = sum(p.numel() for p in torch.load(weights, weights_only=True).values()) * 4 / 1e6
        budget = round(fp32_mb * BUDGET_FACTORS[mode], 3)
        user_metric = f"{MODELS_PY}:{metric[0]}" if metric else None
        report = plan(factory, weights, folder, budget, user_metric, args.ft_epochs, args.search_time, args.workers)
        print_plan(f"{factory}, {mode} budget {budget} MB (fp32 {fp32_mb:.2f} MB), metric "
                   + (f"{metric[0]} (custom)" if metric else "top1"), report)
    print("\n" + json.dumps({"torch": torch.__version__}))


if __name__ == "__main__":
    main()
