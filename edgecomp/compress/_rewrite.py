"""Helpers shared by the layer-rewriting stages (``separable``, ``lowrank``) and ``distill``.

Finding layers by name pattern, swapping a submodule, measuring each layer's input/output sizes with
one forward pass (for exact per-layer MACs), the per-layer record every rewrite reports, and the
fine-tune settings (with optional distillation from ``ctx.teacher``) that every rewrite runs after.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from pydantic import Field
from torch import nn

from edgecomp.compress.base import BuildContext, StageConfig
from edgecomp.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)


class TuneConfig(StageConfig):
    """Fine-tune settings shared by the rewriting stages (``epochs=0`` skips fine-tuning)."""

    epochs: int = Field(20, ge=0, description="Most fine-tuning epochs after the rewrite (0: none).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate for fine-tuning.")
    distill: bool = Field(True, description="Distil from the source model (ctx.teacher) while fine-tuning.")
    temperature: float = Field(4.0, gt=0, description="Distillation temperature T.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the KL-to-teacher term (1-alpha: labels).")
    patience: int = Field(6, ge=1, description="Epochs without validation gain before stopping early.")
    time_budget_s: float | None = Field(None, gt=0, description="Stop fine-tuning after this many seconds.")
    recalibrate_bn: bool = Field(True, description="Re-estimate BatchNorm statistics on training data first.")


@dataclass
class LayerRecord:
    """What a rewrite did to one layer: shape, decision, rank(s), error, MACs and params before/after."""

    name: str
    kind: str
    shape: list[int]
    status: str  # rewritten | kept | skipped
    rank: Any = None
    rel_error: float | None = None
    macs_before: int = 0
    macs_after: int = 0
    params_before: int = 0
    params_after: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form for ``StageResult.metrics``."""
        return asdict(self)


@dataclass
class LayerShapes:
    """Input and output shapes (batch included) of each leaf layer, seen in one forward pass."""

    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)


def layer_shapes(model: nn.Module, input_shape: list[int]) -> LayerShapes:
    """Record the input/output shapes of every Conv2d and Linear in one forward pass on zeros."""
    shapes = LayerShapes()
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            def hook(m: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
                shapes.inputs[name] = list(args[0].shape)
                shapes.outputs[name] = list(out.shape)
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return shapes


def leaf_macs(mod: nn.Module, out_shape: list[int]) -> int:
    """MACs of one Conv2d or Linear whose output has ``out_shape`` (per forward, batch included)."""
    numel = 1
    for d in out_shape:
        numel *= d
    if isinstance(mod, nn.Conv2d):
        kh, kw = mod.kernel_size
        return numel * (mod.in_channels // mod.groups) * kh * kw
    if isinstance(mod, nn.Linear):
        return numel * mod.in_features
    return 0


def block_macs(block: nn.Module, input_shape: list[int]) -> int:
    """MACs of every Conv2d/Linear inside ``block`` for one input of ``input_shape``."""
    shapes = layer_shapes(block, input_shape)
    mods = dict(block.named_modules())
    return sum(leaf_macs(mods[n], s) for n, s in shapes.outputs.items())


def n_params(mod: nn.Module) -> int:
    """Number of parameter elements of a module."""
    return sum(p.numel() for p in mod.parameters())


def select_layers(model: nn.Module, kinds: tuple[type, ...], include: list[str] | None,
                  exclude: list[str]) -> list[tuple[str, nn.Module]]:
    """Modules of the given types whose names match ``include`` (fnmatch; None: all) and not ``exclude``.

    A pattern that matches no module of the given kinds is a ConfigError (a typo would otherwise be silent).
    """
    found = [(n, m) for n, m in model.named_modules() if type(m) in kinds]
    names = [n for n, _ in found]
    for pattern in list(include or []) + list(exclude):
        if not fnmatch.filter(names, pattern):
            raise ConfigError(
                f"layer pattern '{pattern}' matches no layer." + did_you_mean(pattern, names),
                f"layers of this model: {', '.join(names) or 'none'}",
            )
    chosen = []
    for name, mod in found:
        if include is not None and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        chosen.append((name, mod))
    return chosen


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` with ``new``."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm's running mean/variance on ``x`` (no gradients); return how many.

    A rewritten layer's outputs no longer have the statistics its following BatchNorm was fitted to
    (a rank-1 approximation keeps only part of the kernel's energy), so normalising with the old
    statistics shrinks activations layer after layer. Only the BatchNorms run in training mode here.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    model.eval()
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
        bn.train()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size])
    finally:
        for bn, mom in zip(bns, saved, strict=True):
            bn.momentum = mom
        model.eval()
    return len(bns)


def tune(model: nn.Module, cfg: TuneConfig, ctx: BuildContext, notes: list[str],
         records: list[LayerRecord]) -> dict[str, Any]:
    """Recalibrate BatchNorm and fine-tune ``model`` in place per ``cfg`` (distilling from ``ctx.teacher``).

    When no layer in ``records`` was rewritten there is nothing to recover: the model is left exactly as it
    came, so a rewrite that finds nothing to do on a model never passes off a plain fine-tune as its own.
    """
    from edgecomp.finetune import FinetuneConfig, finetune
    from edgecomp.metrics import evaluate

    if not any(r.status == "rewritten" for r in records):
        notes.append("nothing was rewritten, so nothing to recover: the model is unchanged (not fine-tuned)")
        return {"epochs": 0, "skipped": "nothing rewritten"}
    if ctx.data is None:
        if cfg.epochs or cfg.recalibrate_bn:
            notes.append("no data: the rewritten model was not recalibrated or fine-tuned (pass --data)")
            logger.warning("no data to fine-tune on; the rewrite stays un-tuned")
        return {"epochs": 0, "skipped": "no data"}
    record: dict[str, Any] = {}
    if cfg.recalibrate_bn:
        x = torch.as_tensor(ctx.data.calibration(min(ctx.data.size("train"), 2048), ctx.seed))
        record["bn_recalibrated"] = recalibrate_batchnorm(model, x)
        record["val_accuracy_recalibrated"] = evaluate(model, ctx.data, "val")
    if cfg.epochs == 0:
        return {**record, "epochs": 0}
    teacher = ctx.teacher if cfg.distill else None
    if cfg.distill and teacher is None:
        notes.append("no teacher in the build context: fine-tuned on labels only")
    before = evaluate(model, ctx.data, "val")
    ft = FinetuneConfig(epochs=cfg.epochs, lr=cfg.lr, temperature=cfg.temperature, alpha=cfg.alpha,
                        patience=cfg.patience, time_budget_s=cfg.time_budget_s, seed=ctx.seed, ties_by_loss=True)
    result = finetune(model, ctx.data, ft, teacher=teacher, policy=ctx.finetune_policy)
    return {**record, "epochs": result.epochs, "stopped": result.stopped, "distilled": teacher is not None,
            "val_accuracy_before": before, "val_accuracy_after": result.best_val_accuracy}


def summarize(records: list[LayerRecord]) -> dict[str, Any]:
    """Totals over the rewritten layers: MACs and params before/after and how many were rewritten."""
    done = [r for r in records if r.status == "rewritten"]
    return {
        "rewritten": len(done),
        "kept": sum(r.status == "kept" for r in records),
        "skipped": sum(r.status == "skipped" for r in records),
        "macs_before": sum(r.macs_before for r in done),
        "macs_after": sum(r.macs_after for r in done),
        "params_before": sum(r.params_before for r in done),
        "params_after": sum(r.params_after for r in done),
    }


def log_table(stage: str, records: list[LayerRecord]) -> None:
    """Log the per-layer report at INFO level."""
    for r in records:
        logger.info("  %s %-22s %-9s rank=%-8s err=%-6s MACs %d -> %d  params %d -> %d %s", stage, r.name,
                    r.status, r.rank, "-" if r.rel_error is None else f"{r.rel_error:.3f}", r.macs_before,
                    r.macs_after, r.params_before, r.params_after, r.note)
