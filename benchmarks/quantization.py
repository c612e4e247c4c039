"""Reduced precision, measured in one run: bytes, bytes/parameter, ratio to fp32, accuracy, parity, host p50.

Run: ``EDGECOMP_CACHE_DIR=/tmp/ec_cache .venv/bin/python benchmarks/quantization.py [--quick]``

Models: the default digits CNN (trained; accuracy on the scikit-learn digits test split) and a
MobileNetV2 (224x224, 1000 classes, random weights with random BatchNorm statistics: size and latency
only). Parity compares each artifact with its own PyTorch reference (the fake-quant model for int8)
by top-1 agreement and the smallest per-sample cosine. Host latency is LiteRT / onnxruntime on this
machine (x86 without VNNI: int8 is not faster here; see docs for ARM).

Other modules add rows with one line in ``ROW_SOURCES``: each entry names a module that defines
``rows(name, model, spec, data, fp32_bytes, workdir) -> list[dict]`` where every dict has the keys
``method``, ``bytes`` and optionally ``accuracy``, ``parity``, ``p50_ms``, ``note``. A module that
does not exist (yet) is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mobilenetv2 import MobileNetV2

from edgecomp.bundle import size_of
from edgecomp.compress.base import BuildContext, get_stage
from edgecomp.compress.recipe import parse_recipe
from edgecomp.errors import EdgecompError
from edgecomp.export.base import get_format
from edgecomp.export.parity import compare_to_reference
from edgecomp.export.runtime import run_artifact
from edgecomp.finetune import predict
from edgecomp.profile.host import measure_host
from edgecomp.spec import ModelSpec
from edgecomp.targets import load_profile, load_target
from edgecomp.zoo import load_zoo_model

logger = logging.getLogger("benchmarks.quantization")

ROW_SOURCES = [
    "edgecomp.compress.binarize",  # binarize + packed 1-bit rows (other half of issue 9)
    "edgecomp.compress.cluster",  # k-means weight sharing + Huffman rows
]

# (label, recipe, formats, export settings override): the rows this module measures itself
DIGITS_METHODS = [
    ("fp32", None, ["tflite", "onnx"], {}),
    ("fp16 weights", "quantize.fp16", ["tflite", "onnx"], {}),
    ("dynamic-range int8", "quantize.dynamic", ["tflite"], {}),
    ("int8 per-channel, minmax", "quantize.int8", ["tflite", "onnx"], {}),
    ("int8 per-channel, untrimmed", "quantize.int8(trim=False)", ["tflite"], {}),
    ("int8 per-channel, int8 I/O", "quantize.int8(io='int8')", ["tflite"], {}),
    ("int8 per-channel, percentile", "quantize.int8(calibration='percentile')", ["tflite"], {}),
    ("int8 per-channel, mse", "quantize.int8(calibration='mse')", ["tflite"], {}),
    ("int8 per-channel, entropy", "quantize.int8(calibration='entropy')", ["tflite"], {}),
    ("int8 per-channel, stochastic rounding", "quantize.int8(rounding='stochastic')", ["tflite"], {}),
    ("int8 fixed point (dynamic Qm.n)", "quantize.int8(fixed_point='dynamic')", ["tflite"], {}),
    ("int8 per-tensor weights", "quantize.int8(weights='per-tensor')", ["tflite", "onnx"], {}),
]
MOBILENET_METHODS = [
    ("fp32", None, ["tflite", "onnx"], {}),
    ("fp16 weights", "quantize.fp16", ["tflite"], {}),
    ("dynamic-range int8", "quantize.dynamic", ["tflite"], {}),
    ("int8 per-channel, untrimmed", "quantize.int8(trim=False, qat='never')", ["tflite"], {}),
    ("int8 per-channel, trimmed", "quantize.int8(qat='never')", ["tflite", "onnx"], {}),
    ("int8 per-tensor weights", "quantize.int8(weights='per-tensor', qat='never')", ["tflite"], {}),
]


def mobilenet() -> tuple[torch.nn.Module, ModelSpec]:
    """MobileNetV2 with random weights and random (realistic) BatchNorm statistics."""
    torch.manual_seed(0)
    model = MobileNetV2()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval(), ModelSpec(name="mobilenetv2", input_shape=[1, 3, 224, 224])


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def measure(name, model, spec, data, methods, workdir: Path, x_eval, y_eval, calib, runs: int) -> list[dict]:
    """Apply each method's recipe, export, and measure bytes, accuracy, parity and host p50."""
    target = load_target("android-arm64")
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for label, recipe, formats, _ in methods:
        ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=model)
        final, note = model, ""
        if recipe:
            step = parse_recipe(recipe)[0]
            if data is None and step.name == "quantize.int8":
                np.save(workdir / "calib.npy", calib)
                step = parse_recipe(recipe[:-1] + f", calibration_data='{workdir / 'calib.npy'}')"
                                    if recipe.endswith(")") else recipe + f"(calibration_data='{workdir / 'calib.npy'}')")[0]
            with _quiet():
                result = get_stage(step.name)().apply(copy.deepcopy(model), step.config, ctx)
            final, ctx.export = result.model, result.export or ctx.export
        reference = predict(final, x_eval)
        for fmt in formats:
            path = workdir / f"{name}-{label.replace(' ', '_').replace(',', '')}.{fmt}"
            start = time.monotonic()
            try:
                with _quiet():
                    art = get_format(fmt).export(final, spec, ctx.export, path, calib)
            except EdgecompError as exc:
                rows.append({"model": name, "method": label, "format": fmt, "bytes": None, "note": exc.message})
                continue
            out = run_artifact(fmt, art.path, x_eval, spec.input_shape)
            p = compare_to_reference(reference, out, quantized=art.dtype != "fp32")
            acc = float((out.argmax(1) == y_eval).mean() * 100) if y_eval is not None else None
            lat = measure_host(fmt, art.path, 2, runs, 5)
            rows.append({"model": name, "method": label, "format": fmt, "dtype": art.dtype, "bytes": size_of(art.path),
                         "params": params, "accuracy": acc, "parity": f"{p.status} {p.top1_agreement:.1f}%/{p.cosine:.4f}",
                         "p50_ms": lat.p50_ms, "details": art.details, "seconds": time.monotonic() - start, "note": note})
            logger.info("%s %s %s: %d B", name, label, fmt, rows[-1]["bytes"])
    return rows


def extra_rows(name, model, spec, data, fp32_bytes: int, workdir: Path) -> tuple[list[dict], list[str]]:
    """Rows from the modules in ROW_SOURCES (skipped, with a note, when a module is missing)."""
    rows, notes = [], []
    params = sum(p.numel() for p in model.parameters())
    for module_name in ROW_SOURCES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            notes.append(f"{module_name}: not present, no rows")
            continue
        if not hasattr(module, "rows"):
            notes.append(f"{module_name}: defines no rows()")
            continue
        for r in module.rows(name, model, spec, data, fp32_bytes, workdir):
            rows.append({"model": name, "format": r.get("format", "bundle"), "params": params, **r})
    return rows, notes


def print_table(rows: list[dict], fp32: dict[str, int]) -> None:
    """One table: method, bytes, bytes/param, ratio to the fp32 file of the same format, accuracy, parity, p50."""
    head = f"{'model':<12} {'method':<38} {'fmt':<6} {'bytes':>10} {'B/param':>8} {'x fp32':>7} {'acc %':>6} " \
           f"{'parity (top1/min cos)':<28} {'p50 ms':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.get("bytes") is None:
            print(f"{r['model']:<12} {r['method']:<38} {r['format']:<6} {'failed: ' + r.get('note', '')}")
            continue
        base = fp32.get((r["model"], r["format"])) or fp32.get((r["model"], "tflite"))
        acc = "n/a" if r.get("accuracy") is None else f"{r['accuracy']:.2f}"
        p50 = "n/a" if r.get("p50_ms") is None else f"{r['p50_ms']:.3f}"
        print(f"{r['model']:<12} {r['method']:<38} {r['format']:<6} {r['bytes']:>10,} {r['bytes'] / r['params']:>8.3f} "
              f"{r['bytes'] / base:>7.3f} {acc:>6} {r.get('parity', 'n/a'):<28} {p50:>8}")


def print_breakdown(rows: list[dict], model: str, label: str) -> None:
    """The byte breakdown of one int8 .tflite before and after trimming."""
    row = next((r for r in rows if r["model"] == model and r["method"] == label and r["format"] == "tflite"), None)
    if row is None or "byte_breakdown" not in row.get("details", {}):
        return
    before, after = row["details"]["byte_breakdown_untrimmed"], row["details"]["byte_breakdown"]
    print(f"\nbyte breakdown of {model} {label}.tflite: untrimmed {row['details']['bytes_untrimmed']:,} B "
          f"-> trimmed {row['bytes']:,} B")
    print(f"{'part':<22} {'untrimmed':>12} {'trimmed':>12}")
    for k in before:
        print(f"{k:<22} {before[k]:>12,} {after[k]:>12,}")
    print(f"{'total':<22} {sum(before.values()):>12,} {sum(after.values()):>12,}")
    print(f"ops: {row['details']['tflite_ops']}")


def main() -> None:
    """Measure every row and print the table and the MobileNetV2 byte breakdowns."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits model only")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per artifact")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, spec, data = load_zoo_model("digits_cnn")
        rows += measure("digits_cnn", model, spec, data, DIGITS_METHODS, work, *data.arrays("test"),
                        data.calibration(256), args.runs)
        fp32_digits = next(r["bytes"] for r in rows if r["method"] == "fp32" and r["format"] == "tflite")
        more, n = extra_rows("digits_cnn", model, spec, data, fp32_digits, work)
        rows += more
        notes += n
        if not args.quick:
            net, mspec = mobilenet()
            rng = np.random.default_rng(0)
            calib = rng.standard_normal((16, 3, 224, 224)).astype(np.float32)
            x_eval = rng.standard_normal((16, 3, 224, 224)).astype(np.float32)
            rows += measure("mobilenetv2", net, mspec, None, MOBILENET_METHODS, work, x_eval, None, calib, args.runs)
            fp32_mnv2 = next(r["bytes"] for r in rows if r["model"] == "mobilenetv2" and r["method"] == "fp32")
            more, n = extra_rows("mobilenetv2", net, mspec, None, fp32_mnv2, work)
            rows += more
            notes += n
    fp32 = {(r["model"], r["format"]): r["bytes"] for r in rows if r["method"] == "fp32" and r.get("bytes")}
    print_table(rows, fp32)
    for note in dict.fromkeys(notes):
        print(f"note: {note}")
    print_breakdown(rows, "mobilenetv2", "int8 per-channel, trimmed")
    print_breakdown(rows, "digits_cnn", "int8 per-channel, minmax")


if __name__ == "__main__":
    main()
