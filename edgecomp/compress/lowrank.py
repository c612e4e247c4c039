"""Stage ``lowrank``: Linear layers by truncated SVD, convolutions by Tucker-2 (HOSVD, optional HOOI).

Linear ``W (out x in) ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)`` becomes Linear(in, r) -> Linear(r, out).
A Conv2d with weight W (N, M, kh, kw) becomes 1x1 (M -> R_in) -> kh x kw core (R_in -> R_out, same
stride/padding/dilation) -> 1x1 (R_out -> N, the original bias), with the factor matrices the leading
left singular vectors of W's output- and input-channel unfoldings (HOSVD) and the core W projected on
them; ``iterations`` HOOI sweeps then refine the factors. The first 1x1 has no bias, so it commutes
with zero padding and striding and the block computes exactly the convolution with the Tucker kernel.

By default each layer's ranks come from an error budget: the ranks with the fewest MACs whose relative
reconstruction error is at most ``max_error`` (for a Linear exact from its singular values; for a conv
the HOSVD error of every (r_out, r_in) pair at once, from the energy of the full core's leading blocks;
HOOI sweeps only lower it, so the reported error always meets the budget). Instead, a fixed ``rank``, a
``rank_ratio`` of the full rank, or the ``energy`` (fraction of squared singular values) kept per
unfolding may be given. A layer is rewritten only when that saves at least ``min_saving`` of its MACs;
otherwise it is kept, with a note saying why.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from edgecomp.compress._rewrite import (
    LayerRecord,
    TuneConfig,
    block_macs,
    layer_shapes,
    leaf_macs,
    log_table,
    n_params,
    select_layers,
    set_module,
    summarize,
    tune,
)
from edgecomp.compress.base import BuildContext, SearchRecipe, Stage, StageResult

logger = logging.getLogger(__name__)


def rank_for(s: torch.Tensor, rank: int | None, rank_ratio: float | None, energy: float) -> int:
    """Rank from singular values ``s``: fixed ``rank``, else ``rank_ratio`` of the full rank, else energy."""
    full = len(s)
    if rank is not None:
        return max(1, min(rank, full))
    if rank_ratio is not None:
        return max(1, min(full, math.ceil(rank_ratio * full)))
    e = (s.double() ** 2).cumsum(0)
    if float(e[-1]) == 0:
        return 1
    return max(1, min(full, int(torch.searchsorted(e / e[-1], torch.tensor(energy, dtype=e.dtype) - 1e-12)) + 1))


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(A, B, rel_error)`` with ``B @ A`` the best rank-``rank`` approximation of ``weight`` (out, in).

    A is (rank, in), B is (out, rank), each carrying the square root of the singular values.
    """
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    r = min(rank, len(s))
    root = s[:r].sqrt()
    total = float((s**2).sum())
    err = (float((s[r:] ** 2).sum()) / total) ** 0.5 if total > 0 else 0.0
    return (root[:, None] * vh[:r]).to(weight.dtype), (u[:, :r] * root).to(weight.dtype), err


def _leading(mat: torch.Tensor, r: int) -> torch.Tensor:
    return torch.linalg.svd(mat, full_matrices=False)[0][:, :r]


def tucker2_factors(weight: torch.Tensor, r_out: int, r_in: int, iterations: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Tucker-2 of a conv kernel (N, M, kh, kw): ``(u_out (N,R_out), core (R_out,R_in,kh,kw), u_in (M,R_in), err)``.

    HOSVD initialisation, then ``iterations`` HOOI sweeps; ``err`` is the relative Frobenius error.
    """
    w = weight.detach().double()
    n, m = w.shape[:2]
    u_out = _leading(w.reshape(n, -1), r_out)
    u_in = _leading(w.transpose(0, 1).reshape(m, -1), r_in)
    for _ in range(iterations):
        u_out = _leading(torch.einsum("nmhw,ms->nshw", w, u_in).reshape(n, -1), r_out)
        u_in = _leading(torch.einsum("nmhw,nr->mrhw", w, u_out).reshape(m, -1), r_in)
    core = torch.einsum("nmhw,nr,ms->rshw", w, u_out, u_in)
    approx = torch.einsum("rshw,nr,ms->nmhw", core, u_out, u_in)
    norm = float(w.norm())
    err = float((w - approx).norm()) / norm if norm > 0 else 0.0
    dt = weight.dtype
    return u_out.to(dt), core.to(dt), u_in.to(dt), err


def make_svd_linear(linear: nn.Linear, rank: int) -> tuple[nn.Sequential, float]:
    """Linear(in, r, no bias) -> Linear(r, out, bias) initialised by truncated SVD, and its error."""
    a, b, err = svd_factors(linear.weight, rank)
    first = nn.Linear(linear.in_features, a.shape[0], bias=False)
    second = nn.Linear(a.shape[0], linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        first.weight.copy_(a)
        second.weight.copy_(b)
        if linear.bias is not None:
            second.bias.copy_(linear.bias)
    return nn.Sequential(OrderedDict(first=first, second=second)), err


def make_tucker_conv(conv: nn.Conv2d, r_out: int, r_in: int, iterations: int = 0) -> tuple[nn.Sequential, float]:
    """1x1 -> kxk core -> 1x1 block initialised by Tucker-2 of ``conv``'s kernel, and its error."""
    u_out, core, u_in, err = tucker2_factors(conv.weight, r_out, r_in, iterations)
    first = nn.Conv2d(conv.in_channels, u_in.shape[1], 1, bias=False)
    mid = nn.Conv2d(u_in.shape[1], u_out.shape[1], conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode)
    last = nn.Conv2d(u_out.shape[1], conv.out_channels, 1, bias=conv.bias is not None)
    with torch.no_grad():
        first.weight.copy_(u_in.t()[:, :, None, None])
        mid.weight.copy_(core)
        last.weight.copy_(u_out[:, :, None, None])
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(OrderedDict(first=first, core=mid, last=last)), err


class LowRank(Stage):
    """Factorise Linear layers (truncated SVD) and convolutions (Tucker-2) into thinner chains."""

    name = "lowrank"
    search_rank = 20

    @classmethod
    def search_space(cls) -> list[SearchRecipe]:
        """The planner tries the factorisation with its default settings."""
        return [[(cls.name, {})]]

    class Config(TuneConfig):
        """Settings of the low-rank factorisation and its fine-tune."""

        max_error: float = Field(0.5, gt=0, lt=1, description="Per layer: the cheapest ranks with relative error <= this.")
        energy: float | None = Field(None, gt=0, le=1, description="Keep this fraction of squared singular values "
                                     "per unfolding (instead of max_error).")
        rank_ratio: float | None = Field(None, gt=0, le=1, description="Rank as a fraction of full rank (overrides energy).")
        rank: int | None = Field(None, ge=1, description="Fixed rank for every layer (overrides rank_ratio and energy).")
        min_saving: float = Field(0.2, ge=0, lt=1, description="Keep a layer whose rewrite saves less than this share of its MACs.")
        kinds: list[Literal["linear", "conv"]] = Field(["linear", "conv"], description="Layer kinds to factorise.")
        iterations: int = Field(2, ge=0, description="HOOI refinement sweeps after the HOSVD (convs).")
        min_in_channels: int = Field(4, ge=1, description="Keep convs with fewer input channels (e.g. the stem).")
        layers: list[str] | None = Field(None, description="Layer names (fnmatch patterns) to consider; default all.")
        exclude: list[str] = Field(default_factory=list, description="Layer names (fnmatch patterns) to leave alone.")

        @model_validator(mode="after")
        def _one_choice(self) -> LowRank.Config:
            given = [k for k in ("rank", "rank_ratio", "energy", "max_error") if k in self.model_fields_set
                     and getattr(self, k) is not None]
            if len(given) > 1:
                raise ValueError(f"give one of rank, rank_ratio, energy or max_error, not both {' and '.join(given)}")
            return self

        @property
        def fixed(self) -> bool:
            """Whether the ranks come from rank, rank_ratio or energy rather than the error budget."""
            return self.rank is not None or self.rank_ratio is not None or self.energy is not None

    def apply(self, model: nn.Module, cfg: Config, ctx: BuildContext) -> StageResult:
        """Factorise the chosen layers where that saves MACs, report per layer, then fine-tune."""
        model = copy.deepcopy(model).eval()
        shapes = layer_shapes(model, ctx.spec.input_shape)
        kinds = tuple(k for k, on in ((nn.Linear, "linear" in cfg.kinds), (nn.Conv2d, "conv" in cfg.kinds)) if on)
        records: list[LayerRecord] = []
        notes: list[str] = []
        for name, mod in select_layers(model, kinds, cfg.layers, cfg.exclude):
            if name not in shapes.outputs:
                notes.append(f"{name}: not reached by the forward pass; kept")
                continue
            kind = "linear" if isinstance(mod, nn.Linear) else "conv"
            rec = LayerRecord(name, kind, list(mod.weight.shape), "skipped", params_before=n_params(mod),
                              macs_before=leaf_macs(mod, shapes.outputs[name]))
            rec.macs_after, rec.params_after = rec.macs_before, rec.params_before
            records.append(rec)
            if kind == "conv" and (reason := _conv_reason(mod, cfg.min_in_channels)):
                rec.note = reason
                if mod.groups != 1:
                    notes.append(f"{name}: {reason}")
                continue
            block, rank, err = self._factorise(mod, cfg, shapes.inputs[name], shapes.outputs[name])
            macs = block_macs(block, shapes.inputs[name])
            rec.rank, rec.rel_error = rank, err
            if macs > (1 - cfg.min_saving) * rec.macs_before or macs >= rec.macs_before:
                how = "would cost" if macs >= rec.macs_before else \
                    f"would save only {1 - macs / rec.macs_before:.0%} (min_saving={cfg.min_saving}):"
                rec.status, rec.note = "kept", f"rank {rank} (error {err:.2f}) {how} {macs} MACs of {rec.macs_before}"
                notes.append(f"{name}: kept ({rec.note})")
                continue
            set_module(model, name, block)
            rec.status, rec.macs_after, rec.params_after = "rewritten", macs, n_params(block)
        if not any(r.status == "rewritten" for r in records):
            notes.append(f"no layer was factorised (none would save {cfg.min_saving:.0%} of its MACs at these ranks)")
        log_table("lowrank", records)
        metrics = {**summarize(records), "layers": [r.as_dict() for r in records]}
        if ctx.data is not None and metrics["rewritten"]:  # nothing rewritten: the model is the input, unchanged
            from edgecomp.metrics import evaluate

            metrics["test_accuracy_rewritten"] = evaluate(model, ctx.data, "test")
        metrics["finetune"] = tune(model, cfg, ctx, notes, records)
        s = summarize(records)
        if s["rewritten"]:
            notes.append(f"factorised {s['rewritten']} layer(s): their MACs {s['macs_before']} -> {s['macs_after']}, "
                         f"params {s['params_before']} -> {s['params_after']}")
        return StageResult(model.eval(), metrics, notes)

    @staticmethod
    def _factorise(mod: nn.Module, cfg: Config, in_shape: list[int], out_shape: list[int]
                   ) -> tuple[nn.Sequential, object, float]:
        w = mod.weight.detach().double()
        if isinstance(mod, nn.Linear):
            s = torch.linalg.svdvals(w)
            r = rank_for(s, cfg.rank, cfg.rank_ratio, cfg.energy) if cfg.fixed else budget_rank(s, cfg.max_error)
            block, err = make_svd_linear(mod, r)
            return block, r, err
        n, m = w.shape[:2]
        if cfg.fixed:
            r_out = rank_for(torch.linalg.svdvals(w.reshape(n, -1)), cfg.rank, cfg.rank_ratio, cfg.energy)
            r_in = rank_for(torch.linalg.svdvals(w.transpose(0, 1).reshape(m, -1)), cfg.rank, cfg.rank_ratio,
                            cfg.energy)
        else:
            r_out, r_in = budget_tucker_ranks(w, cfg.max_error, _pixels(in_shape), _pixels(out_shape))
        block, err = make_tucker_conv(mod, r_out, r_in, cfg.iterations)
        return block, [r_out, r_in], err


def _pixels(shape: list[int]) -> int:
    """Batch times spatial positions of an NCHW shape."""
    return shape[0] * shape[2] * shape[3]


def _residual_energy(s: torch.Tensor) -> torch.Tensor:
    """Share of squared singular values dropped when keeping r = 0 .. len(s) of them (index r)."""
    e = s.double() ** 2
    total = float(e.sum())
    tail = torch.cat([e.flip(0).cumsum(0).flip(0), e.new_zeros(1)])
    return tail / total if total > 0 else torch.zeros_like(tail)


def budget_rank(s: torch.Tensor, max_error: float) -> int:
    """Smallest rank whose truncated SVD has relative error <= ``max_error`` (singular values ``s``)."""
    fits = torch.nonzero(_residual_energy(s)[1:] <= max_error**2 + 1e-12)
    return int(fits[0]) + 1


def budget_tucker_ranks(weight: torch.Tensor, max_error: float, pixels_in: int, pixels_out: int) -> tuple[int, int]:
    """The Tucker-2 ranks (r_out, r_in) with the fewest MACs whose HOSVD error is <= ``max_error``.

    With the full factor bases of both unfoldings, the core's energy kept by ranks (r_out, r_in) is the
    sum of its leading r_out x r_in block, so one 2-D prefix sum gives every pair's error. MACs are those
    of the block 1x1 (M -> r_in) -> k x k (r_in -> r_out) -> 1x1 (r_out -> N) for the given pixel counts.
    """
    w = weight.detach().double()
    n, m, kh, kw = w.shape
    u_out, u_in = _leading(w.reshape(n, -1), n), _leading(w.transpose(0, 1).reshape(m, -1), m)
    kept = (torch.einsum("nmhw,nr,ms->rshw", w, u_out, u_in) ** 2).sum((2, 3)).cumsum(0).cumsum(1)
    total = float((w**2).sum())
    err2 = 1 - kept / total if total > 0 else torch.zeros_like(kept)
    r_out = torch.arange(1, kept.shape[0] + 1, dtype=torch.float64)[:, None]
    r_in = torch.arange(1, kept.shape[1] + 1, dtype=torch.float64)[None, :]
    macs = pixels_in * m * r_in + pixels_out * (r_out * r_in * kh * kw + r_out * n)
    macs = torch.where(err2 <= max_error**2 + 1e-9, macs, torch.tensor(float("inf"), dtype=torch.float64))
    best = int(torch.argmin(macs))
    return best // kept.shape[1] + 1, best % kept.shape[1] + 1


def _conv_reason(conv: nn.Conv2d, min_in_channels: int) -> str:
    if conv.groups != 1:
        return f"grouped conv (groups={conv.groups}) is not supported; kept as is"
    if conv.in_channels < min_in_channels:
        return f"only {conv.in_channels} input channel(s) (< min_in_channels={min_in_channels})"
    return ""
