"""The cost-relevant layers of an exported .tflite graph, with which of them LiteRT delegates to XNNPACK.

Read with ``ai_edge_litert.schema_py_generated`` (through :mod:`edgecomp.export.tflite_inspect`); the
delegation comes from LiteRT's interpreter where it can be built, else from the delegate's op tables
(:mod:`edgecomp.profile.delegation`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from edgecomp.errors import ModelLoadError
from edgecomp.profile.delegation import delegated_from_interpreter, statically_delegated
from edgecomp.profile.predict import LayerCost

TFLITE_CATEGORY = {
    "CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "DEPTHWISE_CONV_2D": "depthwise",
    "FULLY_CONNECTED": "fc", "BATCH_MATMUL": "fc",
    "AVERAGE_POOL_2D": "pool", "MAX_POOL_2D": "pool", "MEAN": "pool", "SUM": "pool", "REDUCE_MAX": "pool",
    "SOFTMAX": "softmax", "LOG_SOFTMAX": "softmax",
    "CONCATENATION": "data", "PAD": "data", "PADV2": "data", "TRANSPOSE": "data", "SPLIT": "data",
    "SPLIT_V": "data", "SLICE": "data", "STRIDED_SLICE": "data", "GATHER": "data", "TILE": "data",
    "RESIZE_BILINEAR": "data", "RESIZE_NEAREST_NEIGHBOR": "data", "BROADCAST_TO": "data",
    "DEPTH_TO_SPACE": "data", "SPACE_TO_DEPTH": "data", "MIRROR_PAD": "data",
    "QUANTIZE": "quantize", "DEQUANTIZE": "quantize",
    "RESHAPE": "free", "SQUEEZE": "free", "EXPAND_DIMS": "free", "SHAPE": "free",
}
_PAD_FUSES_INTO = {"CONV_2D", "DEPTHWISE_CONV_2D"}
_TYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "INT64": 8, "INT8": 1, "UINT8": 1, "INT16": 2, "BOOL": 1}


def read_tflite_layers(path: str | Path, delegation: bool = True) -> tuple[list[LayerCost], str]:
    """The layers of the main subgraph of a .tflite file, and the model's dtype (fp32, fp16 or int8).

    Each layer says whether XNNPACK takes it: as LiteRT's interpreter delegates it, or (``delegation``
    False, or no interpreter) as the delegate's op tables say for the op and its input's type.
    """
    from edgecomp.export.tflite_inspect import builtin_op_name, read_raw, tensor_type_name

    path = Path(path)
    try:
        buf = path.read_bytes()
        model = read_raw(buf)
        graph = model.Subgraphs(0)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as a .tflite flatbuffer: {exc}", "pass a .tflite file") from exc

    def tensor(i: int) -> tuple[list[int], str, bool]:
        t = graph.Tensors(i)
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        b = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        const = b is not None and (b.DataLength() > 0 or b.Size() > 0)
        return shape, tensor_type_name(t.Type(), unknown="FLOAT32"), const

    def nbytes(shape: list[int], ttype: str) -> float:
        return float(math.prod(shape)) * _TYPE_BYTES.get(ttype, 4)

    operators = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    codes = [model.OperatorCodes(op.OpcodeIndex()) for op in operators]
    opnames = [builtin_op_name(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), unknown="CUSTOM") for c in codes]
    consumers: dict[int, set[str]] = {}  # tensor index -> names of the ops that read it
    for op, opname in zip(operators, opnames):
        for j in range(op.InputsLength()):
            consumers.setdefault(op.Inputs(j), set()).add(opname)
    layers: list[LayerCost] = []
    weight_types: set[str] = set()
    for i, (op, opname) in enumerate(zip(operators, opnames)):
        ins = [tensor(k) for k in (op.Inputs(j) for j in range(op.InputsLength())) if k >= 0]
        outs = [tensor(op.Outputs(j)) for j in range(op.OutputsLength())]
        weight_bytes = sum(nbytes(s, t) for s, t, c in ins if c)
        act_bytes = sum(nbytes(s, t) for s, t, c in ins if not c) + sum(nbytes(s, t) for s, t, _ in outs)
        category = TFLITE_CATEGORY.get(opname, "elementwise")
        readers = consumers.get(op.Outputs(0), set())
        if opname in ("PAD", "PADV2") and readers and readers <= _PAD_FUSES_INTO:
            category = "free"  # XNNPACK folds a zero pad into the padding of the convolution it feeds
        macs, out_ch, red, taps = 0.0, 0, 0, 1
        out_shape = outs[0][0] if outs else []
        if opname in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV") and len(ins) >= 2:
            w_shape, w_type = ins[1][:2]  # weights are input 1 (TRANSPOSE_CONV: output_shape, weights, data)
            weight_types.add(w_type)
            if opname == "CONV_2D":
                out_ch, red, taps = w_shape[0], math.prod(w_shape[1:]), w_shape[1] * w_shape[2]
                macs = float(math.prod(out_shape[:-1]) * out_ch * red)
                if w_shape[1] == w_shape[2] == 1:
                    category = "pointwise"
            elif opname == "DEPTHWISE_CONV_2D":
                out_ch, red = w_shape[-1], w_shape[1] * w_shape[2]
                macs = float(math.prod(out_shape[:-1]) * out_ch * red)
            elif opname == "FULLY_CONNECTED":
                out_ch, red = w_shape[0], w_shape[-1]
                macs = float(math.prod(ins[0][0]) // max(red, 1) * out_ch * red)
            else:  # TRANSPOSE_CONV: weights [O, kh, kw, I]; every input pixel scatters a kh×kw×O patch
                out_ch, red = w_shape[0], math.prod(w_shape[1:])
                data = next((s for s, _, c in ins if not c and len(s) == 4), [1, 1, 1, 1])
                macs = float(math.prod(data[:-1]) * out_ch * red)
        elif opname == "BATCH_MATMUL" and len(ins) >= 2:
            a, b = ins[0][0], ins[1][0]
            out_ch, red = b[-1], a[-1]
            macs = float(math.prod(a[:-1]) * red * out_ch)
        raw_name = graph.Tensors(op.Outputs(0)).Name() if op.OutputsLength() else None
        name = raw_name.decode(errors="replace") if raw_name else f"#{i}"  # trimmed int8 files drop names
        quantized = any(t in ("INT8", "UINT8") for _, t, c in [*ins, *outs] if not c)
        static = statically_delegated(opname, "int8" if quantized else "fp32")
        layers.append(LayerCost(category, macs, weight_bytes, act_bytes, out_ch, red, f"{opname}:{name}",
                                opname.lower(), taps, delegated=static))
    dtype = "int8" if "INT8" in weight_types or "UINT8" in weight_types else (
        "fp16" if weight_types == {"FLOAT16"} else "fp32")
    if delegation:  # LiteRT's own answer, where its interpreter can be built
        asked = delegated_from_interpreter(path, len(layers))
        if asked is not None:
            layers = [replace(layer, delegated=d or layer.op == "free") for layer, d in zip(layers, asked)]
    return layers, dtype


