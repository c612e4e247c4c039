"""Running exported artifacts on the host: onnxruntime for .onnx, the LiteRT interpreter for .tflite.

``run_artifact`` feeds a batch of float inputs one sample at a time when the file has a fixed batch of
one, quantizes inputs and dequantizes outputs for integer I/O, and returns float outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecomp.errors import ExportError
from edgecomp.quiet import captured_output


class TFLiteRunner:
    """A LiteRT interpreter with float-in, float-out semantics (handles int8/uint8 I/O)."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Output for one input whose shape matches the model's input."""
        inp, out = self.inp, self.out
        if inp["dtype"] in (np.int8, np.uint8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        self.interpreter.set_tensor(inp["index"], x.astype(inp["dtype"], copy=False))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


class OnnxRunner:
    """An onnxruntime session on the CPU with a fixed thread count."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # exact int8: by default x86 runs S8S8 QDQ models through U8S8 kernels whose 16-bit pairwise sums
        # saturate without VNNI (measured: logits off by 6.5 on the digits CNN); no effect on fp32 models.
        # (session.x64quantprecision also fixes it but fails to load residual/depthwise graphs in ort 1.32)
        opts.add_session_config_entry("session.qdqisint8allowed", "1")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Output for one input whose shape matches the model's input."""
        return np.asarray(self.session.run(None, {self.input.name: x.astype(np.float32)})[0], dtype=np.float32)


def make_runner(fmt: str, path: str | Path, threads: int = 2):
    """A callable running one input through the artifact on the host."""
    if fmt == "tflite":
        return TFLiteRunner(path, threads)
    if fmt == "onnx":
        return OnnxRunner(path, threads)
    raise ExportError(f"no host runtime for {fmt}", "only .onnx and .tflite run on this machine")


def run_artifact(fmt: str, path: str | Path, x: np.ndarray, input_shape: list[int], threads: int = 2) -> np.ndarray:
    """Outputs for every row of ``x`` (fed in chunks of the model's batch size), concatenated."""
    with captured_output(f"{fmt} run"):  # the runtimes log INFO lines (XNNPACK delegate) to fd 2
        return _run_all(make_runner(fmt, path, threads), x, input_shape)


def _run_all(runner, x: np.ndarray, input_shape: list[int]) -> np.ndarray:
    batch = input_shape[0]
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        if len(chunk) < batch:
            pad = np.zeros((batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            outs.append(runner(np.concatenate([chunk, pad]))[: len(chunk)])
        else:
            outs.append(runner(chunk))
    return np.concatenate(outs)
