"""Stage ``separable``: standard k x k convolutions -> depthwise k x k (multiplier r) + pointwise 1 x 1.

For a Conv2d with weight W (N out, M in, kh, kw), each input channel's slice ``W[:, m]`` is an
N x (kh*kw) matrix. Its best rank-r factorisation (truncated SVD, ``U S V^T``) gives r depthwise
filters ``sqrt(s_j) v_j`` for channel m and the pointwise weights ``sqrt(s_j) u_j``; the pair computes
exactly ``sum_m sum_j u_j s_j v_j^T``, the rank-r approximation of every slice (Eckart-Young: the best
one in Frobenius norm). Rank 1 is the MobileNet form; a rank of min(N, kh*kw) is exact.

Which layers, and at which rank, comes from a fixed ``rank``, a per-layer error budget
(``max_error``) or a model MAC budget (``mac_reduction``, greedy on error saved per MAC spent).
The stage reports each layer's relative weight error, MACs and params before/after, then fine-tunes
with distillation from the source model (``ctx.teacher``).
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from pydantic import Field, model_validator
from torch import nn

from edgecomp.compress._rewrite import (
    LayerRecord,
    TuneConfig,
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
from edgecomp.errors import InfeasibleBudgetError

logger = logging.getLogger(__name__)


def separable_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Depthwise and pointwise weights approximating ``weight`` (N, M, kh, kw) at ``rank``.

    Returns ``(dw, pw, rel_error)`` with dw of shape (M*r, 1, kh, kw) (the r filters of input channel
    m are rows m*r .. m*r+r-1), pw of shape (N, M*r, 1, 1) and the relative Frobenius error of the
    implied kernel. ``rank`` is capped at min(N, kh*kw), where the factorisation is exact.
    """
    n, m, kh, kw = weight.shape
    r = min(rank, n, kh * kw)
    slices = weight.detach().double().permute(1, 0, 2, 3).reshape(m, n, kh * kw)  # (M, N, k*k)
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)  # (M,N,q) (M,q) (M,q,k*k)
    root = s[:, :r].sqrt()
    dw = (root[:, :, None] * vh[:, :r, :]).reshape(m * r, 1, kh, kw)
    pw = (u[:, :, :r] * root[:, None, :]).permute(1, 0, 2).reshape(n, m * r, 1, 1)
    total = float((s**2).sum())
    err = (float((s[:, r:] ** 2).sum()) / total) ** 0.5 if total > 0 else 0.0
    return dw.to(weight.dtype), pw.to(weight.dtype), err


def separable_errors(weight: torch.Tensor) -> list[float]:
    """Relative weight error of the rank-r rewrite for r = 1 .. min(N, kh*kw) (index r-1)."""
    n, m, kh, kw = weight.shape
    s = torch.linalg.svdvals(weight.detach().double().permute(1, 0, 2, 3).reshape(m, n, kh * kw))
    energy = (s**2).sum(0)  # per singular-value index, over channels
    total = float(energy.sum())
    tail = energy.flip(0).cumsum(0).flip(0)  # tail[j] = sum over index >= j
    return [(float(tail[r]) / total) ** 0.5 if total > 0 and r < len(tail) else 0.0
            for r in range(1, len(energy) + 1)]


def make_separable(conv: nn.Conv2d, rank: int) -> tuple[nn.Sequential, float]:
    """A depthwise+pointwise block initialised from ``conv`` at ``rank``, and its relative weight error."""
    dw_w, pw_w, err = separable_factors(conv.weight, rank)
    r = dw_w.shape[0] // conv.in_channels
    depthwise = nn.Conv2d(conv.in_channels, conv.in_channels * r, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation, groups=conv.in_channels, bias=False,
                          padding_mode=conv.padding_mode)
    pointwise = nn.Conv2d(conv.in_channels * r, conv.out_channels, 1, bias=conv.bias is not None)
    with torch.no_grad():
        depthwise.weight.copy_(dw_w)
        pointwise.weight.copy_(pw_w)
        if conv.bias is not None:
            pointwise.bias.copy_(conv.bias)
    block = nn.Sequential(OrderedDict(depthwise=depthwise, pointwise=pointwise))
    return block.to(conv.weight.device), err


def ineligible_reason(conv: nn.Conv2d, min_in_channels: int) -> str:
    """Why ``conv`` is not rewritten ('' when it is eligible)."""
    if conv.groups != 1:
        return f"grouped conv (groups={conv.groups}) is not supported; kept as is"
    if conv.kernel_size[0] * conv.kernel_size[1] == 1:
        return "1x1 conv is already pointwise"
    if conv.in_channels < min_in_channels:
        return f"only {conv.in_channels} input channel(s) (< min_in_channels={min_in_channels})"
    return ""


@dataclass
class _Option:
    rank: int | None  # None: keep the original conv
    macs: int
    error: float


class Separable(Stage):
    """Rewrite standard convolutions into depthwise (multiplier r) + pointwise, SVD-initialised."""

    name = "separable"
    search_rank = 10

    @classmethod
    def search_space(cls) -> list[SearchRecipe]:
        """The planner tries the rewrite with its default settings."""
        return [[(cls.name, {})]]

    class Config(TuneConfig):
        """Settings of the separable rewrite and its fine-tune."""

        rank: int = Field(1, ge=1, description="Depthwise channel multiplier r for every layer when no budget is set.")
        max_error: float | None = Field(None, gt=0, lt=1, description="Per layer: smallest rank with weight error <= this.")
        mac_reduction: float | None = Field(None, gt=1, description="Whole model: reach this factor fewer MACs, least error.")
        max_rank: int = Field(4, ge=1, description="Largest rank the error or MAC budget may choose.")
        layers: list[str] | None = Field(None, description="Conv names (fnmatch patterns) to consider; default all.")
        exclude: list[str] = Field(default_factory=list, description="Conv names (fnmatch patterns) to leave alone.")
        min_in_channels: int = Field(4, ge=1, description="Keep convs with fewer input channels (e.g. the stem).")

        @model_validator(mode="after")
        def _one_budget(self) -> Separable.Config:
            if self.max_error is not None and self.mac_reduction is not None:
                raise ValueError("give max_error or mac_reduction, not both")
            return self

    def apply(self, model: nn.Module, cfg: Config, ctx: BuildContext) -> StageResult:
        """Rewrite the chosen convs, report per layer, then fine-tune (distilling from ctx.teacher)."""
        from edgecomp.model import count_macs

        model = copy.deepcopy(model).eval()  # ctx.teacher may be this very module
        shapes = layer_shapes(model, ctx.spec.input_shape)
        records: list[LayerRecord] = []
        notes: list[str] = []
        cands: dict[str, tuple[nn.Conv2d, list[_Option]]] = {}
        full: dict[str, int] = {}  # full rank min(N, kh*kw) per candidate
        for name, conv in select_layers(model, (nn.Conv2d,), cfg.layers, cfg.exclude):
            if name not in shapes.outputs:
                notes.append(f"{name}: not reached by the forward pass; kept")
                continue
            rec = LayerRecord(name, "conv", list(conv.weight.shape), "skipped", params_before=n_params(conv),
                              macs_before=leaf_macs(conv, shapes.outputs[name]))
            rec.macs_after, rec.params_after = rec.macs_before, rec.params_before
            reason = ineligible_reason(conv, cfg.min_in_channels)
            if reason:
                rec.note = reason
                if conv.groups != 1:
                    notes.append(f"{name}: {reason}")
                records.append(rec)
                continue
            records.append(rec)
            out = shapes.outputs[name]
            spatial = out[0] * out[2] * out[3]
            kk = conv.kernel_size[0] * conv.kernel_size[1]
            errors = separable_errors(conv.weight)
            if cfg.rank > len(errors) and cfg.max_error is None and cfg.mac_reduction is None:
                rec.note = f"rank {cfg.rank} capped at the full rank {len(errors)}"
            options = [_Option(None, rec.macs_before, 0.0)]
            for r in range(1, len(errors) + 1):
                macs = conv.in_channels * r * (kk + conv.out_channels) * spatial
                if macs < rec.macs_before:
                    options.append(_Option(r, macs, errors[r - 1]))
            cands[name] = (conv, sorted(options, key=lambda o: o.macs))
            full[name] = len(errors)
        if cfg.mac_reduction is not None:
            total = count_macs(model, ctx.spec.input_shape)
            chosen = _choose_for_macs(cands, total, total / cfg.mac_reduction, cfg.max_rank)
            mode = f"mac_reduction={cfg.mac_reduction}"
        else:
            chosen = {n: _choose_fixed(opts, cfg, full[n]) for n, (_, opts) in cands.items()}
            mode = f"max_error={cfg.max_error}" if cfg.max_error is not None else f"rank={cfg.rank}"
        by_name = {r.name: r for r in records}
        for name, (conv, _) in cands.items():
            rec, rank = by_name[name], chosen[name]
            if rank is None:
                why = ("no rank within the budget saves MACs" if cfg.max_error is not None or cfg.mac_reduction
                       else f"rank {min(cfg.rank, full[name])} would cost more MACs than the original")
                rec.status, rec.note = "kept", f"{rec.note}; {why}" if rec.note else why
                continue
            block, err = make_separable(conv, rank)
            set_module(model, name, block)
            rec.status, rec.rank, rec.rel_error = "rewritten", rank, err
            rec.params_after = n_params(block)
            rec.macs_after = conv.in_channels * rank * (conv.kernel_size[0] * conv.kernel_size[1]
                                                       + conv.out_channels) * _spatial(shapes.outputs[name])
        if not any(r.status == "rewritten" for r in records):
            notes.append("no convolution was rewritten")
        log_table("separable", records)
        metrics = {"mode": mode, **summarize(records), "layers": [r.as_dict() for r in records]}
        if ctx.data is not None:
            from edgecomp.metrics import evaluate

            metrics["test_accuracy_rewritten"] = evaluate(model, ctx.data, "test")
        metrics["finetune"] = tune(model, cfg, ctx, notes)
        s = summarize(records)
        if s["rewritten"]:
            notes.append(f"rewrote {s['rewritten']} conv(s) ({mode}): their MACs {s['macs_before']} -> "
                         f"{s['macs_after']}, params {s['params_before']} -> {s['params_after']}")
        return StageResult(model.eval(), metrics, notes)


def _spatial(out_shape: list[int]) -> int:
    return out_shape[0] * out_shape[2] * out_shape[3]


def _choose_fixed(options: list[_Option], cfg: Separable.Config, full_rank: int) -> int | None:
    ranked = sorted((o for o in options if o.rank is not None), key=lambda o: o.rank)
    if cfg.max_error is None:  # exactly the asked rank (capped at full rank), if it saves MACs at all
        fits = [o for o in ranked if o.rank == min(cfg.rank, full_rank)]
        return fits[0].rank if fits else None
    for o in ranked:
        if o.rank <= cfg.max_rank and o.error <= cfg.max_error:
            return o.rank
    return None


def _choose_for_macs(cands: dict[str, tuple[nn.Conv2d, list[_Option]]], total: int, budget: float,
                     max_rank: int) -> dict[str, int | None]:
    """Greedy: start every layer at its cheapest option, then buy the most error reduction per MAC."""
    opts = {n: [o for o in options if o.rank is None or o.rank <= max_rank] for n, (_, options) in cands.items()}
    state = {n: 0 for n in opts}
    fixed = total - sum(next(o.macs for o in options if o.rank is None) for options in opts.values())
    cur = fixed + sum(opts[n][0].macs for n in opts)
    if cur > budget:
        raise InfeasibleBudgetError(
            f"separable cannot reach {total / budget:.2f}x fewer MACs: the best reachable is "
            f"{total / cur:.2f}x ({cur} of {total} MACs) with every eligible conv at rank 1",
            "lower mac_reduction, or combine with pruning",
        )
    while True:
        best, best_score = None, 0.0
        for n, options in opts.items():
            now = options[state[n]]
            for j in range(state[n] + 1, len(options)):
                dm, de = options[j].macs - now.macs, now.error - options[j].error
                if dm > 0 and de > 0 and cur + dm <= budget and de / dm > best_score:
                    best, best_score = (n, j, dm), de / dm
        if best is None:
            break
        n, j, dm = best
        state[n], cur = j, cur + dm
    return {n: opts[n][state[n]].rank for n in opts}

