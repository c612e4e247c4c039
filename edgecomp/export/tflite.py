"""TFLite (LiteRT) export through litert-torch, which converts a torch.export program directly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgecomp.bundle import Quantization, TensorInfo
from edgecomp.compress.base import ExportOptions
from edgecomp.errors import ExportError
from edgecomp.export.common import ExportedArtifact, layout_of, unsupported_op_error
from edgecomp.spec import ModelSpec

logger = logging.getLogger(__name__)


def export_tflite(model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
                  calibration: np.ndarray | None = None) -> ExportedArtifact:
    """Write ``model`` as a .tflite flatbuffer; the dtype comes from ``options`` (fp32 here)."""
    import litert_torch
    from litert_torch import progress

    progress.console.quiet = not logger.isEnabledFor(logging.DEBUG)
    if isinstance(model, torch.jit.ScriptModule):
        raise ExportError(
            "TFLite export needs an nn.Module or a torch.export program, not TorchScript",
            "pass the model as package.module:factory or a .pt2 file, or use --skip-failed-formats",
        )
    if options.dtype != "fp32":
        raise ExportError(f"TFLite export of {options.dtype} models is not available", "use fp32")
    example = (torch.zeros(spec.input_shape),)
    try:
        edge_model = litert_torch.convert(model.eval(), example)
        edge_model.export(str(path))
    except Exception as exc:
        raise unsupported_op_error("tflite", exc) from exc
    return ExportedArtifact("tflite", path, "fp32", *tflite_io(path))


_TFL_DTYPES = {np.float32: "float32", np.float16: "float16", np.int8: "int8", np.uint8: "uint8",
               np.int32: "int32", np.int64: "int64"}


def tflite_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Input and output tensors of a .tflite file, as the LiteRT interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))

    def info(d: dict) -> TensorInfo:
        shape = [int(s) for s in d["shape"]]
        scale, zero = d.get("quantization", (0.0, 0))
        quant = Quantization(scale=float(scale), zero_point=int(zero)) if scale else None
        return TensorInfo(name=d["name"], shape=shape, dtype=_TFL_DTYPES.get(d["dtype"], "float32"),
                          layout=layout_of(shape), quantization=quant)

    return [info(d) for d in interp.get_input_details()], [info(d) for d in interp.get_output_details()]
