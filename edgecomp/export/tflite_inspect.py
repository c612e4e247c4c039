"""Read a .tflite flatbuffer: tensor dtypes, the op list, and where the file's bytes go.

This is edgecomp's one .tflite reader: ``profile/predict`` reads layers through :func:`read_raw`,
:func:`builtin_op_name` and :func:`tensor_type_name` (one enum-name table, from the LiteRT schema).

``inspect_tflite(path)`` returns a ``TFLiteSummary`` with per-category byte counts that sum to the
file size: int8 weights (int8 constants fed to conv/FC as weights), int32 biases (int32 constants fed to conv/FC as
bias), float weights (float32/float16 constants), other constants, quantization parameters
(scale/zero-point/min/max vectors with their length prefixes), tensor names, and everything else
(op tables, shapes, signatures, metadata, padding). Vectors shared by several tables are counted
once, at their real size, so the breakdown describes the file, not a hypothetical one.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
_QDQ = {"QUANTIZE", "DEQUANTIZE"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


@functools.cache
def _enum_names(enum: str) -> dict[int, str]:
    """Value -> name of one of the schema's enums (``BuiltinOperator``, ``TensorType``): the one table."""
    values = vars(getattr(_schema(), enum)).items()
    return {v: k for k, v in values if not k.startswith("_") and isinstance(v, int)}


def builtin_op_name(code: int, unknown: str | None = None) -> str:
    """Name of a ``BuiltinOperator`` code (e.g. 'CONV_2D'); ``unknown`` (default: the number) if none."""
    return _enum_names("BuiltinOperator").get(code, str(code) if unknown is None else unknown)


def tensor_type_name(code: int, unknown: str | None = None) -> str:
    """Name of a ``TensorType`` code, upper case (e.g. 'INT8'); ``unknown`` (default: the number) if none."""
    return _enum_names("TensorType").get(code, str(code) if unknown is None else unknown)


def read_raw(data: bytes):
    """The flatbuffer's root table (``Model``, read lazily in place)."""
    return _schema().Model.GetRootAsModel(data, 0)


def load_model(data: bytes):
    """The flatbuffer as the schema's object API (``ModelT``)."""
    return _schema().ModelT.InitFromObj(read_raw(data))


def op_name(model, op) -> str:
    """Builtin operator name of ``op`` (e.g. 'CONV_2D'), or the custom code."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == _schema().BuiltinOperator.CUSTOM:
        return (code.customCode or b"CUSTOM").decode()
    return builtin_op_name(builtin)


def tensor_dtype(tensor) -> str:
    """TensorType name of a tensor, lower case (e.g. 'int8', 'float32')."""
    return tensor_type_name(tensor.type).lower()


@dataclass
class TFLiteSummary:
    """What a .tflite file holds: ops, weight dtypes, quantize/dequantize placement and byte breakdown."""

    bytes: int
    ops: dict[str, int]
    weight_dtypes: dict[str, int]
    quantize_ops: int
    dequantize_ops: int
    qdq_between_integer_ops: int
    io_dtypes: dict[str, str]
    breakdown: dict[str, int] = field(default_factory=dict)
    params: int = 0
    bias_scale_mismatches: int = 0
    intended_islands: list[dict] = field(default_factory=list)  # float layers kept on purpose, with the reason

    def as_details(self) -> dict:
        """A JSON-ready dict for ``ExportedArtifact.details``."""
        return {
            "tflite_ops": self.ops, "weight_dtypes": self.weight_dtypes, "quantize_ops": self.quantize_ops,
            "dequantize_ops": self.dequantize_ops, "qdq_between_integer_ops": self.qdq_between_integer_ops,
            "io_dtypes": self.io_dtypes, "byte_breakdown": self.breakdown, "stored_weight_elements": self.params,
            "bias_scale_mismatches": self.bias_scale_mismatches, "intended_float_islands": self.intended_islands,
        }


def _vector(table, field_offset: int) -> tuple[int, int]:
    """(absolute position, element count) of a vector field of a raw flatbuffer table; (0, 0) if absent."""
    o = table._tab.Offset(field_offset)
    if not o:
        return 0, 0
    return table._tab.Vector(o), table._tab.VectorLen(o)


def inspect_tflite(path: str | Path) -> TFLiteSummary:
    """Summarise ``path``: op counts, dtypes of conv/linear weights, QUANTIZE/DEQUANTIZE placement, bytes."""
    data = Path(path).read_bytes()
    model = load_model(data)
    ops: Counter[str] = Counter()
    weight_dtypes: Counter[str] = Counter()
    cats = Counter({k: 0 for k in ("int8_weights", "int32_biases", "float_weights", "other_constants",
                                   "quantization_params", "tensor_names")})
    raw = read_raw(data)
    seen: set[int] = set()  # absolute positions of vectors and strings already counted (shared = once)
    params = 0
    qdq_inside = 0
    mismatches = 0
    intended: list[dict] = []
    io: dict[str, str] = {}
    for k, sg in enumerate(model.subgraphs):
        raw_sg = raw.Subgraphs(k)
        producers = {t: i for i, op in enumerate(sg.operators) for t in (op.outputs if op.outputs is not None else [])}
        consumers: dict[int, list[int]] = {}
        for i, op in enumerate(sg.operators):
            for t in op.inputs if op.inputs is not None else []:
                consumers.setdefault(int(t), []).append(i)
        names = [op_name(model, op) for op in sg.operators]
        ops.update(names)
        role: dict[int, str] = {}
        for op, name in zip(sg.operators, names):
            if name in _WEIGHT_OPS and op.inputs is not None:
                if len(op.inputs) > 1 and op.inputs[1] >= 0:
                    role[int(op.inputs[1])] = "weight"
                if len(op.inputs) > 2 and op.inputs[2] >= 0:
                    role[int(op.inputs[2])] = "bias"
        for op, name in zip(sg.operators, names):  # fp16/int8 weights dequantized at load time
            if name == "DEQUANTIZE" and int(op.outputs[0]) in role:
                role[int(op.inputs[0])] = role.pop(int(op.outputs[0]))
        for idx, t in enumerate(sg.tensors):
            dtype = tensor_dtype(t)
            if role.get(idx) == "weight":
                weight_dtypes[dtype] += 1
            raw_buf = raw.Buffers(t.buffer) if t.buffer < raw.BuffersLength() else None
            pos, n = _vector(raw_buf, 4) if raw_buf is not None else (0, 0)
            if n and pos not in seen:
                seen.add(pos)
                if dtype == "int8" and role.get(idx) == "weight":
                    cats["int8_weights"] += n
                elif dtype == "int32" and role.get(idx) == "bias":
                    cats["int32_biases"] += n
                elif dtype in ("float32", "float16") and role.get(idx) in ("weight", "bias"):
                    cats["float_weights"] += n
                else:
                    cats["other_constants"] += n
            if n and role.get(idx) in ("weight", "bias"):
                params += int(np.prod(t.shape)) if t.shape is not None else 0
            raw_t = raw_sg.Tensors(idx)
            q = raw_t.Quantization()
            if q is not None:
                for field_offset, size in ((4, 4), (6, 4), (8, 4), (10, 8)):  # min, max, scale, zero_point
                    vpos, vn = _vector(q, field_offset)
                    if vn and vpos not in seen:
                        seen.add(vpos)
                        cats["quantization_params"] += 4 + size * vn
            o = raw_t._tab.Offset(10)  # name
            if o:
                spos = raw_t._tab.Indirect(raw_t._tab.Pos + o)
                if spos not in seen:
                    seen.add(spos)
                    cats["tensor_names"] += 4 + len(t.name) + 1
        integer = {i for i, n in enumerate(names) if n not in _QDQ}
        for i, name in enumerate(names):
            op = sg.operators[i]
            if name == "DEQUANTIZE":  # int -> float feeding a float op that is later re-quantized
                src = producers.get(int(op.inputs[0]))
                region: list[int] = []
                if src is not None and src in integer and _feeds_quantize(int(op.outputs[0]), sg, consumers, names,
                                                                          region=region):
                    kept = [names[j] for j in region if names[j] in _WEIGHT_OPS and _float_weights(sg, j)]
                    if kept:
                        intended.append({"float_ops": sorted({names[j] for j in region}),
                                         "reason": f"layer kept in float on purpose ({', '.join(kept)} with "
                                                   "float32 weights: quantize.int8 skip / max_drop)"})
                    else:
                        qdq_inside += 1
        for kind, tensors in (("input", sg.inputs), ("output", sg.outputs)):
            for k, t in enumerate(tensors if tensors is not None else []):
                io[f"{kind}{k}"] = tensor_dtype(sg.tensors[t])
        mismatches += sum(not _bias_scale_ok(sg, op) for op, name in zip(sg.operators, names) if name in _WEIGHT_OPS)
    total = len(data)
    cats["other"] = total - sum(cats.values())
    return TFLiteSummary(
        bytes=total, ops=dict(ops), weight_dtypes=dict(weight_dtypes), quantize_ops=ops.get("QUANTIZE", 0),
        dequantize_ops=ops.get("DEQUANTIZE", 0), qdq_between_integer_ops=qdq_inside, io_dtypes=io,
        breakdown=dict(cats), params=params, bias_scale_mismatches=mismatches, intended_islands=intended,
    )


def _bias_scale_ok(sg, op) -> bool:
    """Whether an integer conv/linear op's int32 bias has scale input_scale x weight_scale, per channel.

    LiteRT's integer kernels ignore the bias tensor's own scale and assume that product, so a bias
    written with another scale is silently mis-scaled.
    """
    ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
    if len(ins) < 3 or min(ins[:3]) < 0:
        return True
    x, w, b = (sg.tensors[i] for i in ins[:3])
    if tensor_dtype(b) != "int32" or tensor_dtype(w) != "int8":
        return True
    scales = [np.asarray(t.quantization.scale if t.quantization is not None and t.quantization.scale is not None
                         else [], dtype=np.float64) for t in (x, w, b)]
    if any(s.size == 0 for s in scales):
        return True
    expected = scales[0][0] * scales[1]
    return bool(np.allclose(np.broadcast_to(scales[2], expected.shape), expected, rtol=1e-4))


def _float_weights(sg, op_index: int) -> bool:
    """Whether a conv/linear op reads float32 weights (a layer left in float), not int8 ones."""
    op = sg.operators[op_index]
    return op.inputs is not None and len(op.inputs) > 1 and op.inputs[1] >= 0 and \
        tensor_dtype(sg.tensors[int(op.inputs[1])]) == "float32"


def _feeds_quantize(tensor: int, sg, consumers: dict[int, list[int]], names: list[str], depth: int = 0,
                    region: list[int] | None = None) -> bool:
    """Whether a float tensor reaches a QUANTIZE op through float ops (a float island between int ops).

    The float ops on the way are appended to ``region`` when given.
    """
    if depth > 32:
        return False
    reached = False
    for c in consumers.get(tensor, []):
        if names[c] == "QUANTIZE":
            reached = True
        elif names[c] != "DEQUANTIZE" and any(
            _feeds_quantize(int(o), sg, consumers, names, depth + 1, region) for o in sg.operators[c].outputs
        ):
            reached = True
            if region is not None and c not in region:
                region.append(c)
    return reached
