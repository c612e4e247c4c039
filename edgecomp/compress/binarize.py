"""Stage ``binarize``: binary weights with a per-channel scale (BinaryConnect / XNOR-Net).

Each binarized conv/linear weight becomes ``sign(W) * alpha`` with ``alpha = mean|W|`` per output
channel (XNOR-Net's optimal scale, Rastegari et al. 2016). Training starts from the float model and
keeps latent float weights: the forward pass uses the binarized weights, the backward pass uses the
straight-through estimator (the gradient of sign is passed through where |W| <= 1, BinaryConnect,
Courbariaux et al. 2015), with distillation from the source model. The first and last weight layers
stay in float by default (they are small and the most sensitive).

Representation, honestly: after training the model holds the binarized weights as ordinary float
tensors (exactly two values, +alpha and -alpha, per output channel). The fp32 exporters therefore
write them as float32 (no runtime here has binary kernels); an int8 export represents them exactly
with two levels (+-127 at scale alpha/127 per channel); the bundle's compressed form ``model.ecz``
stores them packed, 1 bit per weight plus alpha per channel. The stage reports that packed size.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
import math

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from edgecomp.compress._layers import remove_prune_reparam, weight_layers
from edgecomp.compress.base import BuildContext, Stage, StageConfig, StageResult

logger = logging.getLogger(__name__)


class BinarizeSTE(nn.Module):
    """Parametrization: ``sign(W) * mean|W|`` per output channel, straight-through gradient to ``W``."""

    def __init__(self, clip: float = 1.0) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Binarized weight; the sign's gradient is the identity where |w| <= clip (zero elsewhere)."""
        alpha = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
        sign = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        passthrough = (w - w.detach()) * (w.abs() <= self.clip)  # zero in value, identity in gradient
        return alpha * (sign + passthrough)


def binarize_tensor(w: torch.Tensor) -> torch.Tensor:
    """``sign(w) * alpha`` with ``alpha = mean|w|`` per output channel (sign(0) = +1)."""
    with torch.no_grad():
        return BinarizeSTE()(w)


class Binarize(Stage):
    """Binary weights (±alpha per output channel), trained with the straight-through estimator."""

    name = "binarize"
    structural = False

    class Config(StageConfig):
        """Settings of ``binarize``."""

        keep_first: bool = Field(True, description="Leave the first conv/linear layer in float.")
        keep_last: bool = Field(True, description="Leave the last conv/linear layer in float.")
        keep: list[str] = Field(default_factory=list, description="More layer names (fnmatch patterns) left in float.")
        epochs: int = Field(60, ge=0, description="Most epochs of straight-through training (0: binarize only).")
        lr: float = Field(3e-3, gt=0, description="Adam learning rate of the latent float weights.")
        patience: int = Field(15, ge=1, description="Epochs without validation gain before stopping.")
        clip: float = Field(1.0, gt=0, description="Straight-through gradient is cut where |W| exceeds this.")
        compressed_form: bool = Field(True, description="Write model.ecz (packed 1-bit weights + alpha) into the bundle.")

    def apply(self, model: nn.Module, cfg: Config, ctx: BuildContext) -> StageResult:
        """Binarize the chosen layers, train through the sign, and bake ±alpha into the weights."""
        from edgecomp.compress.ecz import encode_state_dict
        from edgecomp.errors import ConfigError
        from edgecomp.finetune import FinetuneConfig, finetune
        from edgecomp.metrics import evaluate

        model = copy.deepcopy(model).eval()
        notes: list[str] = []
        remove_prune_reparam(model)
        layers = weight_layers(model)
        keep = set()
        if layers and cfg.keep_first:
            keep.add(layers[0][0])
        if layers and cfg.keep_last:
            keep.add(layers[-1][0])
        keep |= {n for n, _ in layers for pat in cfg.keep if fnmatch.fnmatch(n, pat)}
        chosen = [(n, m) for n, m in layers if n not in keep]
        if not chosen:
            raise ConfigError("binarize found no layer to binarize",
                              "the model needs conv/linear layers besides those kept in float "
                              "(keep_first/keep_last/keep)")
        for _, m in chosen:
            parametrize.register_parametrization(m, "weight", BinarizeSTE(cfg.clip))
        metrics: dict = {"binarized_layers": [n for n, _ in chosen], "float_layers": sorted(keep)}
        if ctx.data is not None:
            metrics["val_accuracy_binarized_untrained"] = evaluate(model, ctx.data, "val")
            if cfg.epochs:
                ft = finetune(model, ctx.data, FinetuneConfig(epochs=cfg.epochs, lr=cfg.lr, patience=cfg.patience,
                                                              seed=ctx.seed), teacher=ctx.teacher,
                              policy=ctx.finetune_policy)
                if ft.stopped != "skipped":  # the planner's structure-only pass skips training
                    metrics["val_accuracy_after_training"] = ft.best_val_accuracy
                    metrics["training_epochs"] = ft.epochs
        elif cfg.epochs:
            notes.append("no training data: weights were binarized without straight-through training")
        with torch.no_grad():
            for _, m in chosen:
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            for p in model.parameters():
                p.grad = None
        metrics.update(_sizes(model, [n for n, _ in chosen]))
        data, summary = encode_state_dict(model.state_dict())
        metrics["ecz_bytes"] = len(data)
        metrics["ecz_breakdown"] = summary.by_kind()
        notes.append(
            f"{len(chosen)} layers hold binary weights (+alpha/-alpha per output channel): model.tflite/model.onnx "
            "store them as float32 (32 bits per weight; no binary kernels in LiteRT or ONNX Runtime), an int8 export "
            "represents them exactly with two levels per channel, and model.ecz (the bundle's compressed form) "
            f"stores them packed, 1 bit per weight + alpha per channel: {metrics['packed_bytes']} bytes for the "
            f"whole model vs {metrics['dense_fp32_bytes']} dense fp32"
        )
        if keep:
            notes.append(f"kept in float: {', '.join(sorted(keep))}")
        update = {"compressed_form": ctx.export.compressed_form or cfg.compressed_form}
        return StageResult(model, metrics, notes, ctx.export.model_copy(update=update))


def _sizes(model: nn.Module, binarized: list[str]) -> dict:
    """Dense fp32 bytes vs packed bytes (1 bit per binary weight + fp32 alpha per channel, the rest fp32)."""
    names = {f"{n}.weight" for n in binarized}
    dense = packed = binary_dense = binary_packed = 0
    for pname, t in model.state_dict().items():
        size = t.numel() * (4 if t.is_floating_point() else t.element_size())
        dense += size
        if pname in names:
            bits = math.ceil(t.numel() / 8) + t.shape[0] * 4
            packed += bits
            binary_dense += size
            binary_packed += bits
        else:
            packed += size
    return {"dense_fp32_bytes": dense, "packed_bytes": packed, "ratio_dense_to_packed": dense / max(packed, 1),
            "binarized_fp32_bytes": binary_dense, "binarized_packed_bytes": binary_packed}
