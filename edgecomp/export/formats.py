"""The table of formats that drives export: exporter function and file name per format."""

from __future__ import annotations

from collections.abc import Callable

from edgecomp.export.coreml import export_coreml
from edgecomp.export.onnx import export_onnx
from edgecomp.export.tflite import export_tflite

EXPORTERS: dict[str, Callable] = {"onnx": export_onnx, "tflite": export_tflite, "coreml": export_coreml}
FILENAMES: dict[str, str] = {"onnx": "model.onnx", "tflite": "model.tflite", "coreml": "model.mlpackage"}
