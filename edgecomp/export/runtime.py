"""Running exported artifacts on the host: each format's runner (``export.base.Format.runner``), e.g.
onnxruntime for .onnx and the LiteRT interpreter for .tflite (both defined here, importable without torch).

``run_artifact_outputs`` feeds a batch of float inputs one sample at a time when the file has a fixed batch of
one, quantizes inputs and dequantizes outputs for integer I/O, and returns every output as float arrays, in the
model's order; ``run_artifact`` returns the first of them (a classifier's logits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecomp.quiet import captured_output


class TFLiteRunner:
    """A LiteRT interpreter with float-in, float-out semantics (handles int8/uint8 I/O)."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.outs = _outputs_in_model_order(self.interpreter)
        self.out = self.outs[0]
        self.input_shape = [int(s) for s in self.inp["shape"]]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output, in the model's order, for one input whose shape matches the model's input."""
        inp = self.inp
        if inp["dtype"] in (np.int8, np.uint8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        self.interpreter.set_tensor(inp["index"], x.astype(inp["dtype"], copy=False))
        self.interpreter.invoke()
        results = []
        for out in self.outs:
            y = self.interpreter.get_tensor(out["index"])
            if out["dtype"] in (np.int8, np.uint8):
                scale, zero = out["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            results.append(y.astype(np.float32))
        return results

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The first output for one input whose shape matches the model's input."""
        return self.run_all(x)[0]


def _outputs_in_model_order(interpreter) -> list[dict]:
    """The interpreter's output details ordered as the PyTorch model returns them.

    litert-torch names a signature's outputs ``output_0``, ``output_1``, ... in the model's order; the
    subgraph's output list usually has that order too, but the signature is what says so.
    """
    details = interpreter.get_output_details()
    try:
        signatures = interpreter._get_full_signature_list()  # the one API mapping output names to tensors
    except AttributeError:
        return details
    if len(signatures) != 1:
        return details
    by_name = next(iter(signatures.values())).get("outputs", {})
    if sorted(by_name) != sorted(f"output_{j}" for j in range(len(details))):
        return details  # not named by litert-torch: keep the subgraph's order
    index = {d["index"]: d for d in details}
    ordered = [index.get(by_name[f"output_{j}"]) for j in range(len(details))]
    return details if None in ordered else ordered


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
        self.input_shape = [d if isinstance(d, int) else 1 for d in self.input.shape]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output, in the graph's (the model's) order, for one input whose shape matches the model's input."""
        outs = self.session.run(None, {self.input.name: x.astype(np.float32)})
        return [np.asarray(y, dtype=np.float32) for y in outs]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The first output for one input whose shape matches the model's input."""
        return self.run_all(x)[0]


def make_runner(fmt: str, path: str | Path, threads: int = 2):
    """A runner of one input through the artifact on the host: ``run_all(x)`` gives every output, ``runner(x)``
    the first (the format's own, from the registry; an ExportError when it has none)."""
    from edgecomp.export.base import get_format

    return get_format(fmt).make_runner(path, threads)


def run_artifact(fmt: str, path: str | Path, x: np.ndarray, input_shape: list[int], threads: int = 2) -> np.ndarray:
    """The first output for every row of ``x`` (fed in chunks of the model's batch size), concatenated."""
    return run_artifact_outputs(fmt, path, x, input_shape, threads)[0]


def run_artifact_outputs(fmt: str, path: str | Path, x: np.ndarray, input_shape: list[int],
                         threads: int = 2) -> list[np.ndarray]:
    """Every output (in the model's order) for every row of ``x``, fed in chunks of the model's batch size."""
    with captured_output(f"{fmt} run"):  # the runtimes log INFO lines (XNNPACK delegate) to fd 2
        return _run_all(make_runner(fmt, path, threads), x, input_shape)


def _run_all(runner, x: np.ndarray, input_shape: list[int]) -> list[np.ndarray]:
    batch = input_shape[0]
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        if len(chunk) < batch:
            pad = np.zeros((batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            ys = [y[: len(chunk)] for y in runner.run_all(np.concatenate([chunk, pad]))]
        else:
            ys = runner.run_all(chunk)
        outs = outs or [[] for _ in ys]
        for j, y in enumerate(ys):
            outs[j].append(y)
    return [np.concatenate(o) for o in outs]
