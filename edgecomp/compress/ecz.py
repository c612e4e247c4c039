"""``model.ecz``: the bundle's compressed form of a model's weights (Deep Compression storage).

An ``.ecz`` file holds a state_dict, losslessly: decoding it gives back exactly the tensors that
were written (``torch.equal`` on every one). It holds no graph: the graph is in the bundle's
model.tflite / model.onnx, and an app rebuilds the dense weights from this file. Each tensor is
stored in the smallest of these forms that represents it exactly:

* ``raw``: float32, or float16 when every value is exactly a float16, or int64 (zig-zag varints);
* ``binary``: each output channel takes only the values -a_c and +a_c (binarized weights): the
  table of a_c, then one bit per weight (1 = +a_c), packed;
* ``clustered``: at most 256 distinct values (weight sharing): the codebook, then the index of
  every weight, Huffman-coded;
* ``sparse``: zeros plus at most 256 distinct non-zero values (pruned, then shared): the codebook of
  the non-zero values, the positions of the non-zero weights as Huffman-coded run lengths
  (``huffman.gaps_encode``), then their indices, Huffman-coded.

Layout (little-endian; ``v`` = unsigned LEB128 varint)::

    file    = b"ECZ" 0x01, v(n_tensors), tensor*
    tensor  = v(len(name)) name(utf-8), u8 kind, u8 dtype, v(ndim) v(dim)*, payload
    kind    = 0 raw | 1 binary | 2 clustered | 3 sparse ;  dtype = 0 float32 | 1 int64
    raw     = u8 storage (0 f32 | 1 f16 | 2 zig-zag varints), values
    table   = v(k), u8 storage (0 f32 | 1 f16), k values
    stream  = nibbles: code length of each symbol of the alphabet (ceil(A/2) bytes), v(len(bits)), bits
    binary  = table (k = dim0), ceil(numel/8) bytes of packed sign bits
    clustered = table, stream (alphabet k, numel symbols)
    sparse  = table, u8 gap_bits, v(n_gap_symbols), stream (alphabet 2**gap_bits),
              stream (alphabet k, one symbol per non-zero weight)
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgecomp.compress import huffman
from edgecomp.errors import EdgecompError

logger = logging.getLogger(__name__)
MAGIC = b"ECZ\x01"
ECZ_NAME = "model.ecz"
MAX_CODEBOOK = 256
KINDS = ("raw", "binary", "clustered", "sparse")


class EczError(EdgecompError):
    """A .ecz file is malformed, truncated, or cannot hold the given tensors."""


@dataclass
class TensorEntry:
    """How one tensor was stored: its form and the bytes each part took."""

    name: str
    kind: str
    numel: int
    bytes: int
    parts: dict[str, int] = field(default_factory=dict)


@dataclass
class EczSummary:
    """What ``write_ecz`` wrote: total bytes and a per-tensor breakdown."""

    bytes: int
    tensors: list[TensorEntry]

    def by_kind(self) -> dict[str, int]:
        """Bytes per storage form (raw, binary, clustered, sparse), headers included."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.kind] = out.get(t.kind, 0) + t.bytes
        return out


# ---------------------------------------------------------------- primitives
def _varint(n: int) -> bytes:
    if n < 0:
        raise EczError(f"cannot write negative varint {n}", "report this as a bug")
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EczError("the .ecz file is truncated", "re-create it with edgecomp build")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.u8()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
            if shift > 63:
                raise EczError("bad varint in .ecz file", "the file is corrupt")


def _table(values: np.ndarray) -> bytes:
    values = np.asarray(values, dtype=np.float32)
    half = values.astype(np.float16)
    exact = np.array_equal(half.astype(np.float32), values, equal_nan=True)
    body = half.astype("<f2").tobytes() if exact else values.astype("<f4").tobytes()
    return _varint(len(values)) + bytes([1 if exact else 0]) + body


def _read_table(r: _Reader) -> np.ndarray:
    k, storage = r.varint(), r.u8()
    if storage not in (0, 1):
        raise EczError(f"unknown value storage {storage}", "the file is corrupt or from a newer edgecomp")
    size = 2 if storage else 4
    return np.frombuffer(r.take(k * size), dtype="<f2" if storage else "<f4").astype(np.float32)


def _stream(coded: huffman.Coded, alphabet: int) -> bytes:
    lengths = np.zeros(alphabet + (alphabet % 2), dtype=np.uint8)
    lengths[:alphabet] = coded.lengths[:alphabet]
    nibbles = (lengths[0::2] << 4) | lengths[1::2]
    return nibbles.tobytes() + _varint(len(coded.data)) + coded.data


def _read_stream(r: _Reader, alphabet: int, count: int) -> np.ndarray:
    nib = np.frombuffer(r.take((alphabet + 1) // 2), dtype=np.uint8)
    lengths = np.stack([nib >> 4, nib & 0x0F], axis=1).ravel()[:alphabet].astype(np.int64)
    data = r.take(r.varint())
    return huffman.decode(huffman.Coded(lengths, count, data))


# ---------------------------------------------------------------- encoders, one per form
def _raw(t: np.ndarray) -> tuple[bytes, dict[str, int]]:
    if t.dtype == np.int64:
        zig = (t.ravel() << 1) ^ (t.ravel() >> 63)
        body = b"".join(_varint(int(v) & 0xFFFFFFFFFFFFFFFF) for v in zig)
        return bytes([2]) + body, {"values": len(body)}
    half = t.astype(np.float16)
    if np.array_equal(half.astype(np.float32), t, equal_nan=True):
        return bytes([1]) + half.astype("<f2").tobytes(), {"values": t.size * 2}
    return bytes([0]) + t.astype("<f4").tobytes(), {"values": t.size * 4}


def _binary(t: np.ndarray) -> tuple[bytes, dict[str, int]] | None:
    if t.ndim < 2:
        return None
    rows = t.reshape(t.shape[0], -1)
    alpha = np.abs(rows).max(axis=1)
    if not np.all((rows == alpha[:, None]) | (rows == -alpha[:, None])):
        return None
    table = _table(alpha)
    bits = np.packbits((rows > 0).ravel()).tobytes()
    return table + bits, {"codebook": len(table), "bits": len(bits)}


def _clustered(t: np.ndarray) -> tuple[bytes, dict[str, int]] | None:
    values, idx = np.unique(t.ravel(), return_inverse=True)
    if len(values) > MAX_CODEBOOK:
        return None
    table = _table(values)
    stream = _stream(huffman.encode(idx, len(values)), len(values))
    return table + stream, {"codebook": len(table), "indices": len(stream)}


def _sparse(t: np.ndarray) -> tuple[bytes, dict[str, int]] | None:
    flat = t.ravel()
    mask = flat != 0
    if mask.all():
        return None
    values, idx = np.unique(flat[mask], return_inverse=True)
    if len(values) > MAX_CODEBOOK:
        return None
    table = _table(values)
    gap_bits, gaps = huffman.best_gap_bits(mask)
    positions = bytes([gap_bits]) + _varint(gaps.count) + _stream(gaps, 1 << gap_bits)
    indices = _stream(huffman.encode(idx, max(len(values), 1)), max(len(values), 1)) if len(values) else b""
    return table + positions + indices, {"codebook": len(table), "positions": len(positions),
                                         "indices": len(indices)}


_ENCODERS = {"binary": _binary, "clustered": _clustered, "sparse": _sparse}


def encode_tensor(name: str, tensor: torch.Tensor) -> tuple[bytes, TensorEntry]:
    """The bytes of one tensor in its smallest exact form, and a record of that choice."""
    t = tensor.detach().cpu()
    if t.dtype == torch.float32:
        dtype = 0
    elif t.dtype == torch.int64:
        dtype = 1
    else:
        raise EczError(f"tensor '{name}' has dtype {t.dtype}; .ecz holds float32 and int64 tensors",
                       "compress an fp32 model (quantize after writing the compressed form)")
    arr = t.numpy()
    options = {"raw": _raw(arr)}
    if dtype == 0 and arr.size:
        for kind, fn in _ENCODERS.items():
            got = fn(arr)
            if got is not None:
                options[kind] = got
    kind = min(options, key=lambda k: len(options[k][0]))
    payload, parts = options[kind]
    name_b = name.encode()
    head = _varint(len(name_b)) + name_b + bytes([KINDS.index(kind), dtype]) + _varint(arr.ndim)
    head += b"".join(_varint(int(d)) for d in arr.shape)
    return head + payload, TensorEntry(name, kind, int(arr.size), len(head) + len(payload),
                                       {"header": len(head), **parts})


def encode_state_dict(state: dict[str, torch.Tensor]) -> tuple[bytes, EczSummary]:
    """The whole .ecz file for ``state`` as bytes, with its breakdown."""
    buf = io.BytesIO()
    buf.write(MAGIC + _varint(len(state)))
    entries = []
    for name, tensor in state.items():
        data, entry = encode_tensor(name, tensor)
        buf.write(data)
        entries.append(entry)
    out = buf.getvalue()
    return out, EczSummary(len(out), entries)


def write_ecz(state: dict[str, torch.Tensor], path: str | Path) -> EczSummary:
    """Write ``state`` to ``path`` as .ecz and return the breakdown."""
    data, summary = encode_state_dict(state)
    Path(path).write_bytes(data)
    return summary


def decode_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Rebuild the exact state_dict from .ecz bytes (EczError if malformed)."""
    if data[:4] != MAGIC:
        raise EczError("not an .ecz file (bad magic)", "pass the model.ecz written by edgecomp build")
    r = _Reader(data)
    r.take(4)
    out: dict[str, torch.Tensor] = {}
    for _ in range(r.varint()):
        name = r.take(r.varint()).decode()
        kind_i, dtype = r.u8(), r.u8()
        if kind_i >= len(KINDS) or dtype > 1:
            raise EczError(f"tensor '{name}': unknown kind {kind_i} or dtype {dtype}", "the file is corrupt")
        shape = tuple(r.varint() for _ in range(r.varint()))
        numel = int(np.prod(shape)) if shape else 1
        arr = _decode_payload(r, KINDS[kind_i], shape, numel)
        out[name] = torch.from_numpy(np.ascontiguousarray(arr).reshape(shape))
    if r.pos != len(data):
        raise EczError(f".ecz file has {len(data) - r.pos} unexpected trailing bytes", "the file is corrupt")
    return out


def _decode_payload(r: _Reader, kind: str, shape: tuple[int, ...], numel: int) -> np.ndarray:
    if kind == "raw":
        storage = r.u8()
        if storage == 2:
            zig = np.array([r.varint() for _ in range(numel)], dtype=np.uint64)
            return ((zig >> np.uint64(1)).astype(np.int64) ^ -(zig & np.uint64(1)).astype(np.int64))
        dt = {0: "<f4", 1: "<f2"}.get(storage)
        if dt is None:
            raise EczError(f"unknown raw storage {storage}", "the file is corrupt")
        return np.frombuffer(r.take(numel * (4 if storage == 0 else 2)), dtype=dt).astype(np.float32)
    table = _read_table(r)
    if kind == "binary":
        rows = numel // shape[0]
        bits = np.unpackbits(np.frombuffer(r.take((numel + 7) // 8), dtype=np.uint8))[:numel].reshape(shape[0], rows)
        return np.where(bits == 1, table[:, None], -table[:, None]).astype(np.float32)
    if kind == "clustered":
        idx = _read_stream(r, len(table), numel)
        return table[_checked(idx, len(table))]
    gap_bits = r.u8()
    count = r.varint()
    mask = huffman.gaps_decode(_read_stream(r, 1 << gap_bits, count), gap_bits, numel)
    out = np.zeros(numel, dtype=np.float32)
    if len(table):
        out[mask] = table[_checked(_read_stream(r, len(table), int(mask.sum())), len(table))]
    return out


def _checked(idx: np.ndarray, k: int) -> np.ndarray:
    if len(idx) and (idx.max() >= k or idx.min() < 0):
        raise EczError("codebook index out of range", "the file is corrupt")
    return idx


def read_ecz(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .ecz file back into a state_dict (exactly the tensors that were written)."""
    return decode_state_dict(Path(path).read_bytes())
