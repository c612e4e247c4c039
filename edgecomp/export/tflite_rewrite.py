"""Rewrite a .tflite flatbuffer: choose float or int8 model I/O, and trim what LiteRT does not need.

- ``set_io(model, "float")`` puts a QUANTIZE op after each int8 input and a DEQUANTIZE op before each
  int8 output (the app then feeds and reads float32); ``"int8"`` removes such ops.
- ``trim(model)`` drops the names of internal tensors (the interpreter never reads them; inputs and
  outputs keep theirs) and points tensors with byte-identical constant data at one buffer.
- ``to_bytes(model)`` packs with a builder that stores each distinct vector once (flatbuffers allows
  several tables to reference one vector): per-channel zero points (all 0, int64) and repeated scale
  vectors are then written once per distinct content instead of once per tensor.

Constant data keeps 16-byte alignment, as the converter writes it.
"""

from __future__ import annotations

import copy

import flatbuffers
import numpy as np

from edgecomp.export.tflite_inspect import load_model, op_name, tensor_dtype


class SharingBuilder(flatbuffers.Builder):
    """A flatbuffers builder that writes each distinct numpy vector once and reuses its offset."""

    def __init__(self, size: int = 1024) -> None:
        super().__init__(size)
        self._vectors: dict[tuple, int] = {}

    def CreateNumpyVector(self, x: np.ndarray) -> int:
        """Like ``Builder.CreateNumpyVector`` but shared by content; byte data aligned to 16."""
        key = (x.dtype.str, x.size, x.tobytes())
        if key in self._vectors:
            return self._vectors[key]
        self.assertNotNested()
        align = 16 if x.dtype == np.uint8 and x.size >= 16 else x.dtype.alignment
        self.StartVector(x.itemsize, x.size, align)
        payload = x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        self.head = self.head - len(payload)
        self.Bytes[self.head : self.head + len(payload)] = payload
        self.vectorNumElems = x.size
        offset = self.EndVector()
        self._vectors[key] = offset
        return offset


def to_bytes(model, share: bool = True) -> bytes:
    """Serialise a ``ModelT`` (with vector sharing unless ``share`` is False)."""
    builder = SharingBuilder(1 << 20) if share else flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode_index(model, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _retarget_signatures(model, sg_index: int, old: int, new: int) -> None:
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex != sg_index:
            continue
        for t in list(sig.inputs or []) + list(sig.outputs or []):
            if t.tensorIndex == old:
                t.tensorIndex = new


def set_io(model, io: str) -> int:
    """Make every quantized model input/output float (``io='float'``) or int8 (``'int8'``); ops changed."""
    from ai_edge_litert import schema_py_generated as schema

    changed = 0
    for k, sg in enumerate(model.subgraphs):
        sg.inputs, sg.outputs = np.array(sg.inputs, np.int32), np.array(sg.outputs, np.int32)
        if io == "float":
            changed += _float_io(model, k, sg, schema)
        else:
            changed += _int8_io(model, k, sg)
    return changed


def _float_io(model, k: int, sg, schema) -> int:
    changed = 0
    for pos, t in enumerate(list(sg.inputs)):
        tensor = sg.tensors[t]
        if tensor_dtype(tensor) not in ("int8", "uint8") or tensor.quantization is None:
            continue
        new = _float_twin(model, sg, tensor, schema)
        op = schema.OperatorT()
        op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.QUANTIZE)
        op.inputs, op.outputs = np.array([new], np.int32), np.array([t], np.int32)
        sg.operators.insert(0, op)
        sg.inputs[pos] = new
        _retarget_signatures(model, k, int(t), new)
        changed += 1
    for pos, t in enumerate(list(sg.outputs)):
        tensor = sg.tensors[t]
        if tensor_dtype(tensor) not in ("int8", "uint8") or tensor.quantization is None:
            continue
        new = _float_twin(model, sg, tensor, schema)
        op = schema.OperatorT()
        op.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.DEQUANTIZE)
        op.inputs, op.outputs = np.array([t], np.int32), np.array([new], np.int32)
        sg.operators.append(op)
        sg.outputs[pos] = new
        _retarget_signatures(model, k, int(t), new)
        changed += 1
    return changed


def _float_twin(model, sg, tensor, schema) -> int:
    buf = schema.BufferT()
    model.buffers.append(buf)
    twin = copy.copy(tensor)
    twin.type = schema.TensorType.FLOAT32
    twin.quantization = None
    twin.buffer = len(model.buffers) - 1
    sg.tensors.append(twin)
    return len(sg.tensors) - 1


def _int8_io(model, k: int, sg) -> int:
    changed = 0
    consumers: dict[int, list[int]] = {}
    producers: dict[int, int] = {}
    for i, op in enumerate(sg.operators):
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(i)
        for t in op.outputs:
            producers[int(t)] = i
    drop: set[int] = set()
    for pos, t in enumerate(list(sg.inputs)):
        users = consumers.get(int(t), [])
        if len(users) == 1 and op_name(model, sg.operators[users[0]]) == "QUANTIZE":
            q = int(sg.operators[users[0]].outputs[0])
            sg.tensors[q].name = sg.tensors[t].name
            sg.inputs[pos] = q
            _retarget_signatures(model, k, int(t), q)
            drop.add(users[0])
            changed += 1
    for pos, t in enumerate(list(sg.outputs)):
        i = producers.get(int(t))
        if i is not None and op_name(model, sg.operators[i]) == "DEQUANTIZE":
            src = int(sg.operators[i].inputs[0])
            if len(consumers.get(src, [])) == 1:
                sg.tensors[src].name = sg.tensors[t].name
                sg.outputs[pos] = src
                _retarget_signatures(model, k, int(t), src)
                drop.add(i)
                changed += 1
    sg.operators = [op for i, op in enumerate(sg.operators) if i not in drop]
    return changed


def io_tensors(model) -> set[tuple[int, int]]:
    """(subgraph, tensor) pairs that are model inputs or outputs or named in a signature."""
    keep = {(k, int(t)) for k, sg in enumerate(model.subgraphs) for t in list(sg.inputs) + list(sg.outputs)}
    for sig in model.signatureDefs or []:
        keep |= {(sig.subgraphIndex, t.tensorIndex) for t in list(sig.inputs or []) + list(sig.outputs or [])}
    return keep


def trim(model) -> dict[str, int]:
    """Drop internal tensor names and share byte-identical constant buffers; what was removed."""
    keep = io_tensors(model)
    names = 0
    for k, sg in enumerate(model.subgraphs):
        for i, t in enumerate(sg.tensors):
            if (k, i) not in keep and t.name:
                names += 1
                t.name = None
    first: dict[bytes, int] = {}
    remap: dict[int, int] = {}
    for i, buf in enumerate(model.buffers):
        if buf.data is None or len(buf.data) == 0:
            continue
        key = np.asarray(buf.data).tobytes()
        if key in first:
            remap[i] = first[key]
        else:
            first[key] = i
    for sg in model.subgraphs:
        for t in sg.tensors:
            t.buffer = remap.get(t.buffer, t.buffer)
    for i in remap:  # the duplicate keeps its slot (indices stay valid) but no longer holds data
        model.buffers[i].data = None
    return {"tensor_names_dropped": names, "duplicate_buffers": len(remap)}


def rewrite_file(path, io: str | None = None, do_trim: bool = False) -> dict[str, int]:
    """Apply ``set_io`` and/or ``trim`` to the .tflite at ``path`` in place; what changed."""
    from pathlib import Path

    model = load_model(Path(path).read_bytes())
    done: dict[str, int] = {}
    if io is not None:
        done["io_ops_changed"] = set_io(model, io)
    if do_trim:
        done.update(trim(model))
    Path(path).write_bytes(to_bytes(model, share=do_trim))
    return done
