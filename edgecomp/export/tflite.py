"""TFLite (LiteRT) export through litert-torch, which converts a torch.export program directly."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgecomp.bundle import Quantization, TensorInfo
from edgecomp.compress.base import ExportOptions, Int8Export
from edgecomp.errors import ExportError
from edgecomp.export.base import Format
from edgecomp.export.common import ExportedArtifact, layout_of, unsupported_op_error
from edgecomp.export.tflite_inspect import inspect_tflite
from edgecomp.quiet import quiet
from edgecomp.spec import ModelSpec

logger = logging.getLogger(__name__)


@quiet("tflite export")
def export_tflite(model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
                  calibration: np.ndarray | None = None) -> ExportedArtifact:
    """Write ``model`` as a .tflite flatbuffer in ``options.dtype``: fp32, fp16 weights, or int8.

    int8 needs the ``QuantizedModel`` of ``quantize.int8`` (full integer; float or int8 model I/O from
    ``options.int8.io``; trimmed unless ``int8.trim`` is False) or ``quantize.dynamic``
    (dynamic-range: int8 weights, activations quantized at run time). The byte breakdown of quantized
    files goes into ``details``.
    """
    import litert_torch
    from litert_torch import progress

    progress.console.quiet = not logger.isEnabledFor(logging.DEBUG)
    if isinstance(model, torch.jit.ScriptModule):
        raise ExportError(
            "TFLite export needs an nn.Module or a torch.export program, not TorchScript",
            "pass the model as package.module:factory or a .pt2 file, or use --skip-failed-formats",
        )
    if options.dtype not in ("fp32", "fp16", "int8"):
        raise ExportError(f"TFLite export of {options.dtype} models is not available", "use fp32, fp16 or int8")
    example = (torch.zeros(spec.input_shape),)
    if options.dtype == "int8":
        return _export_int8(model, options, path, example, calibration)
    try:
        edge_model = litert_torch.convert(model.eval(), example)
        edge_model.export(str(path))
        if options.dtype == "fp16":
            _fp16_weights(path)
    except Exception as exc:
        raise unsupported_op_error("tflite", exc) from exc
    details = {}
    if options.dtype != "fp32":
        details = inspect_tflite(path).as_details()
    return ExportedArtifact("tflite", path, options.dtype, *tflite_io(path), details=details)


def _export_int8(model: nn.Module, options: ExportOptions, path: Path, example: tuple,
                 calibration: np.ndarray | None = None) -> ExportedArtifact:
    """Convert the PT2E fake-quant reference to a full-integer (or dynamic-range) .tflite."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    from edgecomp.compress.pt2e import QuantizedModel
    from edgecomp.export.tflite_rewrite import rewrite_file

    if not isinstance(model, QuantizedModel):
        raise ExportError("int8 TFLite export needs the model returned by quantize.int8 or quantize.dynamic",
                          "put quantize.int8 (or quantize.dynamic) last in the recipe")
    settings = options.int8 or Int8Export()
    try:
        with _strict_qdq(bool(settings.skip)):
            edge_model = litert_torch.convert(model.unfolded[0], example,
                                              quant_config=QuantConfig(pt2e_quantizer=model.quantizer))
        edge_model.export(str(path))
    except Exception as exc:
        raise unsupported_op_error("tflite", exc) from exc
    static = settings.mode == "static"
    changed = rewrite_file(path, io=settings.io) if static else {}
    before = inspect_tflite(path)
    if settings.trim:
        changed.update(rewrite_file(path, do_trim=True))
    summary = inspect_tflite(path)
    details = summary.as_details()
    details["byte_breakdown_untrimmed"] = before.breakdown
    details["bytes_untrimmed"] = before.bytes
    details["rewrite"] = changed
    details["quantization"] = settings.model_dump()
    notes = [(f"int8 {settings.mode}: weights {settings.weights}, "
             f"model I/O {summary.io_dtypes}")]
    if summary.bias_scale_mismatches:
        notes.append(f"{summary.bias_scale_mismatches} int32 biases are not scaled input x weight scale: the "
                     "integer kernels will mis-scale them (see the parity check)")
    if static and calibration is not None:  # layer-wise error of the file itself, next to the fake-quant one
        details["layer_errors"] = _layer_report(path, model, calibration, notes)
    if summary.intended_islands:
        notes.append(f"{len(summary.intended_islands)} float layers kept on purpose (quantize.int8 skip/max_drop)")
    if summary.qdq_between_integer_ops:
        notes.append(f"{summary.qdq_between_integer_ops} DEQUANTIZE ops feed float ops between integer ops")
    return ExportedArtifact("tflite", path, "int8", *tflite_io(path), notes=notes, details=details)


@contextlib.contextmanager
def _strict_qdq(on: bool):
    """Run litert-torch's converter in strict QDQ mode when layers are kept float on purpose.

    By default the converter quantizes a float conv that sits between a DEQUANTIZE and a QUANTIZE
    (weights and all), undoing ``quantize.int8(skip=...)``; strict mode converts only what the graph
    quantizes. Off otherwise: strict mode writes 48 more bytes for the same all-int8 graph.
    """
    from litert_torch._convert import litert_converter

    api = litert_converter.converter_api_ext
    stock = api.ConvertToTFLConfig
    if not on:
        yield
        return

    def strict():
        config = stock()
        config.strict_qdq_mode = True
        return config

    api.ConvertToTFLConfig = strict
    try:
        yield
    finally:
        api.ConvertToTFLConfig = stock


def _layer_report(path: Path, model, calibration: np.ndarray, notes: list[str]) -> dict | None:
    """compress.quant_report on the written file; a failure to match tensors is logged, never fatal."""
    from edgecomp.compress.quant_report import tflite_report

    try:
        report = tflite_report(path, model, np.asarray(calibration, np.float32))
    except Exception:  # a diagnostic: the artifact stays valid without it
        logger.warning("layer-wise .tflite error report failed", exc_info=True)
        return None
    worst = report.get("converter_worst")
    if worst and worst["sqnr_gap_db"] > 3.0:
        notes.append(f".tflite departs from the int8 reference at {worst['layer']} "
                     f"({worst['sqnr_gap_db']:.1f} dB less SQNR than the fake-quant graph)")
    return report


def _fp16_weights(path: Path) -> None:
    """Store float32 conv/linear weights as float16 (dequantized once at load time), as TFLite fp16 models do."""
    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=AlgorithmName.FLOAT_CASTING)
    q = quantizer.Quantizer(str(path), manager.get_quantization_recipe())
    result = q.quantize()
    path.write_bytes(bytes(result.quantized_model))


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


class TFLiteFormat(Format):
    """TFLite (LiteRT) flatbuffer: fp32, fp16 weights or int8; run by the LiteRT interpreter (XNNPACK)."""

    name = "tflite"
    filename = "model.tflite"
    dtypes = ("fp32", "fp16", "int8")
    runner = "edgecomp.export.runtime:TFLiteRunner"
    predictor_reads = True
    arm64 = "tflite"

    def export(self, model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
               calibration: np.ndarray | None = None) -> ExportedArtifact:
        """See :func:`export_tflite`."""
        return export_tflite(model, spec, options, path, calibration)
