"""Canonical Huffman coding, sparse run lengths, and the model.ecz container: exact round-trips, sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecomp.compress import huffman
from edgecomp.compress.ecz import EczError, decode_state_dict, encode_state_dict, read_ecz, write_ecz


@pytest.mark.parametrize(
    ("n", "alphabet", "kind"),
    [(0, 4, "uniform"), (1, 1, "uniform"), (7, 3, "uniform"), (5000, 16, "geometric"), (3000, 256, "uniform"),
     (2000, 2, "geometric"), (4000, 32, "single")],
)
def test_encode_decode_round_trips_exactly(n, alphabet, kind):
    rng = np.random.default_rng(n + alphabet)
    if kind == "geometric":
        sym = np.minimum(rng.geometric(0.35, size=n) - 1, alphabet - 1)
    elif kind == "single":
        sym = np.full(n, alphabet - 1)
    else:
        sym = rng.integers(0, alphabet, size=n)
    coded = huffman.encode(sym, alphabet)
    back = huffman.decode(coded)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, sym)
    if n:  # the stream is no longer than its entropy bound (<= H + 1 bits per symbol) plus the last byte's padding
        p = np.bincount(sym, minlength=alphabet) / n
        entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
        assert len(coded.data) * 8 <= n * (entropy + 1) + 8


def test_code_lengths_are_prefix_free_and_limited_on_skewed_counts():
    counts = np.array([2**i for i in range(30)] + [0, 0])  # an unlimited Huffman tree would be 29 deep
    lengths = huffman.code_lengths(counts)
    assert lengths.max() <= huffman.MAX_CODE_LEN
    assert lengths[-1] == 0 and lengths[-2] == 0 and (lengths[:30] > 0).all()
    assert sum(2.0 ** -int(n) for n in lengths if n) <= 1.0
    codes = huffman.canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths, strict=True) if n]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    sym = np.repeat(np.arange(30), np.minimum(counts[:30], 300))
    np.testing.assert_array_equal(huffman.decode(huffman.encode(sym, 32, lengths)), sym)


def test_skewed_symbols_cost_less_than_fixed_width():
    sym = np.minimum(np.random.default_rng(0).geometric(0.5, size=10000) - 1, 15)
    assert len(huffman.encode(sym, 16).data) * 8 < 0.6 * 4 * len(sym)  # ~2 bits instead of 4


def test_truncated_stream_is_an_error():
    coded = huffman.encode(np.arange(16).repeat(10), 16)
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(huffman.Coded(coded.lengths, coded.count, coded.data[: len(coded.data) // 2]))


@pytest.mark.parametrize("gap_bits", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_sparse_positions_round_trip(gap_bits, density):
    mask = np.random.default_rng(gap_bits).random(3001) < density
    mask[-1] = density > 0.5  # a kept or dropped last position
    sym = huffman.gaps_encode(mask, gap_bits)
    assert sym.max(initial=0) < 2**gap_bits
    np.testing.assert_array_equal(huffman.gaps_decode(sym, gap_bits, mask.size), mask)


def _state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    codebook = torch.tensor([-0.3, -0.1, 0.05, 0.2, 0.7])
    sparse = codebook[torch.randint(0, 5, (32, 16, 3, 3), generator=gen)] * (torch.rand(32, 16, 3, 3, generator=gen) < 0.1)
    alpha = torch.rand(8, 1, 1, 1, generator=gen)
    return {
        "dense": torch.randn(6, 5, generator=gen),
        "half": torch.randn(40, generator=gen).half().float(),
        "clustered": codebook[torch.randint(0, 5, (64, 27), generator=gen)],
        "sparse": sparse,
        "binary": torch.where(torch.randn(8, 4, 3, 3, generator=gen) >= 0, alpha, -alpha),
        "steps": torch.tensor(123456789012),
        "negative": torch.tensor([-3, 0, 7]),
        "zeros": torch.zeros(4, 4),
        "empty": torch.zeros(0, 3),
    }


def test_ecz_round_trip_is_exact_and_picks_the_compact_form(tmp_path):
    state = _state()
    summary = write_ecz(state, tmp_path / "model.ecz")
    back = read_ecz(tmp_path / "model.ecz")
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        assert torch.equal(back[name], t), name
    kinds = {t.name: t.kind for t in summary.tensors}
    assert kinds["sparse"] == "sparse" and kinds["clustered"] == "clustered" and kinds["binary"] == "binary"
    assert kinds["dense"] == "raw"
    sizes = {t.name: t.bytes for t in summary.tensors}
    assert sizes["binary"] < 8 * 36 / 8 + 8 * 4 + 20  # 1 bit per weight + alpha per channel + header
    assert sizes["sparse"] < state["sparse"].numel() * 4 / 20
    assert summary.bytes == (tmp_path / "model.ecz").stat().st_size == sum(sizes.values()) + 5


def test_ecz_rejects_corrupt_files():
    data, _ = encode_state_dict(_state())
    with pytest.raises(EczError, match="magic"):
        decode_state_dict(b"PK" + data[2:])
    with pytest.raises((EczError, huffman.HuffmanError)):
        decode_state_dict(data[: len(data) - 9])
    with pytest.raises(EczError, match="trailing"):
        decode_state_dict(data + b"\x00")
    with pytest.raises(EczError, match="dtype"):
        encode_state_dict({"w": torch.zeros(3, dtype=torch.float16)})
