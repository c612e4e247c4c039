"""CoreML export (ML program, .mlpackage) through coremltools.

coremltools converts on Linux but cannot run a model there (its runtime exists only on macOS), so the
artifact is marked not runnable and its parity is reported as not measured, never as passed.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import torch
from torch import nn

from edgecomp.bundle import TensorInfo
from edgecomp.compress.base import ExportOptions
from edgecomp.errors import ExportError
from edgecomp.export.base import Format
from edgecomp.export.common import ExportedArtifact, layout_of, unsupported_op_error
from edgecomp.export.coreml_palettize import palettize
from edgecomp.quiet import quiet
from edgecomp.spec import ModelSpec

logger = logging.getLogger(__name__)
MACOS_NOTE = "CoreML prediction needs macOS; on this machine the model was converted and its spec validated only"


@quiet("coreml export")
def export_coreml(model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
                  calibration=None) -> ExportedArtifact:
    """Write ``model`` as an ML program .mlpackage and validate its spec by loading it back.

    fp16 converts with float16 compute precision; int8 stores linearly quantized int8 weights
    (activations stay float: CoreML's activation quantization needs the macOS runtime to calibrate).
    """
    import coremltools as ct

    if options.dtype not in ("fp32", "fp16", "int8"):
        raise ExportError(f"CoreML export of {options.dtype} models is not available", "use fp32, fp16 or int8")
    if getattr(model, "float_model", None) is not None:  # quantize.int8's reference: convert the float network
        model = model.float_model
    example = torch.zeros(spec.input_shape)
    notes: list[str] = []
    try:
        traced = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.trace(model.eval(), example)
        mlmodel = ct.convert(
            traced,
            inputs=[ct.TensorType(name=spec.input_name, shape=tuple(spec.input_shape))],
            outputs=[ct.TensorType(name=name) for name in spec.output_names()],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if options.dtype == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS15,
        )
        if options.palettize_bits:  # clustered weights -> LUT (coreml_palettize.py)
            mlmodel = palettize(mlmodel, options)
        if options.dtype == "int8":
            mlmodel = _int8_weights(mlmodel, options.int8.weights if options.int8 else "per-channel")
            notes.append("CoreML int8: linearly quantized int8 weights (coremltools.optimize), float activations")
        mlmodel.short_description = f"{spec.name}, converted by edgecomp"
        mlmodel.save(str(path))
    except Exception as exc:
        raise unsupported_op_error("coreml", exc) from exc
    inputs, outputs = coreml_io(path)
    runnable = platform.system() == "Darwin"
    return ExportedArtifact("coreml", path, options.dtype, inputs, outputs, runnable=runnable,
                            notes=notes + ([] if runnable else [MACOS_NOTE]))


def _int8_weights(mlmodel, granularity: str):
    """Symmetric int8 weights (per output channel or per tensor) through coremltools.optimize."""
    import coremltools.optimize as cto

    config = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8",
        granularity="per_channel" if granularity == "per-channel" else "per_tensor", weight_threshold=0))
    return cto.coreml.linear_quantize_weights(mlmodel, config)


def coreml_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Input and output tensors from the saved model's spec (loaded without the macOS runtime)."""
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    desc = mlmodel.get_spec().description
    if not desc.input or not desc.output:
        raise ExportError(f"{path} has no inputs or outputs in its spec", "report this as a bug")

    def info(feature) -> TensorInfo:
        shape = [int(s) for s in feature.type.multiArrayType.shape]
        return TensorInfo(name=feature.name, shape=shape, dtype="float32", layout=layout_of(shape))

    return [info(f) for f in desc.input], [info(f) for f in desc.output]


class CoreMLFormat(Format):
    """CoreML ML program (.mlpackage): converted here, run only on macOS."""

    name = "coreml"
    filename = "model.mlpackage"
    dtypes = ("fp32", "fp16", "int8")
    no_runner_note = MACOS_NOTE

    def export(self, model: nn.Module, spec: ModelSpec, options: ExportOptions, path: Path,
               calibration=None) -> ExportedArtifact:
        """See :func:`export_coreml`."""
        return export_coreml(model, spec, options, path, calibration)
