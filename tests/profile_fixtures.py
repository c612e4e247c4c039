"""Tiny .tflite files for the profiling tests.

tests/data/tiny_cnn_fp32.tflite and tiny_cnn_int8.tflite were written by ``regenerate()`` (litert-torch
takes ~15 s to import on a busy 2-core machine, too slow to repeat in every test run).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def tiny_cnn() -> nn.Module:
    """A small plain CNN: conv, strided conv, pooling, linear."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def write_tflite(model: nn.Module, shape: tuple[int, ...], path: Path, int8: bool = False) -> Path:
    """Convert ``model`` to .tflite at ``path`` (fp32, or int8 through PT2E with random calibration data)."""
    import litert_torch

    x = torch.randn(shape)
    if not int8:
        litert_torch.convert(model, (x,)).export(str(path))
        return path
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
    for _ in range(4):
        prepared(torch.randn(shape))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return path


def regenerate() -> None:
    """Rewrite tests/data/tiny_cnn_{fp32,int8}.tflite."""
    data = Path(__file__).parent / "data"
    write_tflite(tiny_cnn(), (1, 3, 16, 16), data / "tiny_cnn_fp32.tflite")
    write_tflite(tiny_cnn(), (1, 3, 16, 16), data / "tiny_cnn_int8.tflite", int8=True)


if __name__ == "__main__":
    regenerate()
