"""Built-in micro-benchmarks: small .tflite graphs that each exercise one kind of op, for calibration.

``edgecomp profile --calibrate host`` times them here and ``--calibrate NAME --device SERIAL`` on a
phone; the fit (:mod:`edgecomp.profile.calibrate`) then sets a profile's efficiencies from them. They
ship inside the package (``edgecomp/resources/microbench/<name>_<dtype>.tflite``, fp32 and int8, random
weights), made once by :func:`generate` (``python -m edgecomp.profile.microbench``), so calibrating needs
no export. Each graph is small (under 1 MB), so a run takes milliseconds, and together they cover
every op type the predictor costs: 3x3, 1x1 and depthwise convolutions, fully connected layers,
residual adds, hard-swish, squeeze-and-excitation gates, pooling and concatenation.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
DTYPES = ("fp32", "int8")


def _models() -> dict[str, tuple[Any, int]]:
    """name -> (torch module factory, input side); torch is imported only here."""
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: type = nn.ReLU) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                             act())

    class Residual(nn.Module):
        def __init__(self, c: int, n: int) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(cbr(c, c, 1) for _ in range(n))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = x + block(x)
            return x

    class Gate(nn.Module):  # squeeze-and-excitation
        def __init__(self, c: int) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(),
                                    nn.Conv2d(c // 4, c, 1), nn.Hardsigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.fc(x)

    class Branches(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a, self.b = cbr(c, c, 1), cbr(c, c, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.a(x), self.b(x), x], 1)

    class Inverted(nn.Module):  # MobileNetV2's block
        def __init__(self, c: int) -> None:
            super().__init__()
            self.body = nn.Sequential(cbr(c, 4 * c, 1, act=nn.ReLU6), cbr(4 * c, 4 * c, 3, groups=4 * c, act=nn.ReLU6),
                                      nn.Conv2d(4 * c, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    def stem(c: int, act: type = nn.ReLU) -> nn.Module:
        return cbr(3, c, 3, 2, act=act)

    return {
        "conv3x3": (lambda: nn.Sequential(stem(32), cbr(32, 32), cbr(32, 32)), 96),
        "conv3x3_wide": (lambda: nn.Sequential(stem(16), cbr(16, 128, 3, 2), cbr(128, 128)), 64),
        "pointwise": (lambda: nn.Sequential(stem(32), cbr(32, 128, 1), cbr(128, 32, 1), cbr(32, 128, 1)), 96),
        "depthwise": (lambda: nn.Sequential(stem(64), cbr(64, 64, 3, groups=64), cbr(64, 64, 3, groups=64),
                                            cbr(64, 64, 3, 2, groups=64)), 128),
        "fully_connected": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 384), nn.ReLU(),
                                                  nn.Linear(384, 384)), 8),
        "residual_add": (lambda: nn.Sequential(stem(32), Residual(32, 3)), 96),
        "hard_swish": (lambda: nn.Sequential(stem(32, nn.Hardswish), cbr(32, 64, 1, act=nn.Hardswish),
                                             cbr(64, 32, 1, act=nn.Hardswish)), 96),
        "se_gate": (lambda: nn.Sequential(stem(64), Gate(64), cbr(64, 64, 1), Gate(64)), 96),
        "pooling": (lambda: nn.Sequential(stem(32), nn.MaxPool2d(2), cbr(32, 32, 1), nn.AvgPool2d(2),
                                          nn.AdaptiveAvgPool2d(1)), 128),
        "concat": (lambda: nn.Sequential(stem(16), Branches(16), cbr(48, 16, 1)), 96),
        "inverted_residual": (lambda: nn.Sequential(stem(24), Inverted(24), Inverted(24)), 96),
    }


def folder() -> Path:
    """The folder of the shipped micro-benchmark .tflite files."""
    return Path(str(files("edgecomp").joinpath("resources", "microbench")))


def microbench_files(names: list[str] | None = None) -> dict[tuple[str, str], Path]:
    """(name, dtype) -> shipped .tflite file of each micro-benchmark (``names``: only these)."""
    out = {}
    for path in sorted(folder().glob("*.tflite")):
        name, _, dtype = path.stem.rpartition("_")
        if dtype in DTYPES and (names is None or name in names):
            out[(name, dtype)] = path
    return out


def generate(out: Path | None = None, names: list[str] | None = None) -> list[Path]:
    """Export every micro-benchmark at fp32 and int8 (full integer, float I/O, calibrated on random inputs)
    with edgecomp's own exporter into ``out`` (default: the package's folder; ``names``: only these);
    returns the files."""
    import numpy as np
    import torch

    from edgecomp.compress.base import ExportOptions
    from edgecomp.compress.pt2e import QuantSettings
    from edgecomp.compress.quantize import ptq
    from edgecomp.export.tflite import export_tflite
    from edgecomp.spec import ModelSpec

    out = out or folder()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (factory, side) in _models().items():
        if names is not None and name not in names:
            continue
        for dtype in DTYPES:
            torch.manual_seed(0)
            model = factory().eval()
            shape = [1, 3, side, side]
            settings: dict[str, Any] = {}
            if dtype == "int8":
                calib = np.random.default_rng(0).standard_normal([8, *shape[1:]]).astype(np.float32)
                model, settings = ptq(model, QuantSettings(), calib, shape), {"mode": "static", "io": "float"}
            path = out / f"{name}_{dtype}.tflite"
            export_tflite(model, ModelSpec(name=name, input_shape=shape), ExportOptions(dtype=dtype, settings=settings),
                          path)
            logger.info("wrote %s (%d bytes)", path, path.stat().st_size)
            written.append(path)
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    generate()
