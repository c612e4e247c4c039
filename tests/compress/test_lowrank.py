"""Low-rank factorisation: exact SVD of rank-k matrices, Tucker-2 error vs rank, the stage's choices."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgecomp.compress.lowrank import (
    LowRank,
    budget_rank,
    make_svd_linear,
    make_tucker_conv,
    rank_for,
    svd_factors,
    tucker2_factors,
)
from tests.rewrite_helpers import context


def _rank_k(out: int, inp: int, k: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(out, k, generator=gen) @ torch.randn(k, inp, generator=gen)


def test_svd_of_a_rank_k_matrix_at_rank_k_is_exact():
    w = _rank_k(24, 40, 3)
    a, b, err = svd_factors(w, 3)
    assert a.shape == (3, 40) and b.shape == (24, 3)
    assert err < 1e-6
    assert float((b @ a - w).abs().max()) < 1e-4 * float(w.abs().max())
    _, _, err2 = svd_factors(w, 2)
    assert err2 > 0.05  # one rank less is not exact


def test_energy_threshold_finds_the_true_rank_and_the_stage_is_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    with torch.no_grad():
        model[0].weight.copy_(_rank_k(64, 40, 4) / 10)
    s = torch.linalg.svdvals(model[0].weight.detach())
    assert rank_for(s, None, None, 0.9999) == 4
    x = torch.randn(16, 40)
    with torch.no_grad():
        before = model(x)
    result = LowRank().apply(model, LowRank.Config(energy=0.9999, epochs=0), context([1, 40]))
    first = next(r for r in result.metrics["layers"] if r["name"] == "0")
    assert first["status"] == "rewritten" and first["rank"] == 4 and first["rel_error"] < 1e-6
    assert first["macs_after"] == 4 * (40 + 64) and first["params_after"] == 4 * (40 + 64) + 64
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), before, atol=1e-4, rtol=1e-4)


def test_tucker_error_falls_with_rank_and_hooi_does_not_hurt():
    torch.manual_seed(1)
    w = torch.randn(12, 10, 3, 3)
    errors = [tucker2_factors(w, r, r)[3] for r in (2, 4, 6, 8, 10)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert tucker2_factors(w, 12, 10)[3] < 1e-6  # full ranks (N, M): exact
    assert tucker2_factors(w, 4, 3, iterations=3)[3] <= tucker2_factors(w, 4, 3, iterations=0)[3] + 1e-9


def test_tucker_block_computes_the_conv_with_the_tucker_kernel():
    torch.manual_seed(2)
    conv = nn.Conv2d(10, 12, 3, stride=2, padding=1, dilation=1)
    block, err = make_tucker_conv(conv, 5, 4, iterations=1)
    u_out, core, u_in, err2 = tucker2_factors(conv.weight, 5, 4, iterations=1)
    assert err == pytest.approx(err2)
    kernel = torch.einsum("rshw,nr,ms->nmhw", core, u_out, u_in)
    x = torch.randn(3, 10, 9, 9)
    with torch.no_grad():
        expected = F.conv2d(x, kernel, conv.bias, stride=2, padding=1)
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    assert [m.kernel_size for m in block] == [(1, 1), (3, 3), (1, 1)]


def test_svd_linear_keeps_the_bias():
    lin = nn.Linear(8, 6)
    block, err = make_svd_linear(lin, 6)
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), lin(x), atol=1e-5, rtol=1e-5)
    assert err < 1e-6


class ConvNet(nn.Module):
    """A 3x3 conv, a grouped conv and a linear head, for the stage's choices."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.grouped(torch.relu(self.conv(x)))).mean((2, 3)))


def test_stage_skips_grouped_convs_and_keeps_layers_that_would_not_save_macs():
    torch.manual_seed(3)
    model = ConvNet().eval()
    result = LowRank().apply(model, LowRank.Config(rank_ratio=0.25, epochs=0), context([1, 16, 6, 6]))
    layers = {r["name"]: r for r in result.metrics["layers"]}
    assert layers["grouped"]["status"] == "skipped" and "groups=4" in layers["grouped"]["note"]
    assert any("grouped" in n for n in result.notes)
    assert layers["conv"]["status"] == "rewritten" and layers["conv"]["rank"] == [8, 4]
    assert layers["conv"]["macs_after"] < layers["conv"]["macs_before"]
    full = LowRank().apply(model, LowRank.Config(rank_ratio=1.0, epochs=0), context([1, 16, 6, 6]))
    kept = {r["name"]: r for r in full.metrics["layers"]}
    assert kept["conv"]["status"] == "kept" and "MACs" in kept["conv"]["note"]
    assert isinstance(full.model.conv, nn.Conv2d)
    assert result.model(torch.randn(2, 16, 6, 6)).shape == (2, 10)


def test_default_ranks_are_the_cheapest_within_the_error_budget():
    torch.manual_seed(5)
    model = ConvNet().eval()
    cfg = LowRank.Config(epochs=0)
    assert not cfg.fixed and cfg.distill
    result = LowRank().apply(model, cfg, context([1, 16, 6, 6]))
    conv = next(r for r in result.metrics["layers"] if r["name"] == "conv")
    assert conv["status"] == "rewritten" and conv["rel_error"] <= cfg.max_error
    r_out, r_in = conv["rank"]
    w = model.conv.weight
    assert tucker2_factors(w, r_out, r_in)[3] <= cfg.max_error  # HOSVD alone meets it; HOOI only lowers it
    macs = 36 * 16 * r_in + 36 * (r_out * r_in * 9 + r_out * 32)
    assert conv["macs_after"] == macs
    for a, b in itertools.product(range(1, 33), range(1, 17)):  # no cheaper pair meets the budget
        if 36 * 16 * b + 36 * (a * b * 9 + a * 32) < macs:
            assert tucker2_factors(w, a, b)[3] > cfg.max_error, (a, b)
    head = next(r for r in result.metrics["layers"] if r["name"] == "head")
    assert head["status"] == "rewritten" and head["rel_error"] <= cfg.max_error
    strict = LowRank().apply(model, LowRank.Config(epochs=0, min_saving=0.9), context([1, 16, 6, 6]))
    for r in strict.metrics["layers"]:  # no layer saves 90 % within the budget: each is kept, and said so
        if r["name"] != "grouped":
            assert r["status"] == "kept" and "min_saving=0.9" in r["note"], r
            assert any(n.startswith(f"{r['name']}: kept") for n in strict.notes)
    s = torch.linalg.svdvals(model.head.weight.detach())
    assert svd_factors(model.head.weight, budget_rank(s, 0.5))[2] <= 0.5 < svd_factors(
        model.head.weight, budget_rank(s, 0.5) - 1)[2]


def test_one_rank_choice_at_a_time():
    from edgecomp.compress.recipe import make_step
    from edgecomp.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        make_step("lowrank", {"energy": 0.9, "max_error": 0.3})
    assert make_step("lowrank", {"energy": 0.9}).config.fixed
