"""Pruning methods side by side, measured in one run; prints one table.

    .venv/bin/python benchmarks/pruning.py [--quick] [--finetune-s 60] [--search-s 60]

For the default digits CNN (``digits_cnn``) and the VGG-style CNN (``vgg_digits``): the unpruned model,
``prune.magnitude`` (unstructured, 80 % sparsity), ``prune.filter`` (structured, ratio 0.5: L1 per layer,
and Taylor with a global threshold) and ``prune.epruning`` (energy-based with binary DE; once free, once
with at most half the units active). Each pruned model is fine-tuned with distillation from the unpruned
one (time-budgeted), exported to ONNX and TFLite, and both files are run on the 360-image digits test
split and compared with PyTorch (edgecomp.export.parity.compare_to_reference). Columns: params (nonzero where they
differ), MACs, .tflite bytes and their zlib size, PyTorch top-1, drop vs the unpruned model, parity.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from edgecomp.bundle import deflate_size
from edgecomp.compress.base import BuildContext, ExportOptions, get_stage
from edgecomp.compress.recipe import parse_recipe
from edgecomp.export.onnx import export_onnx
from edgecomp.export.parity import compare_to_reference
from edgecomp.export.runtime import run_artifact
from edgecomp.export.tflite import export_tflite
from edgecomp.finetune import accuracy, predict
from edgecomp.model import count_macs, count_params
from edgecomp.targets import load_profile, load_target
from edgecomp.zoo import load_zoo_model


def methods(ft: float, search: float, quick: bool) -> dict[str, str]:
    """Method label -> recipe (every fine-tune and search bounded by the given seconds)."""
    t = f"finetune_time_s={ft}"
    out = {
        "unpruned": "",
        "magnitude 80%": f"prune.magnitude(sparsity=0.8, steps=2, finetune_epochs=8, finetune_time_s={ft / 2})",
        "filter L1 0.5": f"prune.filter(ratio=0.5, finetune_epochs=30, {t})",
        "filter Taylor-global 0.5": f"prune.filter(ratio=0.5, criterion='taylor', scope='global', finetune_epochs=30, {t})",
        "EPruning": f"prune.epruning(max_epochs=15, search_time_s={search}, finetune_epochs=30, {t})",
        "EPruning max_active=0.5": f"prune.epruning(max_active=0.5, max_epochs=15, search_time_s={search}, "
                                   f"finetune_epochs=30, {t})",
    }
    if quick:
        out.pop("filter Taylor-global 0.5")
    return out


def _nonzero(model: torch.nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def measure(label: str, method: str, model, spec, data, base_acc: float | None, folder: Path, seconds: float,
            metrics: dict) -> dict:
    """Export ``model`` to ONNX and TFLite, check both against PyTorch on the test split, return a row."""
    x = data.arrays("test")[0]
    reference = predict(model, x)
    acc = accuracy(model, x, data.arrays("test")[1])
    row = {"model": label, "method": method, "params": count_params(model), "nonzero": _nonzero(model),
           "macs": count_macs(model, spec.input_shape), "acc": acc,
           "drop": 0.0 if base_acc is None else base_acc - acc, "seconds": seconds,
           "rate": metrics.get("pruning_rate", metrics.get("channel_pruning_rate"))}
    for fmt, export in (("onnx", export_onnx), ("tflite", export_tflite)):
        path = folder / f"{label}-{method.replace(' ', '_')}.{fmt}"
        with contextlib.redirect_stdout(io.StringIO()):  # converters print progress bars
            art = export(model, spec, ExportOptions(), path, None)
        outputs = run_artifact(fmt, art.path, x, spec.input_shape, threads=2)
        parity = compare_to_reference(reference, outputs)
        row[f"{fmt}_parity"] = f"{parity.status} ({parity.max_abs_err:.1e})"
        if fmt == "tflite":
            row["tflite_bytes"] = art.path.stat().st_size
            row["tflite_deflate"] = deflate_size(art.path)
    return row


def run(label: str, recipes: dict[str, str], folder: Path) -> list[dict]:
    """Apply every recipe to a fresh copy of zoo model ``label`` and measure it."""
    model, spec, data = load_zoo_model(label)
    target = load_target("android-arm64")
    base_acc = accuracy(model, *data.arrays("test"))
    rows = []
    for method, recipe in recipes.items():
        ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data,
                           teacher=model, seed=0)
        current, metrics, start = model, {}, time.monotonic()
        for step in parse_recipe(recipe) if recipe else []:
            result = get_stage(step.name)().apply(current, step.config, ctx)
            current, metrics = result.model.eval(), result.metrics
        rows.append(measure(label, method, current, spec, data, base_acc, folder, time.monotonic() - start, metrics))
        r = rows[-1]
        logging.getLogger("bench").warning("%s %s: %d params, acc %.2f%% (%.0f s)", label, method, r["params"],
                                           r["acc"], r["seconds"])
    return rows


def format_table(rows: list[dict]) -> str:
    """The table as printed: one line per model and method, ratios against that model's unpruned row."""
    head = (f"{'model':<11} {'method':<25} {'params':>9} {'nonzero':>9} {'removed':>8} {'MACs':>10} {'MACs x':>7} "
            f"{'tflite B':>9} {'tflite x':>8} {'zlib B':>9} {'top-1 %':>8} {'drop pt':>8} {'onnx parity':>18} "
            f"{'tflite parity':>18} {'s':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["method"] == "unpruned")
        removed = 1 - r["nonzero"] / base["params"]
        lines.append(
            f"{r['model']:<11} {r['method']:<25} {r['params']:>9} {r['nonzero']:>9} {removed:>7.1%} {r['macs']:>10} "
            f"{base['macs'] / r['macs']:>6.2f}x {r['tflite_bytes']:>9} {base['tflite_bytes'] / r['tflite_bytes']:>7.2f}x "
            f"{r['tflite_deflate']:>9} {r['acc']:>8.2f} {r['drop']:>8.2f} {r['onnx_parity']:>18} "
            f"{r['tflite_parity']:>18} {r['seconds']:>5.0f}")
    return "\n".join(lines)


def main() -> None:
    """Run both models through every method and print the table and the target checks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-s", type=float, default=45.0, help="time budget of each fine-tune, seconds")
    parser.add_argument("--search-s", type=float, default=45.0, help="time budget of each EPruning search, seconds")
    parser.add_argument("--quick", action="store_true", help="skip the Taylor row")
    parser.add_argument("--models", default="digits_cnn,vgg_digits", help="comma-separated zoo models")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(2)
    recipes = methods(args.finetune_s, args.search_s, args.quick)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.models.split(","):
            rows += run(label, recipes, Path(tmp))
    print(format_table(rows))
    print()

    def find(model: str, method: str) -> dict | None:
        return next((r for r in rows if r["model"] == model and r["method"] == method), None)

    base, f = find("vgg_digits", "unpruned"), find("vgg_digits", "filter L1 0.5")
    if base and f:
        print(f"target prune.filter 0.5 on vgg_digits: .tflite -{1 - f['tflite_bytes'] / base['tflite_bytes']:.1%}, "
              f"MACs -{1 - f['macs'] / base['macs']:.1%} (need >= 40%), drop {f['drop']:.2f} pt (need <= 1)")
    base = find("digits_cnn", "unpruned")
    for method in ("EPruning", "EPruning max_active=0.5"):
        e = find("digits_cnn", method)
        if base and e:
            print(f"target {method} on digits_cnn: {1 - e['params'] / base['params']:.1%} of parameters removed "
                  f"(aim >= 50%), drop {e['drop']:.2f} pt (aim <= 5)")


if __name__ == "__main__":
    main()
