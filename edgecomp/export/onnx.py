"""ONNX export through torch.onnx (the torch.export-based exporter), checked with onnx.checker."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from edgecomp.bundle import TensorInfo
from edgecomp.compress.base import ExportOptions
from edgecomp.errors import ExportError
from edgecomp.export.base import Format
from edgecomp.export.common import ExportedArtifact, layout_of, unsupported_op_error
from edgecomp.quiet import quiet
from edgecomp.spec import ModelSpec

logger = logging.getLogger(__name__)
OPSET = 18


@quiet("onnx export")
def export_onnx(model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
                calibration=None) -> ExportedArtifact:
    """Write ``model`` as ONNX (opset 18) to ``path`` and run onnx.checker's full check on it.

    int8 (static) exports the fake-quant reference graph of ``quantize.int8`` as QDQ ONNX, so the
    scales and int8 weights are exactly the reference's; onnxruntime fuses it into integer kernels
    (QLinearConv, QGemm). Dynamic-range int8 and fp16 are written by onnxruntime's tools from the
    float model (see ``export_onnx_reduced``).
    """
    import onnx

    if options.dtype not in ("fp32", "fp16", "int8"):
        raise ExportError(f"ONNX export of {options.dtype} models is not available", "use fp32, fp16 or int8")
    example = (torch.zeros(spec.input_shape),)
    if options.dtype != "fp32":
        return export_onnx_reduced(model, spec, options, path, example)
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
    names = {"input_names": [spec.input_name], "output_names": spec.output_names()}
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


def export_onnx_reduced(model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
                        example: tuple) -> ExportedArtifact:
    """int8 (QDQ from the reference graph, or dynamic-range) and fp16 (float16 weights, float I/O) ONNX."""
    import onnx

    from edgecomp.compress.pt2e import QuantizedModel

    mode = options.int8.mode if options.int8 else "static"
    notes: list[str] = []
    try:
        if options.dtype == "int8" and mode == "static":
            if not isinstance(model, QuantizedModel):
                raise ExportError("int8 ONNX export needs the model returned by quantize.int8",
                                  "put quantize.int8 last in the recipe")
            _torch_onnx_export(model.reference, example, path, spec)
            notes.append("QDQ int8; on x86 without VNNI run it with session option session.qdqisint8allowed=1 "
                         "(edgecomp's runner does) or the U8S8 kernels saturate")
        else:
            source = model.float_model if isinstance(model, QuantizedModel) else model
            tmp = path.with_suffix(".fp32.onnx")
            _torch_onnx_export(source, example, tmp, spec)
            try:
                if options.dtype == "fp16":
                    from onnxruntime.transformers.float16 import convert_float_to_float16

                    half = convert_float_to_float16(onnx.load(str(tmp)), keep_io_types=True)
                    onnx.save(_toposort(half), str(path))
                else:
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    quantize_dynamic(str(tmp), str(path), weight_type=QuantType.QInt8, per_channel=True,
                                     op_types_to_quantize=["MatMul", "Gemm"])
                    notes.append("dynamic-range int8 covers MatMul/Gemm weights only here; "
                                 "conv weights stay float32 in this ONNX file")
            finally:
                tmp.unlink(missing_ok=True)
    except ExportError:
        raise
    except Exception as exc:
        raise unsupported_op_error("onnx", exc) from exc
    _strip_metadata(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model is invalid: {exc}", "report this as a bug") from exc
    return ExportedArtifact("onnx", path, options.dtype, *onnx_io(path), notes=notes, details=onnx_details(path))


def _strip_metadata(path: Path) -> None:
    """Drop per-node stack traces and doc strings the exporter writes (often more bytes than int8 weights)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def _toposort(model):
    """Reorder graph nodes so every input is produced before use (float16 conversion can break the order)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            raise ExportError("the float16 ONNX graph has a cycle", "report this as a bug")
        for n in progress:
            ordered.append(n)
            ready.update(n.output)
        pending = [n for n in pending if n not in progress]
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def onnx_details(path: Path) -> dict:
    """Op counts and initializer bytes by element type of an ONNX file (for reports)."""
    from collections import Counter

    import onnx

    model = onnx.load(str(path))
    by_type: Counter[str] = Counter()
    for init in model.graph.initializer:
        by_type[onnx.TensorProto.DataType.Name(init.data_type).lower()] += len(init.raw_data) or init.ByteSize()
    return {"onnx_ops": dict(Counter(n.op_type for n in model.graph.node)), "initializer_bytes": dict(by_type)}


class OnnxFormat(Format):
    """ONNX (opset 18): fp32, fp16 weights, QDQ int8 or dynamic-range int8; run by onnxruntime."""

    name = "onnx"
    filename = "model.onnx"
    dtypes = ("fp32", "fp16", "int8")
    runner = "edgecomp.export.runtime:OnnxRunner"
    arm64 = "onnx"

    def export(self, model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
               calibration=None) -> ExportedArtifact:
        """See :func:`export_onnx`."""
        return export_onnx(model, spec, options, path, calibration)
