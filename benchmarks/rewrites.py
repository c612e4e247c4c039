"""Architecture rewrites on the VGG-style digits CNN: separable and low-rank, with and without distillation.

One run, one table: for the original model and each rewrite (initialisation only, fine-tuned on labels,
fine-tuned with distillation from the original), the parameters, MACs, .tflite bytes, test accuracy,
LiteRT host latency (p50, 2 threads) and ONNX/TFLite parity on the digits test set, with ratios to the
original. Every number is measured here, in this run.

    EDGECOMP_CACHE_DIR=/tmp/ec_cache .venv/bin/python benchmarks/rewrites.py [--epochs 15] [--quick]

Training uses one torch thread: on a shared 2-core machine that is several times faster than two.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgecomp.compress.base import BuildContext, ExportOptions, get_stage
from edgecomp.compress.recipe import parse_recipe
from edgecomp.export.onnx import export_onnx
from edgecomp.export.parity import compare_to_reference
from edgecomp.export.runtime import run_artifact
from edgecomp.export.tflite import export_tflite
from edgecomp.finetune import accuracy, predict
from edgecomp.model import count_macs, count_params
from edgecomp.profile.host import measure_host
from edgecomp.targets import load_profile, load_target
from edgecomp.zoo import load_zoo_model

logger = logging.getLogger("rewrites")


@dataclass
class Row:
    """One measured model."""

    method: str
    params: int
    macs: int
    tflite_bytes: int
    accuracy: float
    p50_ms: float
    parity: str
    seconds: float


def recipes(epochs: int) -> list[tuple[str, str]]:
    """(label, recipe) per rewritten model; labels say how it was trained."""
    ft = f"epochs={epochs}, patience={epochs}"
    return [
        ("separable r1, SVD init only", "separable(rank=1, epochs=0)"),
        ("separable r1 + FT (labels)", f"separable(rank=1, {ft}, distill=False)"),
        ("separable r1 + FT (distill)", f"separable(rank=1, {ft})"),
        ("separable MACs/6 + FT (distill)", f"separable(mac_reduction=6, {ft})"),
        ("lowrank e=0.7, init only", "lowrank(energy=0.7, epochs=0)"),
        ("lowrank e=0.7 + FT (labels)", f"lowrank(energy=0.7, {ft}, distill=False)"),
        ("lowrank e=0.7 + FT (distill)", f"lowrank(energy=0.7, {ft})"),
    ]


def run_recipe(model: torch.nn.Module, recipe: str, ctx: BuildContext) -> torch.nn.Module:
    """Apply each stage of ``recipe`` in turn (as ``edgecomp build`` does) and return the final model."""
    for step in parse_recipe(recipe):
        model = get_stage(step.name)().apply(model, step.config, ctx).model.eval()
    return model


def measure(label: str, model: torch.nn.Module, ctx: BuildContext, folder: Path, seconds: float) -> Row:
    """Export to ONNX and TFLite, check parity of both on the test set, time the .tflite on the host."""
    data, spec = ctx.data, ctx.spec
    ref = predict(model, data.arrays("test")[0])
    slug = "".join(c if c.isalnum() else "_" for c in label)
    checks = []
    for fmt, exporter in (("onnx", export_onnx), ("tflite", export_tflite)):
        path = folder / f"{slug}.{fmt}"
        exporter(model, spec, ExportOptions(), path)
        parity = compare_to_reference(ref, run_artifact(fmt, path, data.arrays("test")[0], spec.input_shape))
        checks.append(f"{fmt}:{'ok' if parity.status == 'passed' else 'FAIL'}({parity.max_abs_err:.0e})")
        if parity.status != "passed":
            logger.error("%s %s parity failed: %s", label, fmt, parity)
    tfl = folder / f"{slug}.tflite"
    latency = measure_host("tflite", tfl, threads=2, runs=500, warmup=50)
    return Row(label, count_params(model), count_macs(model, spec.input_shape), tfl.stat().st_size,
               accuracy(model, *data.arrays("test")), latency.p50_ms, " ".join(checks), seconds)


def table(rows: list[Row]) -> str:
    """The comparison table, ratios against the first row."""
    base = rows[0]
    head = (f"{'method':<32} {'params':>9} {'x':>6} {'MACs':>9} {'x':>6} {'tflite B':>9} {'x':>6} "
            f"{'acc %':>6} {'d pt':>6} {'p50 ms':>7} {'x':>5} {'train s':>7}  parity (max abs err)")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.method:<32} {r.params:>9,} {base.params / r.params:>5.2f}x {r.macs:>9,} {base.macs / r.macs:>5.2f}x "
            f"{r.tflite_bytes:>9,} {base.tflite_bytes / r.tflite_bytes:>5.2f}x {r.accuracy:>6.2f} "
            f"{r.accuracy - base.accuracy:>+6.2f} {r.p50_ms:>7.3f} {base.p50_ms / r.p50_ms:>4.2f}x {r.seconds:>7.1f}  "
            f"{r.parity}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs per rewrite (default 15)")
    parser.add_argument("--quick", action="store_true", help="only the separable rank-1 rows")
    parser.add_argument("--verbose", action="store_true", help="log per-layer reports and progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    torch.set_num_threads(1)
    start = time.monotonic()
    model, spec, data = load_zoo_model("vgg_digits")
    target = load_target("android-arm64")
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=model)
    todo = recipes(args.epochs)
    if args.quick:
        todo = [t for t in todo if "separable r1" in t[0]]
    with tempfile.TemporaryDirectory(prefix="edgecomp-rewrites-") as tmp:
        folder = Path(tmp)
        rows = [measure("original (vgg_digits)", model, ctx, folder, 0.0)]
        for label, recipe in todo:
            print(f"... {label}: {recipe}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            torch.manual_seed(0)
            rewritten = run_recipe(model, recipe, ctx)
            rows.append(measure(label, rewritten, ctx, folder, time.monotonic() - t0))
    print(f"VGG-style digits CNN ({spec.input_shape}), digits test set n={data.size('test')}; "
          f"LiteRT fp32 host p50 over 500 runs, 2 threads; FT = {args.epochs} epochs; one run, "
          f"{time.monotonic() - start:.0f} s")
    print(table(rows))
    return 0 if all("FAIL" not in r.parity for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
