"""Which ops LiteRT hands to XNNPACK, and which stay in TFLite's own (reference) kernels.

An op XNNPACK does not take runs in TFLite's built-in kernel, single-threaded and often an order of
magnitude slower (int8 HARD_SWISH on ai-edge-litert 2.3, say), and splits the graph into several
delegate partitions. For a .tflite file, :func:`delegated_from_interpreter` asks LiteRT itself: it
builds an interpreter (XNNPACK is applied by default) and reads which original nodes each DELEGATE
node replaced. Where no file or interpreter is at hand (a torch model in the planner), the tables
below say what the delegate takes, per dtype.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

logger = logging.getLogger(__name__)

# The XNNPACK delegate's operators (tensorflow/lite/delegates/xnnpack/README.md, "Supported operators"
# and "Quantized operators"), as ai-edge-litert 2.3's interpreter delegates them: a float graph's ops ...
XNNPACK_FP32 = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE",
    "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU", "FLOOR", "FULLY_CONNECTED", "GELU", "HARD_SWISH",
    "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MUL", "NEG", "PAD", "PRELU",
    "RELU", "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "ROUND", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB", "SUM", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV", "EXPAND_DIMS", "SQUEEZE",
})
# ... and a quantized (int8) graph's: no int8 HARD_SWISH, AVERAGE_POOL_2D or SOFTMAX (checked: an int8
# HARD_SWISH stays outside the delegate in ai-edge-litert 2.3, splitting the graph in one partition per use).
XNNPACK_INT8 = frozenset({
    "ADD", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "ELU",
    "FULLY_CONNECTED", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "PRELU", "QUANTIZE",
    "RESHAPE", "RESIZE_BILINEAR", "SLICE", "SPACE_TO_DEPTH", "SPLIT", "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV", "EXPAND_DIMS", "SQUEEZE",
})
# Ops that are no kernel at all once the graph is planned (no data moves).
FREE_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE"})


def runtime_version() -> str:
    """The installed ai-edge-litert version (the LiteRT whose delegate the tables describe), or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"


def statically_delegated(op_name: str, dtype: str) -> bool:
    """Whether XNNPACK takes TFLite op ``op_name`` (e.g. ``HARD_SWISH``) in a graph of ``dtype``.

    Unknown names (custom ops) are not delegated. fp16 graphs run as fp32 in the delegate.
    """
    name = op_name.upper()
    if name in FREE_OPS:
        return True
    return name in (XNNPACK_INT8 if dtype == "int8" else XNNPACK_FP32)


def delegated_from_interpreter(path: str | Path, n_ops: int) -> list[bool] | None:
    """For each of the first subgraph's ``n_ops`` operators: did LiteRT's default XNNPACK delegate take it?

    Builds an interpreter (1 thread) and walks each DELEGATE node back from its outputs to its inputs: the
    nodes on the way are the ones it replaced. None when the interpreter cannot be built or does not
    list its nodes (the caller then uses :func:`statically_delegated`).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        from edgecomp.quiet import captured_output

        with captured_output("LiteRT"):  # "Created TensorFlow Lite XNNPACK delegate" on stderr
            interp = Interpreter(model_path=str(path), num_threads=1)
            interp.allocate_tensors()  # the default delegate is applied here
        details = interp._get_ops_details()  # the only listing of the delegated nodes LiteRT gives
    except Exception as exc:  # noqa: BLE001 - any failure means: fall back to the tables
        logger.debug("cannot read the delegation of %s from LiteRT: %s", path, exc)
        return None
    originals = [d for d in details if d["op_name"] != "DELEGATE"]
    if len(originals) != n_ops:
        return None
    producer = {int(t): d["index"] for d in originals for t in d["outputs"]}
    inputs_of = {d["index"]: [int(t) for t in d["inputs"]] for d in originals}
    delegated = [False] * n_ops
    for node in (d for d in details if d["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        seen: set[int] = set()
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor in boundary or tensor not in producer:
                continue
            seen.add(tensor)
            op = producer[tensor]
            if op < n_ops:
                delegated[op] = True
            stack.extend(inputs_of[op])
    return delegated


def undelegated_warning(names: list[str], dtype: str, ms: float, total_ms: float) -> str:
    """The warning naming the ops that run outside XNNPACK (``names``: TFLite op names, optionally followed by
    ``:tensor``), with what they cost in the prediction."""
    counts = Counter(name.split(":", 1)[0].upper() for name in names)
    listed = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in counts.most_common())
    return (f"{len(names)} op(s) not delegated to XNNPACK (ai-edge-litert {runtime_version()}, {dtype}) run in "
            f"TFLite's reference kernels, single-threaded: {listed}; they take {ms:.3g} of the {total_ms:.3g} ms "
            "predicted. Replace them with ops XNNPACK takes at this dtype (e.g. ReLU/ReLU6 for an int8 "
            "hard-swish) or keep them in float")
