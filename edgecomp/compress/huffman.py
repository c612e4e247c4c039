"""Canonical Huffman coding of small integer alphabets (codebook indices, sparse-position gaps).

Deep Compression (Han et al. 2016) Huffman-codes the cluster indices of each layer and the run
lengths between its non-zero weights. This module does the coding: code lengths from symbol counts
(limited to ``MAX_CODE_LEN`` bits), canonical codes from lengths, bit-exact ``encode``/``decode``,
and ``gaps_encode``/``gaps_decode`` which turn a sparse mask into run-length symbols and back.
A canonical code is fully described by its code lengths, so a stream stores only those (4 bits per
symbol) plus the packed bits. Not a stage: ``edgecomp.compress.ecz`` uses it to write bundles.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from edgecomp.errors import EdgecompError

MAX_CODE_LEN = 15
"""Longest code allowed; lengths fit a nibble and the decoder's lookup table has 2**15 entries."""
_BLOCK_BITS = 1 << 20  # the decoder precomputes lookup windows for this many bit positions at a time


class HuffmanError(EdgecompError):
    """A Huffman stream or table is malformed (truncated, inconsistent lengths, bad symbol)."""


def code_lengths(counts: np.ndarray | list[int], max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Huffman code length per symbol (0 for unused symbols), none longer than ``max_len``.

    A single used symbol gets length 1. If the optimal tree is deeper than ``max_len``, counts are
    flattened (halved, keeping used symbols at >= 1) until it fits: slightly suboptimal, always valid.
    """
    freq = np.asarray(counts, dtype=np.int64)
    if freq.ndim != 1 or (freq < 0).any():
        raise HuffmanError("symbol counts must be a 1-D array of non-negative integers", "pass np.bincount output")
    used = np.flatnonzero(freq)
    lengths = np.zeros(len(freq), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    if len(used) > 2**max_len:
        raise HuffmanError(f"{len(used)} symbols cannot be coded in {max_len} bits", "use a smaller alphabet")
    work = freq.copy()
    while True:
        heap = [(int(work[s]), i, [int(s)]) for i, s in enumerate(used)]
        heapq.heapify(heap)
        depth = dict.fromkeys((int(s) for s in used), 0)
        tie = len(heap)
        while len(heap) > 1:
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
            tie += 1
        if max(depth.values()) <= max_len:
            for s, d in depth.items():
                lengths[s] = d
            return lengths
        work[used] = np.maximum(work[used] // 2, 1)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code value per symbol (shorter codes first, ties by symbol), given code lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted((int(n), s) for s, n in enumerate(lengths) if n > 0)
    if sum(2.0 ** -n for n, _ in order) > 1.0 + 1e-12:
        raise HuffmanError("code lengths violate the Kraft inequality", "the stream's table is corrupt")
    code, prev = 0, order[0][0] if order else 0
    for n, s in order:
        code <<= n - prev
        codes[s] = code
        code += 1
        prev = n
    return codes


@dataclass(frozen=True)
class Coded:
    """A Huffman-coded stream: code length per symbol, number of symbols and the packed bits."""

    lengths: np.ndarray
    count: int
    data: bytes

    @property
    def bits(self) -> int:
        """Number of payload bits (the last byte is zero-padded)."""
        return len(self.data) * 8


def encode(symbols: np.ndarray, alphabet: int, lengths: np.ndarray | None = None) -> Coded:
    """Huffman-code ``symbols`` (integers in ``[0, alphabet)``); lengths are computed if not given."""
    sym = np.asarray(symbols, dtype=np.int64).ravel()
    if len(sym) and (sym.min() < 0 or sym.max() >= alphabet):
        raise HuffmanError(f"symbols must lie in [0, {alphabet})", "check the alphabet size")
    if lengths is None:
        lengths = code_lengths(np.bincount(sym, minlength=alphabet))
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(sym) == 0:
        return Coded(lengths, 0, b"")
    if (lengths[sym] == 0).any():
        raise HuffmanError("a symbol to encode has no code", "compute lengths from these symbols' counts")
    codes = canonical_codes(lengths)
    width = int(lengths[sym].max())
    pos = np.arange(width)
    chunks = []
    for i in range(0, len(sym), _BLOCK_BITS // 8):  # bounded memory on large tensors
        n, c = lengths[sym[i : i + _BLOCK_BITS // 8]], codes[sym[i : i + _BLOCK_BITS // 8]]
        # bit j of each code, most significant first; positions past the code's length are dropped
        bits = (c[:, None] >> np.maximum(n[:, None] - 1 - pos[None, :], 0)) & 1
        chunks.append(bits[pos[None, :] < n[:, None]].astype(np.uint8))
    return Coded(lengths, len(sym), np.packbits(np.concatenate(chunks)).tobytes())


def decode(coded: Coded) -> np.ndarray:
    """Exact inverse of ``encode``: the ``coded.count`` symbols, as int64."""
    lengths = np.asarray(coded.lengths, dtype=np.int64)
    if coded.count == 0:
        return np.zeros(0, dtype=np.int64)
    if not (lengths > 0).any() or lengths.max() > MAX_CODE_LEN:
        raise HuffmanError("invalid code-length table", "the stream is corrupt")
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    # lookup table indexed by the next `width` bits: (symbol, length); -1 marks unused prefixes
    table_sym = np.full(1 << width, -1, dtype=np.int64)
    table_len = np.zeros(1 << width, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        n = int(lengths[s])
        lo = int(codes[s]) << (width - n)
        table_sym[lo : lo + (1 << (width - n))] = s
        table_len[lo : lo + (1 << (width - n))] = n
    bits = np.unpackbits(np.frombuffer(coded.data, dtype=np.uint8))
    total = len(bits)
    padded = np.concatenate([bits, np.zeros(width, dtype=np.uint8)])
    tsym, tlen = table_sym.tolist(), table_len.tolist()
    out = [0] * coded.count
    pos, start, wins = 0, 0, []
    for i in range(coded.count):
        if pos >= total:
            raise HuffmanError("Huffman stream ended early", "the file is truncated or corrupt")
        if pos - start >= len(wins):  # next block of lookup windows: the `width` bits starting at each position
            start, n = pos, min(_BLOCK_BITS, total - pos)
            window = np.zeros(n, dtype=np.int64)
            for k in range(width):
                window = (window << 1) | padded[pos + k : pos + k + n]
            wins = window.tolist()
        w = wins[pos - start]
        s = tsym[w]
        if s < 0:
            raise HuffmanError("invalid code in Huffman stream", "the file is corrupt")
        out[i] = s
        pos += tlen[w]
    if pos > total:
        raise HuffmanError("Huffman stream ended early", "the file is truncated or corrupt")
    return np.asarray(out, dtype=np.int64)


def gaps_encode(mask: np.ndarray, gap_bits: int) -> np.ndarray:
    """Run-length symbols for the positions of ``True`` in a flat mask (Deep Compression's relative index).

    Each kept position is coded as the number of skipped positions before it (0..M-1, M = 2**gap_bits - 1);
    a longer run emits the filler symbol M, which skips M positions without placing a weight.
    """
    flat = np.asarray(mask, dtype=bool).ravel()
    pos = np.flatnonzero(flat)
    gaps = np.diff(np.concatenate([[-1], pos])) - 1
    filler = (1 << gap_bits) - 1
    fills = gaps // filler
    rest = gaps - fills * filler
    out = np.full(int(fills.sum()) + len(gaps), filler, dtype=np.int64)
    ends = np.cumsum(fills + 1) - 1  # index of each real gap symbol, after its fillers
    out[ends] = rest
    return out


def gaps_decode(symbols: np.ndarray, gap_bits: int, size: int) -> np.ndarray:
    """Inverse of ``gaps_encode``: the flat boolean mask of length ``size``."""
    filler = (1 << gap_bits) - 1
    sym = np.asarray(symbols, dtype=np.int64)
    real = sym != filler
    step = np.where(real, sym + 1, filler)
    pos = np.cumsum(step) - 1
    kept = pos[real]
    if len(kept) and (kept[-1] >= size or kept.min() < 0):
        raise HuffmanError("sparse positions run past the tensor", "the file is corrupt")
    mask = np.zeros(size, dtype=bool)
    mask[kept] = True
    return mask


def best_gap_bits(mask: np.ndarray, choices: range = range(2, 9)) -> tuple[int, Coded]:
    """The run-length width whose Huffman-coded stream is smallest, and that stream."""
    best: tuple[int, Coded] | None = None
    for g in choices:
        coded = encode(gaps_encode(mask, g), 1 << g)
        if best is None or len(coded.data) + (1 << g) // 2 < len(best[1].data) + (1 << best[0]) // 2:
            best = (g, coded)
    assert best is not None
    return best
