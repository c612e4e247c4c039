"""Exporters (ONNX, TFLite, CoreML) and the parity check that follows each."""
