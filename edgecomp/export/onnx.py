"""ONNX export through torch.onnx (the torch.export-based exporter), checked with onnx.checker."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from edgecomp.bundle import TensorInfo
from edgecomp.compress.base import ExportOptions
from edgecomp.errors import ExportError
from edgecomp.export.common import ExportedArtifact, layout_of, unsupported_op_error
from edgecomp.spec import ModelSpec

logger = logging.getLogger(__name__)
OPSET = 18


def export_onnx(model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
                calibration=None) -> ExportedArtifact:
    """Write ``model`` as ONNX (opset 18) to ``path`` and run onnx.checker's full check on it."""
    import onnx

    if options.dtype not in ("fp32",):
        raise ExportError(f"ONNX export of {options.dtype} models is not available", "use fp32 for ONNX")
    example = (torch.zeros(spec.input_shape),)
    try:
        _torch_onnx_export(model, example, path, spec)
    except ExportError:
        raise
    except Exception as exc:
        raise unsupported_op_error("onnx", exc) from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model is invalid: {exc}", "report this as a bug") from exc
    return ExportedArtifact("onnx", path, "fp32", *onnx_io(path))


def _torch_onnx_export(model: nn.Module, example: tuple, path: Path, spec: ModelSpec) -> None:
    names = dict(input_names=[spec.input_name], output_names=[spec.output_name])
    if isinstance(model, torch.jit.ScriptModule):
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=OPSET, **names)
        return
    program = torch.onnx.export(model, example, dynamo=True, opset_version=OPSET, verbose=False,
                                external_data=False, **names)
    program.save(str(path), external_data=False)


_ONNX_DTYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64"}


def onnx_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Input and output tensors of an ONNX file, from its graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def info(v) -> TensorInfo:
        shape = [d.dim_value for d in v.type.tensor_type.shape.dim]
        return TensorInfo(name=v.name, shape=shape, dtype=_ONNX_DTYPES.get(v.type.tensor_type.elem_type, "float32"),
                          layout=layout_of(shape))

    return ([info(v) for v in graph.input if v.name not in initializers], [info(v) for v in graph.output])
