"""``edgecomp quant-report``: where int8 loses precision, layer by layer, in PyTorch and in the .tflite."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edgecomp.errors import ConfigError

NAME = "quant-report"
HELP = "int8 layer-wise error report (SQNR, cosine, max error per layer, fake-quant and .tflite)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edgecomp quant-report``."""
    parser.add_argument("model", nargs="?", default=None,
                        help="TorchScript, .pt2, or package.module:factory / file.py:factory (default: digits CNN)")
    parser.add_argument("--data", help="calibration/evaluation data (as for `edgecomp build --data`)")
    parser.add_argument("--weights", help="state_dict for a factory model (loaded with weights_only=True)")
    parser.add_argument("--input-shape", type=lambda t: [int(d) for d in t.replace("x", ",").split(",")],
                        help="N,C,H,W of the model input when it cannot be inferred")
    parser.add_argument("--int8", default="", metavar="SETTINGS",
                        help="quantize.int8 settings, e.g. \"weights='per-tensor', skip=['features.1*']\"")
    parser.add_argument("--samples", type=int, default=64, help="calibration inputs the report runs on")
    parser.add_argument("--top", type=int, default=10, help="layers shown in the table")
    parser.add_argument("--no-tflite", action="store_true", help="skip the .tflite column (no conversion)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")


def run(args: argparse.Namespace) -> int:
    """Quantize the model as ``quantize.int8`` would, measure every layer, print the worst."""
    import numpy as np

    from edgecomp.compress import quant_report as qr
    from edgecomp.compress.base import BuildContext, get_stage
    from edgecomp.compress.recipe import parse_recipe
    from edgecomp.export.tflite import export_tflite
    from edgecomp.model import load_model
    from edgecomp.targets import load_profile, load_target

    if args.samples < 1:
        raise ConfigError(f"--samples {args.samples}", "give 1 or more calibration inputs")
    (step,) = parse_recipe(f"quantize.int8({args.int8})")
    cfg = step.config.model_copy(update={"qat": "never", "report_samples": args.samples, "max_drop": None})
    loaded = load_model(args.model, args.input_shape, args.weights)
    if args.data:
        from edgecomp.data.sources import load_data
        from edgecomp.metrics import load_metric

        loaded.data = load_data(args.data, 0)
        if loaded.data.metric is None:
            loaded.data.metric = load_metric(None)
    target = load_target("android-arm64")
    ctx = BuildContext(spec=loaded.spec, target=target, profile=load_profile(target.hardware), data=loaded.data)
    result = get_stage(step.name)().apply(loaded.module, cfg, ctx)
    calib = (loaded.data.calibration(args.samples) if loaded.data is not None
             else np.random.default_rng(0).standard_normal([args.samples, *loaded.spec.input_shape[1:]]))
    errors = qr.layer_errors(result.model, np.asarray(calib, np.float32))
    if not args.no_tflite:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.tflite"
            export_tflite(result.model, loaded.spec, result.export, path)
            qr.tflite_layer_errors(path, result.model, errors, np.asarray(calib, np.float32))
    report = {"model": loaded.spec.name, "samples": len(calib), "settings": result.export.int8.model_dump() if result.export.int8 else None,
              "val_metric_float": result.metrics.get("val_accuracy_float"),
              "val_metric_int8": result.metrics.get("val_accuracy_ptq"), **qr.summary(errors)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{loaded.spec.name}: int8 layer-wise error on {len(calib)} calibration inputs "
          f"({'no --data: random normal inputs' if loaded.data is None else args.data or loaded.data.name})")
    if report["val_metric_float"] is not None:
        print(f"validation metric: float {report['val_metric_float']:.2f}, int8 {report['val_metric_int8']:.2f}")
    print(qr.format_table(errors, args.top))
    low = qr.worst(errors, 1, "sqnr_db")
    if low:
        print(f"lowest SQNR: {low[0].name} {low[0].sqnr_db:.1f} dB; most sensitive: "
              f"{', '.join(report['most_sensitive'][:3])} (keep one float with --int8 \"skip=['NAME']\")")
    return 0
