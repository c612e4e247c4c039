"""Stage ``cluster``: k-means weight sharing with centroid fine-tuning (Deep Compression, Han et al. 2016).

Every conv/linear weight tensor gets its own codebook of at most 2**bits centroids, initialised
linearly between the tensor's min and max (the initialisation Deep Compression found best) and
refined by 1-D k-means. Weights that are exactly zero (pruned, e.g. by ``prune.magnitude``) stay
zero and are not clustered: their positions are coded separately. The network is then fine-tuned
with the weights tied to their centroids: each centroid receives the sum of the gradients of the
weights that share it (an index gather's backward is a scatter-add), with distillation from the
source model. The result holds each weight as its centroid value in ordinary float tensors, so the
fp32 exporters work unchanged; the bundle's compressed form (``model.ecz``, see ``ecz``) stores the
codebooks and the Huffman-coded indices and sparse positions, and CoreML gets a palettized (LUT)
model (``export.coreml_palettize``).

This module also registers the ``deep-compression`` preset: magnitude pruning, then clustering.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from edgecomp.compress._layers import fold_batchnorm, remove_prune_reparam, weight_layers
from edgecomp.compress.base import BuildContext, SearchRecipe, Stage, StageConfig, StageResult
from edgecomp.compress.recipe import PRESETS

logger = logging.getLogger(__name__)

PRESETS["deep-compression"] = (
    "prune.magnitude(sparsity=0.9, steps=2, finetune_epochs=30, finetune_lr=0.002) -> cluster(bits=4)"
)


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means with linear initialisation; returns (codebook of <= k used centroids, index per value).

    Centroids start evenly spaced over [min, max]; Lloyd iterations run until assignments stop
    changing. Centroids that end up with no value are dropped, so every codebook entry is used.
    """
    x = values.detach().flatten().double()
    if x.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    lo, hi = float(x.min()), float(x.max())
    k = max(1, min(k, x.numel()))
    cent = torch.linspace(lo, hi, k, dtype=torch.float64)
    idx = torch.zeros_like(x, dtype=torch.long)
    for _ in range(iters):
        order = torch.argsort(cent)
        cent = cent[order]
        new = torch.bucketize(x, (cent[1:] + cent[:-1]) / 2)
        counts = torch.bincount(new, minlength=k).double()
        sums = torch.bincount(new, weights=x, minlength=k)
        cent = torch.where(counts > 0, sums / counts.clamp(min=1), cent)
        if torch.equal(new, idx):
            break
        idx = new
    used = torch.unique(idx)
    remap = torch.full((k,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return cent[used].float(), remap[idx]


class SharedWeights(nn.Module):
    """Parametrization ``weight = codebook[index]`` (zero where pruned); the trainable tensor is the codebook."""

    def __init__(self, codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index)
        self.register_buffer("mask", mask)
        self._init = codebook

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        """The full weight tensor from the codebook."""
        return torch.where(self.mask, codebook[self.index], torch.zeros((), dtype=codebook.dtype))

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """The codebook this parametrization was built with (the trainable original)."""
        return self._init.to(weight.dtype)


class Cluster(Stage):
    """Per-layer k-means weight sharing (2**bits centroids) with centroid fine-tuning."""

    name = "cluster"
    structural = False
    search_rank = 20

    @classmethod
    def search_space(cls) -> list[SearchRecipe]:
        """Clustering alone, and after magnitude pruning (zeros cluster for free)."""
        return [[(cls.name, {})], [("prune.magnitude", {}), (cls.name, {})]]

    @classmethod
    def bytes_per_param(cls, cfg: StageConfig, fmt: str) -> float | None:
        """Palettized CoreML stores ``bits``-bit indices; other formats store the shared values densely."""
        bits = getattr(cfg, "bits", None)
        return bits / 8.0 if fmt == "coreml" and bits else None

    class Config(StageConfig):
        """Settings of ``cluster``."""

        bits: int = Field(4, ge=1, le=8, description="Bits per index: each layer gets at most 2**bits centroids.")
        fold_bn: bool = Field(True, description="Fold BatchNorm into the preceding conv/linear before clustering.")
        epochs: int = Field(20, ge=0, description="Epochs of centroid fine-tuning (0: k-means only).")
        lr: float = Field(5e-4, gt=0, description="Learning rate of the centroid fine-tuning.")
        kmeans_iters: int = Field(100, ge=1, description="Most Lloyd iterations of the per-layer k-means.")
        min_weights: int = Field(0, ge=0, description="Leave layers with fewer weights than this unclustered.")
        fp16_rest: bool = Field(
            True, description="Round codebooks and unclustered tensors (biases, norms) to float16: 2 bytes each in model.ecz."
        )
        compressed_form: bool = Field(True, description="Write the Huffman-coded model.ecz into the bundle.")

    def apply(self, model: nn.Module, cfg: Config, ctx: BuildContext) -> StageResult:
        """Cluster every conv/linear weight, fine-tune the centroids, and bake the shared values in."""
        from edgecomp.compress.ecz import encode_state_dict
        from edgecomp.finetune import FinetuneConfig, finetune
        from edgecomp.metrics import evaluate

        model = copy.deepcopy(model).eval()
        notes: list[str] = []
        if remove_prune_reparam(model):
            notes.append("made torch.nn.utils.prune masks permanent before clustering")
        folded = fold_batchnorm(model) if cfg.fold_bn else []
        k = 2**cfg.bits
        layers = []
        for name, m in weight_layers(model):
            w = m.weight.detach()
            if w.numel() < cfg.min_weights:
                continue
            mask = w != 0
            # in a pruned layer zero is one of the 2**bits palette entries, so k-1 values are shared
            codebook, idx = kmeans_1d(w[mask], k if bool(mask.all()) else k - 1, cfg.kmeans_iters)
            index = torch.zeros(w.shape, dtype=torch.long)
            index[mask] = idx
            parametrize.register_parametrization(m, "weight", SharedWeights(codebook, index, mask))
            layers.append({"layer": name, "weights": w.numel(), "nonzero": int(mask.sum()),
                           "centroids": len(codebook)})
        metrics: dict = {"bits": cfg.bits, "folded_bn": len(folded)}
        if ctx.data is not None:
            metrics["val_accuracy_after_kmeans"] = evaluate(model, ctx.data, "val")
            if cfg.epochs:
                ft = finetune(model, ctx.data, FinetuneConfig(epochs=cfg.epochs, lr=cfg.lr, patience=5, seed=ctx.seed),
                              teacher=ctx.teacher, policy=ctx.finetune_policy)
                if ft.stopped != "skipped":  # the planner's structure-only pass skips fine-tuning
                    metrics["val_accuracy_after_finetune"] = ft.best_val_accuracy
                    metrics["finetune_epochs"] = ft.epochs
        elif cfg.epochs:
            notes.append("no training data: centroids were not fine-tuned (k-means only)")
        with torch.no_grad():
            for _, m in weight_layers(model):
                if parametrize.is_parametrized(m, "weight"):
                    if cfg.fp16_rest:
                        orig = m.parametrizations.weight.original
                        orig.copy_(orig.half().float())
                    parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            for p in model.parameters():
                p.grad = None  # the codebook's gradient would otherwise stay attached to the full weight
            if cfg.fp16_rest:
                clustered = {f"{layer['layer']}.weight" for layer in layers}
                for pname, t in list(model.state_dict().items()):
                    if t.dtype == torch.float32 and pname not in clustered:
                        t.copy_(t.half().float())
        modules = dict(model.named_modules())
        for layer in layers:
            layer["codebook"] = int(torch.unique(modules[layer["layer"]].weight).numel())
        metrics["layers"] = layers
        metrics.update(_sizes(model, layers, cfg.bits))
        data, summary = encode_state_dict(model.state_dict())
        metrics["huffman_bytes"] = len(data)
        metrics["huffman_breakdown"] = summary.by_kind()
        metrics["ratio_dense_to_huffman"] = metrics["dense_fp32_bytes"] / len(data)
        notes.append(
            f"weights share per-layer codebooks of <= {k} values; model.tflite/model.onnx store them dense as "
            "float32 (one codebook value per weight); model.ecz (the bundle's compressed form) stores codebooks "
            "+ Huffman-coded indices (+ Huffman-coded run lengths of the non-zero positions); a CoreML "
            "model.mlpackage is palettized (LUT)"
        )
        if folded:
            notes.append(f"folded {len(folded)} BatchNorm layers into their conv/linear before clustering")
        if cfg.fp16_rest:
            notes.append("codebooks and unclustered tensors (biases, norms) were rounded to float16 (the model holds the rounded "
                         "values, so every artifact and model.ecz agree exactly)")
        update = {"palettize_bits": cfg.bits, "compressed_form": ctx.export.compressed_form or cfg.compressed_form}
        return StageResult(model, metrics, notes, ctx.export.model_copy(update=update))


def _sizes(model: nn.Module, layers: list[dict], bits: int) -> dict:
    """Dense fp32 bytes of the state_dict, and the palettized size (n-bit index per weight + codebook)."""
    clustered = {f"{layer['layer']}.weight": layer for layer in layers}
    dense = palettized = 0
    for pname, t in model.state_dict().items():
        width = t.element_size()
        dense += t.numel() * 4 if t.is_floating_point() else t.numel() * width
        if pname in clustered:
            entries = clustered[pname]["codebook"]  # zero included when the layer is pruned
            palettized += math.ceil(t.numel() * bits / 8) + entries * 4
        else:
            palettized += t.numel() * width
    return {"dense_fp32_bytes": dense, "palettized_bytes": palettized,
            "ratio_dense_to_palettized": dense / max(palettized, 1)}
