"""Stage ``separable``: standard k x k convolutions -> depthwise k x k (multiplier r) + pointwise 1 x 1.

For a Conv2d with weight W (N out, M in, kh, kw), each input channel's slice ``W[:, m]`` is an
N x (kh*kw) matrix. Its best rank-r factorisation (truncated SVD, ``U S V^T``) gives r depthwise
filters ``sqrt(s_j) v_j`` for channel m and the pointwise weights ``sqrt(s_j) u_j``; the pair computes
exactly ``sum_m sum_j u_j s_j v_j^T``, the rank-r approximation of every slice (Eckart-Young: the best
one in Frobenius norm). Rank 1 is the MobileNet form; a rank of min(N, kh*kw) is exact.

Each layer's rank comes from a budget, by default a per-layer error budget: the smallest rank whose
relative weight error is at most ``max_error`` (0.5). Alternatives: a model MAC budget
(``mac_reduction``, greedy on error saved per MAC spent) or a fixed ``rank`` for every layer. A layer
whose chosen rank saves less than ``min_saving`` of its MACs (or none within the budget saves any) is
left alone, with a note saying why. On the default model (digits_cnn) a fixed rank 1 costs 1.39 points
(features.3 at error 0.87); the error budget keeps the drop within 1 point (benchmarks/lossy_defaults.py).
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

        rank: int | None = Field(None, ge=1, description="Fixed depthwise multiplier r for every layer, instead of a budget.")
        max_error: float = Field(0.5, gt=0, lt=1, description="Per layer: the smallest rank with relative weight error <= this.")
        mac_reduction: float | None = Field(None, gt=1, description="Whole model: reach this factor fewer MACs, least error.")
        max_rank: int | None = Field(None, ge=1, description="Largest rank a budget may choose (None: any that saves MACs).")
        min_saving: float = Field(0.2, ge=0, lt=1, description="Keep a layer whose rewrite saves less than this share of its MACs.")
        layers: list[str] | None = Field(None, description="Conv names (fnmatch patterns) to consider; default all.")
        exclude: list[str] = Field(default_factory=list, description="Conv names (fnmatch patterns) to leave alone.")
        min_in_channels: int = Field(4, ge=1, description="Keep convs with fewer input channels (e.g. the stem).")

        @model_validator(mode="after")
        def _one_budget(self) -> Separable.Config:
            given = [k for k in ("rank", "max_error", "mac_reduction") if k in self.model_fields_set
                     and getattr(self, k) is not None]
            if len(given) > 1:
                raise ValueError(f"give one of rank, max_error or mac_reduction, not both {' and '.join(given)}")
            return self

        @property
        def mode(self) -> str:
            """Which choice of rank applies: 'rank', 'mac_reduction' or 'max_error' (the default)."""
            if self.rank is not None:
                return "rank"
            return "mac_reduction" if self.mac_reduction is not None else "max_error"

    def apply(self, model: nn.Module, cfg: Config, ctx: BuildContext) -> StageResult:
        """Rewrite the chosen convs, report per layer, then fine-tune (distilling from ctx.teacher)."""
        from edgecomp.model import count_macs

        model = copy.deepcopy(model).eval()  # ctx.teacher may be this very module
        shapes = layer_shapes(model, ctx.spec.input_shape)
        records: list[LayerRecord] = []
        notes: list[str] = []
        cands: dict[str, tuple[nn.Conv2d, list[_Option]]] = {}
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
            macs = [conv.in_channels * r * (kk + conv.out_channels) * spatial for r in range(1, len(errors) + 1)]
            cands[name] = (conv, [_Option(r, m, e) for r, (m, e) in enumerate(zip(macs, errors, strict=True), 1)])
        by_name = {r.name: r for r in records}
        if cfg.mode == "mac_reduction":
            total = count_macs(model, ctx.spec.input_shape)
            chosen = _choose_for_macs(cands, total, total / cfg.mac_reduction, cfg, by_name)
            mode = f"mac_reduction={cfg.mac_reduction}"
        else:
            chosen = {n: _choose_per_layer(opts, by_name[n], cfg) for n, (_, opts) in cands.items()}
            mode = f"rank={cfg.rank}" if cfg.mode == "rank" else f"max_error={cfg.max_error}"
        for name, (conv, _) in cands.items():
            rec, rank = by_name[name], chosen[name]
            if rank is None:
                rec.status = "kept"
                notes.append(f"{name}: kept ({rec.note})")
                continue
            block, err = make_separable(conv, rank)
            set_module(model, name, block)
            rec.status, rec.rank, rec.rel_error = "rewritten", rank, err
            rec.params_after = n_params(block)
            rec.macs_after = next(o.macs for o in cands[name][1] if o.rank == rank)
        log_table("separable", records)
        metrics = {"mode": mode, **summarize(records), "layers": [r.as_dict() for r in records]}
        if ctx.data is not None and metrics["rewritten"]:  # nothing rewritten: the model is the input, unchanged
            from edgecomp.metrics import evaluate

            metrics["test_accuracy_rewritten"] = evaluate(model, ctx.data, "test")
        metrics["finetune"] = tune(model, cfg, ctx, notes, records)
        s = summarize(records)
        if s["rewritten"]:
            notes.append(f"rewrote {s['rewritten']} conv(s) ({mode}): their MACs {s['macs_before']} -> "
                         f"{s['macs_after']}, params {s['params_before']} -> {s['params_after']}")
        return StageResult(model.eval(), metrics, notes)


def _spatial(out_shape: list[int]) -> int:
    return out_shape[0] * out_shape[2] * out_shape[3]


def _saves_enough(option: _Option, before: int, min_saving: float) -> bool:
    return option.macs <= (1 - min_saving) * before and option.macs < before


def _choose_per_layer(options: list[_Option], rec: LayerRecord, cfg: Separable.Config) -> int | None:
    """The fixed rank or the smallest rank within ``max_error``; None (and ``rec.note`` says why) to keep."""
    share = f"its MACs (min_saving={cfg.min_saving})"
    if cfg.mode == "rank":
        o = options[min(cfg.rank, len(options)) - 1]
        capped = f"rank {cfg.rank} capped at the full rank {len(options)}" if cfg.rank > len(options) else ""
        why = ""
        if o.macs >= rec.macs_before:
            why = f"rank {o.rank} would cost more MACs than the original"
        elif not _saves_enough(o, rec.macs_before, cfg.min_saving):
            why = f"rank {o.rank} saves only {1 - o.macs / rec.macs_before:.0%} of {share}"
        rec.note = "; ".join(t for t in (capped, why) if t)
        return None if why else o.rank
    allowed = [o for o in options if cfg.max_rank is None or o.rank <= cfg.max_rank]
    fits = [o for o in allowed if o.error <= cfg.max_error]
    if not fits:
        rec.note = (f"no rank <= max_rank={cfg.max_rank} meets max_error={cfg.max_error} "
                    f"(rank {allowed[-1].rank}: error {allowed[-1].error:.2f})")
        return None
    o = fits[0]
    if not _saves_enough(o, rec.macs_before, cfg.min_saving):
        saved = 1 - o.macs / rec.macs_before
        rec.note = (f"rank {o.rank} meets max_error={cfg.max_error} (error {o.error:.2f}) but "
                    + ("would cost more MACs than the original" if saved <= 0 else f"saves only {saved:.0%} of {share}")
                    + f"; rank 1 would have error {options[0].error:.2f}")
        return None
    return o.rank


def _choose_for_macs(cands: dict[str, tuple[nn.Conv2d, list[_Option]]], total: int, budget: float,
                     cfg: Separable.Config, by_name: dict[str, LayerRecord]) -> dict[str, int | None]:
    """Greedy: start every layer at its cheapest option, then buy the most error reduction per MAC.

    A layer's options are keeping it and each rank (up to ``max_rank``) that saves ``min_saving`` of its MACs.
    """
    opts = {}
    for n, (_, options) in cands.items():
        before = by_name[n].macs_before
        ranks = [o for o in options if (cfg.max_rank is None or o.rank <= cfg.max_rank)
                 and _saves_enough(o, before, cfg.min_saving)]
        opts[n] = sorted([*ranks, _Option(None, before, 0.0)], key=lambda o: o.macs)
    state = {n: 0 for n in opts}
    fixed = total - sum(next(o.macs for o in options if o.rank is None) for options in opts.values())
    cur = fixed + sum(opts[n][0].macs for n in opts)
    if cur > budget:
        raise InfeasibleBudgetError(
            f"separable cannot reach {total / budget:.2f}x fewer MACs: the best reachable is "
            f"{total / cur:.2f}x ({cur} of {total} MACs) with every eligible conv at its cheapest rank",
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
    for n in opts:
        if opts[n][state[n]].rank is None:
            by_name[n].note = f"keeping it fits mac_reduction={cfg.mac_reduction} with less error than any rank"
    return {n: opts[n][state[n]].rank for n in opts}

