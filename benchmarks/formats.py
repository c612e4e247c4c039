"""The four runnable export paths side by side: .tflite (LiteRT), .onnx (onnxruntime), .pte (ExecuTorch+XNNPACK).

For the default model (edgecomp.zoo digits_cnn), MobileNetV2 224 and a MobileNetV3-style model (hard-swish,
squeeze-excite), fp32 and int8 (one ``quantize.int8`` result exported to every format: same calibration, same
scales): bytes, parity with the PyTorch reference, share of the graph delegated to XNNPACK (.pte), host p50.
All in one run on this machine (the ISA is printed). Needs ``edgecomp[executorch]``.

    python benchmarks/formats.py [--models digits,mobilenetv2,mobilenetv3] [--runs 20]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.mobilenetv2 import MobileNetV2
from edgecomp.bundle import size_of
from edgecomp.compress.base import ExportOptions, Int8Export
from edgecomp.compress.pt2e import QuantSettings
from edgecomp.compress.quantize import ptq
from edgecomp.errors import EdgecompError
from edgecomp.export.base import get_format
from edgecomp.export.parity import compare_to_reference
from edgecomp.export.runtime import run_artifact
from edgecomp.finetune import predict
from edgecomp.profile.host import measure_host
from edgecomp.profile.host_cpu import describe_host
from edgecomp.spec import ModelSpec

FORMATS = ("tflite", "onnx", "pte")


def _se(c: int) -> nn.Module:
    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(),
                                    nn.Conv2d(c // 4, c, 1), nn.Hardsigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.fc(x)

    return SE()


def mobilenetv3_style(num_classes: int = 1000) -> nn.Module:
    """A MobileNetV3-small-like network: hard-swish, squeeze-excite, depthwise inverted residuals (224x224)."""
    def block(cin: int, exp: int, cout: int, k: int, s: int, se: bool, act: type[nn.Module]) -> nn.Module:
        layers = [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), act(),
                  nn.Conv2d(exp, exp, k, s, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), act()]
        layers += [_se(exp)] if se else []
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers)

    cfg = [(16, 16, 16, 3, 2, True, nn.ReLU), (16, 72, 24, 3, 2, False, nn.ReLU), (24, 88, 24, 3, 1, False, nn.ReLU),
           (24, 96, 40, 5, 2, True, nn.Hardswish), (40, 240, 40, 5, 1, True, nn.Hardswish),
           (40, 120, 48, 5, 1, True, nn.Hardswish), (48, 288, 96, 5, 2, True, nn.Hardswish),
           (96, 576, 96, 5, 1, True, nn.Hardswish)]
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
                         *[block(*c) for c in cfg], nn.Conv2d(96, 576, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(576, 1024), nn.Hardswish(), nn.Linear(1024, num_classes))


def _models(names: list[str]):
    from edgecomp.zoo import load_zoo_model

    for name in names:
        torch.manual_seed(0)
        if name == "digits":
            model, spec, data = load_zoo_model()
            x, _ = data.sample("test", 64)
            yield "digits_cnn", model.eval(), spec, np.asarray(x, np.float32), data.calibration(seed=0)
            continue
        model = (MobileNetV2() if name == "mobilenetv2" else mobilenetv3_style()).eval()
        spec = ModelSpec(name=name, input_shape=[1, 3, 224, 224])
        rng = np.random.default_rng(0)
        yield name, model, spec, rng.standard_normal([8, 3, 224, 224]).astype(np.float32), \
            rng.standard_normal([32, 3, 224, 224]).astype(np.float32)


def main() -> None:
    """Export every model in fp32 and int8 to each format, measure, and print one table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits,mobilenetv2,mobilenetv3")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, spec, x, calib in _models(args.models.split(",")):
            int8 = ptq(copy.deepcopy(model), QuantSettings(), calib, spec.input_shape)
            for dtype, final in (("fp32", model), ("int8", int8)):
                options = ExportOptions(dtype=dtype, int8=Int8Export() if dtype == "int8" else None)
                reference = predict(final, x)
                for fmt in FORMATS:
                    plugin = get_format(fmt)
                    path = Path(tmp) / f"{name}-{dtype}{Path(plugin.filename).suffix}"
                    start = time.monotonic()
                    try:
                        art = plugin.export(final, spec, options, path, calib)
                    except EdgecompError as exc:
                        rows.append((name, dtype, fmt, None, f"FAILED: {exc.message[:60]}", "", None, 0.0))
                        continue
                    seconds = time.monotonic() - start
                    p = compare_to_reference(reference, run_artifact(fmt, path, x, spec.input_shape),
                                             quantized=dtype != "fp32")
                    share = f"{art.details['delegated_share']:.0%}" if "delegated_share" in art.details else "-"
                    portable = ",".join(art.details.get("portable_ops", {}))
                    lat = measure_host(fmt, path, 2, args.runs, 5)
                    rows.append((name, dtype, fmt, size_of(path), f"{p.status} cos {p.cosine:.5f}",
                                 share + (f" (portable: {portable})" if portable else ""), lat.p50_ms, seconds))
                    print(f"  {rows[-1]}", flush=True)
    print(f"\nhost: {describe_host()}, 2 threads, p50 of up to {args.runs} runs after 5 warm-ups")
    print(f"{'model':<12} {'dtype':<5} {'format':<7} {'bytes':>11} {'vs tflite':>9} {'parity':<24} "
          f"{'p50 ms':>8} {'vs tflite':>9} {'export s':>8}  delegated to XNNPACK")
    base = {(r[0], r[1]): r for r in rows if r[2] == "tflite" and r[3]}
    for r in rows:
        b = base.get((r[0], r[1]))
        size_ratio = f"{r[3] / b[3]:.2f}x" if b and r[3] else "-"
        lat_ratio = f"{r[6] / b[6]:.2f}x" if b and r[6] else "-"
        print(f"{r[0]:<12} {r[1]:<5} {r[2]:<7} {r[3] or 0:>11,} {size_ratio:>9} {r[4]:<24} "
              f"{r[6] or 0:>8.3f} {lat_ratio:>9} {r[7]:>8.1f}  {r[5]}")


if __name__ == "__main__":
    main()
