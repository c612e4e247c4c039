"""Reduced-precision stages: ``quantize.int8`` (static, calibrated), ``quantize.dynamic``, ``quantize.fp16``.

``quantize.int8`` is post-training static quantization through PT2E: per-channel (or per-tensor)
symmetric int8 weights, per-tensor affine int8 activations calibrated by min/max, percentile, MSE or
entropy on representative inputs. It returns the fake-quant reference (``QuantizedModel``), which
the TFLite (full-integer) and ONNX (QDQ) exporters turn into integer models with the same scales and
int8 weights, and sets ``ExportOptions(dtype='int8', int8=Int8Export(...))``. When the quantized model loses
more than the allowed accuracy on the validation split, a short quantization-aware fine-tune with
distillation from the float model recovers it (``qat='auto'``).

Options for studies: stochastic rounding of weights, and fixed-point simulation (every scale a
power of two, zero points 0: ``fixed_point='dynamic'`` picks Qm.n per tensor, ``'Q3.4'`` forces
one format on every activation). Both stay exportable: they only change which int8 values and
scales the model uses.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from edgecomp.compress import _int8_select as sel
from edgecomp.compress._calibration import load_calibration
from edgecomp.compress.base import BuildContext, Int8Export, SearchRecipe, Stage, StageConfig, StageResult
from edgecomp.errors import ConfigError

logger = logging.getLogger(__name__)
DATAFREE_SAMPLES = 32  # inputs synthesised from BN statistics when there is no data (compress/datafree.py)


class Int8Config(StageConfig):
    """Settings of post-training static int8 quantization."""

    calibration: Literal["minmax", "percentile", "mse", "entropy"] = Field(
        "minmax", description="How activation ranges are chosen from the calibration data.")
    percentile: float = Field(99.99, gt=50, le=100, description="Percentile for calibration='percentile'.")
    calibration_samples: int = Field(256, ge=1, description="Number of calibration inputs.")
    calibration_data: str | None = Field(
        None, description="A .npy of normalised inputs or a folder of images; default: the model's train split.")
    weights: Literal["per-channel", "per-tensor"] = Field(
        "per-channel", description="Weight scale granularity (per-tensor gives the smallest files).")
    io: Literal["float", "int8"] = Field("float", description="Model input/output dtype of the TFLite file.")
    rounding: Literal["nearest", "stochastic"] = Field("nearest", description="Rounding of weights to int8.")
    fixed_point: str | None = Field(
        None, description="Power-of-two scales: 'dynamic' (Qm.n per tensor) or one format such as 'Q3.4'.")
    trim: bool = Field(True, description="Drop what LiteRT does not need from the .tflite (names, duplicates).")
    max_drop: float | None = Field(
        None, ge=0, description="Allowed metric drop in points: when given, the most sensitive layers are kept "
        "float one at a time until it holds; default: the target's budget, with QAT as the fallback.")
    skip: list[str] = Field(
        default_factory=list, description="Modules kept in float: globs or regexes over module names.")
    equalize: bool = Field(True, description="Cross-layer equalisation of conv->ReLU(6)->conv chains first "
                           "(float outputs unchanged; per-tensor int8 ranges evened out).")
    bias_correction: bool = Field(True, description="Subtract the mean output error of int8 weights from biases.")
    adaround: bool = Field(False, description="Learn each weight's rounding (up or down) from layer outputs.")
    report_samples: int = Field(64, ge=0, description="Calibration inputs for the layer-wise error report (0: off).")
    qat: Literal["auto", "always", "never"] = Field("auto", description="Quantization-aware fine-tuning.")
    qat_epochs: int = Field(8, ge=1, description="Most epochs of quantization-aware fine-tuning.")
    qat_lr: float = Field(5e-4, gt=0, description="Learning rate of quantization-aware fine-tuning.")

    @field_validator("fixed_point")
    @classmethod
    def _check_fixed_point(cls, value: str | None) -> str | None:
        from edgecomp.compress._calibration import parse_fixed_point

        if value is not None and value != "dynamic":
            parse_fixed_point(value)
        return value


def _calibration_inputs(cfg: Int8Config, ctx: BuildContext, model: nn.Module) -> tuple[np.ndarray, str]:
    """Calibration inputs and where they came from: calibration_data, the data, BN statistics or random."""
    if cfg.calibration_data:
        return load_calibration(cfg.calibration_data, ctx.spec.input_shape, ctx.spec.normalization,
                                cfg.calibration_samples), f"calibration_data {cfg.calibration_data}"
    if ctx.data is not None:
        return ctx.data.calibration(cfg.calibration_samples, seed=ctx.seed), f"the {ctx.data.name} train split"
    from edgecomp.compress.datafree import synthesize_from_batchnorm

    synth = synthesize_from_batchnorm(model, ctx.spec.input_shape,
                                      min(cfg.calibration_samples, DATAFREE_SAMPLES), seed=ctx.seed)
    if synth is not None:
        return synth.inputs, (f"{len(synth.inputs)} inputs synthesised from {synth.bn_layers} batch-norm layers' "
                              f"running statistics (no data; {synth.steps} Adam steps, {synth.stopped}, "
                              f"mismatch {synth.loss_start:.3g} -> {synth.loss_end:.3g})")
    logger.warning("no calibration data and no batch-norm layer to synthesise inputs from: calibrating on "
                   "random normal inputs (pass --data or calibration_data)")
    shape = [cfg.calibration_samples, *ctx.spec.input_shape[1:]]
    return (np.random.default_rng(ctx.seed).standard_normal(shape).astype(np.float32),
            "random normal inputs (no data, and no batch-norm layer to synthesise inputs from)")


def _calibrate(prepared: nn.Module, x: np.ndarray, batch: int, deadline: float | None = None) -> None:
    xs = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        for i in range(0, len(xs), batch):
            prepared(xs[i : i + batch])
            if deadline is not None and time.monotonic() > deadline:  # the planner's --search-time: stop here
                break


def ptq(model: nn.Module, settings, calib: np.ndarray, input_shape: list[int], seed: int = 0,
        stochastic: bool = False, deadline: float | None = None):
    """Post-training quantization: export, fold BN, calibrate, convert; returns a ``QuantizedModel``."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgecomp.compress.pt2e import QuantizedModel, export_graph, stochastic_weights

    float_model = copy.deepcopy(model).eval()
    graph = export_graph(float_model, input_shape)
    quantizer = _pt2e().make_quantizer(settings)
    prepared = prepare_pt2e(graph, quantizer)
    batch = 64 if _dynamic_batch(graph, input_shape) else 1
    _calibrate(prepared, calib, batch, deadline)
    converted = convert_pt2e(prepared, fold_quantize=False)
    if stochastic:
        stochastic_weights(converted, seed)
    return QuantizedModel(converted, float_model, quantizer, settings, input_shape)


def qat(model: nn.Module, settings, ctx: BuildContext, cfg: Int8Config):
    """Quantization-aware fine-tuning with distillation from the float model; returns a ``QuantizedModel``."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from edgecomp.compress.pt2e import QuantizedModel, export_graph, fold_batchnorm
    from edgecomp.finetune import FinetuneConfig, finetune

    float_model = copy.deepcopy(model).eval()
    qat_settings = type(settings)(**{**settings.__dict__, "qat": True})
    quantizer = _pt2e().make_quantizer(qat_settings)
    graph = fold_batchnorm(export_graph(copy.deepcopy(model).eval(), ctx.spec.input_shape))
    prepared = prepare_qat_pt2e(graph, quantizer)

    class _Trainable(nn.Module):
        def __init__(self, gm: nn.Module) -> None:
            super().__init__()
            self.gm = gm

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gm(x)

        def train(self, mode: bool = True) -> nn.Module:
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.gm)
            self.training = mode
            return self

    wrapper = _Trainable(prepared)
    finetune(wrapper, ctx.data, FinetuneConfig(epochs=cfg.qat_epochs, lr=cfg.qat_lr, patience=3, seed=ctx.seed),
             teacher=ctx.teacher if ctx.teacher is not None else float_model, policy=ctx.finetune_policy)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)
    return QuantizedModel(converted, float_model, quantizer, qat_settings, ctx.spec.input_shape)


def _pt2e():
    from edgecomp.compress import pt2e

    return pt2e


def _dynamic_batch(graph: nn.Module, input_shape: list[int]) -> bool:
    """Whether an exported graph accepts a batch other than the example's."""
    try:
        with torch.no_grad():
            graph(torch.zeros(2, *input_shape[1:]))
    except Exception:  # noqa: BLE001 - a static graph raises on a guard; any failure means "no"
        return False
    return True


def _val_accuracy(model: nn.Module, ctx: BuildContext) -> float | None:
    from edgecomp.metrics import evaluate

    if ctx.data is None:
        return None
    return evaluate(model, ctx.data, "val")


class QuantizeInt8(Stage):
    """Post-training static int8 quantization (per-channel weights, calibrated activations), QAT fallback."""

    name = "quantize.int8"
    Config = Int8Config
    structural = False
    export_dtype = "int8"
    search_rank = 10
    search_appends = True
    needs_data = False  # calibrates on inputs synthesised from batch-norm statistics without data
    accuracy_budget_setting = "max_drop"  # the planner also tries max_drop=<the target's accuracy budget>

    @classmethod
    def search_space(cls) -> list[SearchRecipe]:
        """The planner tries int8 with its default settings (alone and after each structural candidate)."""
        return [[(cls.name, {})]]

    def supports(self, target) -> bool:
        """Only for targets whose runtime takes int8 models."""
        return "int8" in target.dtypes

    def apply(self, model: nn.Module, cfg: Int8Config, ctx: BuildContext) -> StageResult:
        """Quantize ``model``; return the fake-quant reference and int8 export options."""
        skip = sel.resolve_skip(model, cfg.skip)
        settings = _pt2e().QuantSettings(
            calibration=cfg.calibration, percentile=cfg.percentile, per_channel=cfg.weights == "per-channel",
            fixed_point=cfg.fixed_point, skip=tuple(skip))
        calib, calib_source = _calibration_inputs(cfg, ctx, model)
        sel.check_calibration_count(len(calib), cfg.calibration_samples)
        float_acc = _val_accuracy(model, ctx)
        max_drop = cfg.max_drop if cfg.max_drop is not None else (ctx.target.budgets.accuracy_drop_pct or 1.0)
        notes, metrics = [], {"calibration_inputs": len(calib), "calibration_source": calib_source}
        if ctx.data is None and not cfg.calibration_data:
            notes.append(f"calibrated on {calib_source}")
        if skip:
            notes.append(f"kept in float (skip): {', '.join(skip)}")
        model = _prepare(model, cfg, ctx, calib, metrics, notes)
        quantized, errors = None, None
        if cfg.qat != "always":
            quantized = ptq(model, settings, calib, ctx.spec.input_shape, ctx.seed, cfg.rounding == "stochastic",
                            ctx.finetune_policy.deadline)
            errors = _layer_report(quantized, calib[: cfg.report_samples], metrics, notes)
        ptq_acc = _val_accuracy(quantized, ctx) if quantized is not None else None
        metrics.update(val_accuracy_float=float_acc, val_accuracy_ptq=ptq_acc)
        if cfg.max_drop is not None and quantized is not None and cfg.qat != "always":
            if ptq_acc is None or float_acc is None:
                raise ConfigError("max_drop needs validation data to measure the drop", "pass --data")
            if float_acc - ptq_acc > max_drop:
                quantized, skip = self._revert(model, cfg, ctx, settings, calib, errors, float_acc, ptq_acc,
                                               skip, metrics, notes)
                ptq_acc = metrics["val_accuracy_reverted"]
        needs_qat = cfg.qat == "always" or (cfg.max_drop is None and
            cfg.qat == "auto" and ptq_acc is not None and float_acc is not None and float_acc - ptq_acc > max_drop)
        if needs_qat:
            if ctx.data is None:
                raise ConfigError("quantization-aware fine-tuning needs training data",
                                  "pass --data, or set qat='never' to keep the post-training result")
            if cfg.rounding == "stochastic" or cfg.fixed_point:
                notes.append("QAT uses round-to-nearest and affine scales (rounding/fixed_point apply to PTQ only)")
            logger.info("  PTQ validation accuracy %s vs float %.2f%% (allowed drop %.2f): running QAT",
                        "n/a" if ptq_acc is None else f"{ptq_acc:.2f}%", float_acc or 0.0, max_drop)
            quantized = qat(model, settings, ctx, cfg)
            metrics["val_accuracy_qat"] = _val_accuracy(quantized, ctx)
            notes.append("quantization-aware fine-tuning with distillation from the float model" + (
                "" if cfg.qat == "always" else f" (post-training quantization lost more than {max_drop} points)"))
        metrics["method"] = "qat" if needs_qat else "ptq"
        int8 = Int8Export(calibration=cfg.calibration, percentile=cfg.percentile, weights=cfg.weights, io=cfg.io,
                          rounding=cfg.rounding, fixed_point=cfg.fixed_point, trim=cfg.trim, mode="static",
                          method=metrics["method"], skip=list(skip))
        export = ctx.export.model_copy(update={"dtype": "int8", "int8": int8})
        return StageResult(model=quantized, metrics=metrics, notes=notes, export=export)

    @staticmethod
    def _revert(model, cfg: Int8Config, ctx: BuildContext, settings, calib, errors, float_acc: float,
                ptq_acc: float, skip: list[str], metrics: dict, notes: list[str]):
        """Keep the most sensitive layers float until ``cfg.max_drop`` holds; returns (model, skip)."""
        from dataclasses import replace

        from edgecomp.compress.quant_report import sensitivity_order

        def quantize(names: list[str]):
            return ptq(model, replace(settings, skip=tuple(names)), calib, ctx.spec.input_shape, ctx.seed,
                       cfg.rounding == "stochastic", ctx.finetune_policy.deadline)

        def latency(name: str) -> float | None:
            return sel.latency_cost(model, name, ctx.spec.input_shape, ctx.profile, ctx.target.threads)

        order = sensitivity_order(errors or [])
        quantized, done = sel.revert_until(model, order, skip, float_acc, cfg.max_drop, quantize,
                                           lambda m: _val_accuracy(m, ctx), ptq_acc, latency)
        reverted = [r["layer"] for r in done.layers]
        metrics.update(reverted_layers=done.layers, val_accuracy_reverted=done.metric)
        notes.append(f"int8 lost {float_acc - ptq_acc:.2f} points (max_drop {cfg.max_drop}): kept float, most "
                     "sensitive first: " + ", ".join(sel.cost_text(r, ctx.profile.name) for r in done.layers)
                     + f" -> drop {float_acc - done.metric:.2f}")
        return quantized, skip + reverted


def _prepare(model: nn.Module, cfg: Int8Config, ctx: BuildContext, calib: np.ndarray, metrics: dict,
             notes: list[str]) -> nn.Module:
    """Cross-layer equalisation, bias correction and AdaRound when asked (each on a copy of the model)."""
    from edgecomp.compress import equalize

    if cfg.equalize:
        try:
            model, pairs = equalize.equalize(model, ctx.spec.input_shape, calib)
        except Exception as exc:  # on by default: a structure torch.export cannot trace is quantized without it
            logger.debug("cross-layer equalisation failed", exc_info=True)
            notes.append(f"cross-layer equalisation skipped: the model could not be traced ({type(exc).__name__})")
            pairs = []
        else:
            notes.append(f"cross-layer equalisation of {len(pairs)} conv pairs" if pairs else
                         "cross-layer equalisation found no conv -> ReLU/ReLU6 -> conv chain")
        metrics["equalized_pairs"] = [f"{p.conv1}->{p.conv2}" for p in pairs]
    if cfg.bias_correction:
        model, n = equalize.correct_bias(model, calib, per_channel=cfg.weights == "per-channel")
        metrics["bias_corrected_layers"] = n
        notes.append(f"bias correction of {n} layers (mean int8 weight error on {len(calib)} inputs)")
    if cfg.adaround:
        from edgecomp.compress.adaround import adaround

        model, done = adaround(model, calib, ctx.spec.input_shape, per_channel=cfg.weights == "per-channel",
                               seed=ctx.seed)
        metrics["adaround"] = {"layers": done.layers, "flipped": done.flipped, "weights": done.weights,
                               "mse_nearest": done.mse_nearest, "mse_learned": done.mse_learned}
        notes.append(done.summary())
    return model


def _layer_report(quantized, x: np.ndarray, metrics: dict, notes: list[str]):
    """The layer-wise error report of ``quantized`` on ``x`` into metrics and notes; the errors (or None)."""
    from edgecomp.compress import quant_report

    if not len(x):
        return None
    errors = quant_report.layer_errors(quantized, x)
    metrics["layer_errors"] = quant_report.summary(errors)
    top = quant_report.worst(errors, 3)
    low = quant_report.worst(errors, 1, "sqnr_db")
    if top:
        notes.append("most sensitive int8 layers (dB of SQNR each loses): "
                     + ", ".join(f"{e.name} {e.lost_db:.1f}" for e in top)
                     + f"; lowest SQNR {low[0].sqnr_db:.1f} dB at {low[0].name}")
        logger.info("  %s", notes[-1])
    return errors


class DynamicConfig(StageConfig):
    """Settings of dynamic-range int8 quantization (int8 weights, activations quantized at run time)."""

    weights: Literal["per-channel", "per-tensor"] = Field("per-channel", description="Weight scale granularity.")


class QuantizeDynamic(Stage):
    """Dynamic-range int8: weights stored as int8, activations quantized per inference by the kernels."""

    name = "quantize.dynamic"
    Config = DynamicConfig
    structural = False
    export_dtype = "int8"
    needs_data = False  # weights rounded per channel; activations quantized at run time from their own range

    def supports(self, target) -> bool:
        """Only for targets whose runtime takes int8 models."""
        return "int8" in target.dtypes

    def apply(self, model: nn.Module, cfg: DynamicConfig, ctx: BuildContext) -> StageResult:
        """Quantize weights to int8; return the dynamic fake-quant reference and int8 export options."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        pt2e = _pt2e()
        settings = pt2e.QuantSettings(per_channel=cfg.weights == "per-channel", dynamic=True)
        float_model = copy.deepcopy(model).eval()
        graph = pt2e.export_graph(float_model, ctx.spec.input_shape)
        quantizer = pt2e.make_quantizer(settings)
        prepared = prepare_pt2e(graph, quantizer)
        prepared(torch.zeros(ctx.spec.input_shape))
        reference = convert_pt2e(prepared, fold_quantize=False)
        quantized = pt2e.QuantizedModel(reference, float_model, quantizer, settings, ctx.spec.input_shape)
        export = ctx.export.model_copy(update={"dtype": "int8", "int8": Int8Export(mode="dynamic", weights=cfg.weights)})
        return StageResult(model=quantized, export=export,
                           notes=["dynamic-range int8: activations stay float between layers"])


class FP16Config(StageConfig):
    """Settings of float16 weight storage (none yet; the stage takes no options)."""


class QuantizeFP16(Stage):
    """float16 weights: half the bytes of fp32, computed in float by runtimes (or fp16 where they can)."""

    name = "quantize.fp16"
    Config = FP16Config
    structural = False
    export_dtype = "fp16"
    search_rank = 5  # before int8: half the bytes at a far smaller error
    needs_data = False  # float16 rounding: relative error <= 2^-11 per weight

    @classmethod
    def search_space(cls) -> list[SearchRecipe]:
        """The planner tries fp16 weights alone (where the target lists quantize.fp16)."""
        return [[(cls.name, {})]]

    def supports(self, target) -> bool:
        """Only for targets that list fp16."""
        return "fp16" in target.dtypes

    def apply(self, model: nn.Module, cfg: FP16Config, ctx: BuildContext) -> StageResult:
        """Round every parameter through float16 (the reference) and ask for fp16 exports."""
        rounded = copy.deepcopy(model).eval()
        with torch.no_grad():
            for p in rounded.parameters():
                p.copy_(p.half().float())
        export = ctx.export.model_copy(update={"dtype": "fp16"})
        return StageResult(model=rounded, export=export, notes=["weights rounded to float16"])
