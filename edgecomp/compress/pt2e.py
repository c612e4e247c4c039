"""PT2E int8 quantization: quantizer, calibration observers and the fake-quant reference model.

The flow is torch.export -> ``prepare_pt2e`` (observers, BatchNorm folded into convs) -> calibration
-> ``convert_pt2e`` (explicit quantize/dequantize ops around every integer op). The converted graph is
the fake-quant *reference*: it computes exactly what the integer kernels should, and the TFLite and
ONNX exporters convert that same graph, so their scales and int8 weights are the reference's.

``EdgeQuantizer`` is litert-torch's PT2E quantizer with one fix: it annotates every ``add`` node,
including chained residual adds (MobileNetV2's ``x + f(x)`` repeated), which the stock annotator
groups into one partition and leaves in float, putting DEQUANTIZE/ADD/QUANTIZE islands in the .tflite.
"""

from __future__ import annotations

import copy
import logging
import operator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from edgecomp.compress import _calibration as cal
from edgecomp.quiet import captured_output, quiet

logger = logging.getLogger(__name__)
_MAX_SAMPLES = 1 << 21
_PER_BATCH = 1 << 16


def _observers():
    from torchao.quantization.pt2e.observer import MinMaxObserver, PerChannelMinMaxObserver

    class CalibrationObserver(MinMaxObserver):
        """Per-tensor activation observer: keeps min/max and a sample of values; range by ``method``."""

        def __init__(self, *args, method: str = "minmax", percentile: float = 99.99,
                     fixed_point: str | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.method, self.percentile, self.fixed_point = method, percentile, fixed_point
            self.samples: list[torch.Tensor] = []
            self.n_samples = 0

        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            """Record min/max (and a strided sample of values when the method needs them)."""
            super().forward(x_orig)
            if self.method != "minmax" and x_orig.numel():
                flat = x_orig.detach().reshape(-1).float()
                step = max(1, flat.numel() // _PER_BATCH)
                self.samples.append(flat[::step].clone())
                self.n_samples += self.samples[-1].numel()
                if self.n_samples > _MAX_SAMPLES:
                    merged = torch.cat(self.samples)[::2]
                    self.samples, self.n_samples = [merged], merged.numel()
            return x_orig

        def calculate_qparams(self):
            """Scale and zero point from the calibrated range (power-of-two scale in fixed-point mode)."""
            lo, hi = float(self.min_val), float(self.max_val)
            if not np.isfinite([lo, hi]).all():
                lo, hi = 0.0, 0.0
            if self.method != "minmax" and self.samples:
                lo, hi = cal.compute_range(torch.cat(self.samples).numpy(), self.method, self.percentile, (lo, hi))
            if self.fixed_point is None:
                scale, zero = cal.affine_qparams(lo, hi, float(self.eps))
            elif self.fixed_point == "dynamic":
                scale, zero = cal.power_of_two(max(-lo / 128.0, hi / 127.0, float(self.eps))), 0
            else:
                scale, zero = 2.0 ** -cal.parse_fixed_point(self.fixed_point)[1], 0
            return torch.tensor([scale], dtype=torch.float32), torch.tensor([zero], dtype=torch.int32)

    class WeightObserver(PerChannelMinMaxObserver):
        """Per-channel symmetric weight observer; optionally rounds scales up to powers of two."""

        def __init__(self, *args, fixed_point: str | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.fixed_point = fixed_point

        def calculate_qparams(self):
            """Per-channel max|w|/127 scales (power-of-two in fixed-point mode), zero points 0."""
            scale, zero = super().calculate_qparams()
            if self.fixed_point is not None:
                scale = torch.tensor([cal.power_of_two(float(s)) for s in scale], dtype=scale.dtype)
            return scale, zero

    class TensorWeightObserver(MinMaxObserver):
        """Per-tensor symmetric weight observer (one scale per layer: the smallest files)."""

        def __init__(self, *args, fixed_point: str | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.fixed_point = fixed_point

        def calculate_qparams(self):
            """max|w|/127 (power-of-two in fixed-point mode), zero point 0."""
            scale, zero = super().calculate_qparams()
            if self.fixed_point is not None:
                scale = torch.tensor([cal.power_of_two(float(scale.reshape(-1)[0]))], dtype=scale.dtype)
            return scale, zero

    return CalibrationObserver, WeightObserver, TensorWeightObserver


@dataclass(frozen=True)
class QuantSettings:
    """How to quantize: calibration method, weight granularity, fixed point, QAT or dynamic."""

    calibration: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    fixed_point: str | None = None
    qat: bool = False
    dynamic: bool = False
    skip: tuple[str, ...] = ()  # module names kept in float (exact names; see quantize.int8's skip)


@quiet("int8 quantizer")  # importing litert_torch and torchao prints notices
def make_quantizer(s: QuantSettings):
    """An ``EdgeQuantizer`` with int8 weights (per-channel or per-tensor) and calibrated activations."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.pt2e_quantizer_utils import (
        QuantizationConfig,
        get_input_act_qspec,
        get_output_act_qspec,
        propagate_annotation,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec

    class EdgeQuantizer(PT2EQuantizer):
        """litert-torch's PT2E quantizer that also annotates chained residual adds, muls and activations.

        Its QAT conv+BN patterns are off (they fail on torch 2.13): BatchNorm is folded into the
        convolutions before QAT instead (``fold_batchnorm``).
        """

        STATIC_QAT_ONLY_OPS: ClassVar[list[str]] = []

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            """Stock annotation, then every still-unannotated tensor-tensor add/mul and activation
            (hard-swish, hard-sigmoid, sigmoid, tanh) gets int8 inputs and output, so that no float
            island (DEQUANTIZE -> float op -> QUANTIZE) is left between integer ops."""
            with captured_output("int8 annotate"):  # prints "Relu partition has more than one output node"
                if self.global_config is None or not self.global_config.input_activation:
                    return super().annotate(model)
                model = self._annotate_for_static_quantization_config(model)
            in_spec, out_spec = (get_input_act_qspec(self.global_config),
                                 get_output_act_qspec(self.global_config))
            targets = {torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor, torch.ops.aten.mul.Tensor}
            aten = torch.ops.aten
            unary = {aten.hardswish.default, aten.hardswish_.default, aten.hardsigmoid.default,
                     aten.hardsigmoid_.default, aten.sigmoid.default, aten.tanh.default}
            for node in model.graph.nodes:
                ann = node.meta.get("quantization_annotation")
                if node.target not in targets | unary or (ann is not None and ann._annotated):
                    continue
                inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
                if not inputs or (node.target in unary and len(inputs) != 1):
                    continue
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: in_spec for a in inputs}, output_qspec=out_spec, _annotated=True)
            self.unannotate_skipped(model)
            propagate_annotation(model)
            return model

        def unannotate_skipped(self, model: torch.fx.GraphModule) -> None:
            """Drop the annotations of every node that belongs to a module of ``skip``: it stays float."""
            for node in model.graph.nodes:
                if skip and module_paths(node) & skip:
                    node.meta.pop("quantization_annotation", None)
                    for user in _fused_activations(node):  # a quantized ReLU after it would re-quantize it
                        user.meta.pop("quantization_annotation", None)

    skip = set(s.skip)
    if s.qat or s.dynamic:
        return EdgeQuantizer().set_global(get_symmetric_quantization_config(
            is_per_channel=s.per_channel, is_qat=s.qat, is_dynamic=s.dynamic))
    act_obs, w_obs, wt_obs = _observers()
    stock = get_symmetric_quantization_config(is_per_channel=s.per_channel)
    act = QuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127,
        qscheme=torch.per_tensor_symmetric if s.fixed_point else torch.per_tensor_affine,
        is_dynamic=False, observer_or_fake_quant_ctr=act_obs.with_args(
            eps=2**-12, method=s.calibration, percentile=s.percentile, fixed_point=s.fixed_point),
    )
    weight = QuantizationSpec(
        dtype=torch.int8, quant_min=-127, quant_max=127,
        qscheme=torch.per_channel_symmetric if s.per_channel else torch.per_tensor_symmetric, ch_axis=0,
        is_dynamic=False, observer_or_fake_quant_ctr=(w_obs if s.per_channel else wt_obs).with_args(
            eps=2**-12, fixed_point=s.fixed_point),
    )
    config = QuantizationConfig(act, act, weight, None, stock.fixed_qparams, False, False)
    return EdgeQuantizer().set_global(config)


def _fused_activations(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The chain of activation/BatchNorm nodes that only ``node`` feeds (the converter fuses them into it)."""
    aten = torch.ops.aten
    fusable = {aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default,
               aten.clamp.default, aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default,
               operator.getitem}
    chain, current = [], node
    while len(current.users) == 1:
        (user,) = current.users
        if user.op != "call_function" or user.target not in fusable:
            break
        chain.append(user)
        current = user
    return chain


def module_paths(node: torch.fx.Node) -> set[str]:
    """Names of every module (as in ``named_modules``) an exported graph node was traced inside."""
    stack = node.meta.get("nn_module_stack") or {}
    return {str(v[0]).replace("L['self'].", "") for v in stack.values() if v and v[0]}


class QuantizedModel(nn.Module):
    """The fake-quant reference: a converted PT2E graph (float I/O, explicit quantize/dequantize).

    ``reference`` stores int8 weights (what ONNX export wants); ``unfolded[0]`` is the same graph with
    float weights followed by quantize ops, the form litert-torch's converter accepts. Both compute
    the same outputs.

    ``float_model`` is the float network it came from (kept for parameter counts and for exporters
    that quantize on their own, e.g. CoreML's weight quantization); ``quantizer`` is what the TFLite
    exporter hands to litert-torch; ``settings`` describes the quantization for reports.
    """

    def __init__(self, unfolded: torch.fx.GraphModule, float_model: nn.Module, quantizer,
                 settings: QuantSettings, example_shape: list[int]) -> None:
        super().__init__()
        reference = copy.deepcopy(unfolded)
        fold_weights(reference)
        for module in list(reference.modules()) + list(unfolded.modules()):  # exported graphs refuse .eval()
            module.training = False
        self.reference = reference
        self.unfolded = [unfolded]  # (a list: not a submodule) float weights + quantize ops, for litert-torch
        self.float_model = float_model
        self.quantizer = quantizer
        self.settings = settings
        self.example_shape = list(example_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of the fake-quant graph for a batch of float inputs."""
        return self.reference(x)

    def train(self, mode: bool = True) -> QuantizedModel:
        """Exported graphs refuse ``train()``; the reference always stays in inference mode."""
        self.training = False
        self.float_model.eval()
        return self


DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class HardSigmoidOps(nn.Module):
    """``hardsigmoid`` written as ``clamp(x + 3, 0, 6) * (1/6)``: ops with int8 TFLite kernels.

    litert-torch lowers ``aten.hardsigmoid`` to float ops between a DEQUANTIZE and a QUANTIZE, a float
    island inside an int8 graph; the same function as an add, a clamp and a multiply stays integer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same values as ``nn.Hardsigmoid``."""
        return torch.clamp(x + 3.0, 0.0, 6.0) * (1.0 / 6.0)


def integer_friendly(model: nn.Module) -> int:
    """Replace dropout by the identity and ``nn.Hardsigmoid`` by :class:`HardSigmoidOps` (in place).

    Returns how many modules were replaced.
    """
    return strip_dropout(model) + _replace_modules(model, nn.Hardsigmoid, HardSigmoidOps)


def strip_dropout(model: nn.Module) -> int:
    """Replace every dropout module of ``model`` by ``nn.Identity`` (in place); how many were replaced.

    Dropout is the identity at inference, but a dropout node left in the exported graph gets its own
    observer: the converter then drops the node and writes the next layer's int32 bias with a scale
    computed from that observer, not from the tensor the layer really reads (measured: MobileNetV2's
    classifier bias came out 2.2x too large in the int8 .tflite, cosine 0.96 to the reference).
    """
    return _replace_modules(model, DROPOUT, nn.Identity)


def _replace_modules(model: nn.Module, types, make: type[nn.Module]) -> int:
    """Replace every submodule of ``model`` that is an instance of ``types`` by ``make()``; how many."""
    found = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, types)]
    for parent, name in found:
        setattr(parent, name, make())
    return len(found)


@quiet("torch.export")
def export_graph(model: nn.Module, example_shape: list[int]) -> torch.fx.GraphModule:
    """torch.export (in the model's current train/eval mode) with a dynamic batch, as a GraphModule.

    Dropout and hard-sigmoid modules of ``model`` are replaced first (see :func:`integer_friendly`).
    """
    if integer_friendly(model):
        logger.debug("dropout / hardsigmoid replaced before export (see integer_friendly)")
    example = (torch.zeros(example_shape),)
    try:  # an example batch of 2: torch.export specialises a size-1 dimension
        batch = torch.export.Dim("batch", min=1, max=4096)
        return torch.export.export(model, (torch.zeros([2, *example_shape[1:]]),),
                                   dynamic_shapes=({0: batch},)).module()
    except Exception:
        logger.debug("dynamic-batch export failed; exporting with a fixed batch", exc_info=True)
        return torch.export.export(model, example).module()


@dataclass
class WeightRewrite:
    """What ``rewrite_weights`` did: how many weight tensors it re-rounded."""

    tensors: int = 0
    notes: list[str] = field(default_factory=list)


def weight_quant_nodes(graph_module: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The quantize nodes applied to constant weights in a converted (fold_quantize=False) graph."""
    qd = torch.ops.quantized_decomposed
    targets = {qd.quantize_per_channel.default, qd.quantize_per_tensor.default}
    return [n for n in graph_module.graph.nodes
            if n.target in targets and isinstance(n.args[0], torch.fx.Node) and n.args[0].op == "get_attr"]


def stochastic_weights(graph_module: torch.fx.GraphModule, seed: int) -> WeightRewrite:
    """Replace each quantized weight ``w`` by ``s * SR(w / s)`` so the int8 weights are stochastically rounded.

    Round-to-nearest of the rewritten value by the exporters then reproduces ``SR(w / s)`` exactly.
    """
    gen = torch.Generator().manual_seed(seed)
    done = WeightRewrite()
    for node in weight_quant_nodes(graph_module):
        name = node.args[0].target
        w = _get_attr(graph_module, name)
        scale = node.args[1]
        scale = _get_attr(graph_module, scale.target) if isinstance(scale, torch.fx.Node) else torch.tensor(scale)
        if node.target == torch.ops.quantized_decomposed.quantize_per_channel.default:
            axis = node.args[3]
            shape = [1] * w.dim()
            shape[axis] = -1
            s = scale.reshape(shape).to(w.dtype)
            lo, hi = node.args[4], node.args[5]
        else:
            s = scale.to(w.dtype).reshape(())
            lo, hi = node.args[3], node.args[4]
        q = torch.clamp(cal.stochastic_round(w.detach() / s, gen), lo, hi)
        _set_attr(graph_module, name, (q * s).to(w.dtype))
        done.tensors += 1
    graph_module.recompile()
    return done


def _get_attr(module: nn.Module, dotted: str) -> torch.Tensor:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module  # type: ignore[return-value]


def _set_attr(module: nn.Module, dotted: str, value: torch.Tensor) -> None:
    *path, last = dotted.split(".")
    for part in path:
        module = getattr(module, part)
    old = getattr(module, last)
    setattr(module, last, nn.Parameter(value, requires_grad=False) if isinstance(old, nn.Parameter) else value)


@quiet("int8 fold weights")
def fold_weights(graph_module: torch.fx.GraphModule) -> None:
    """Fold the quantize ops on constant weights into int8 tensors (what ``convert_pt2e`` does by default)."""
    from torchao.quantization.pt2e.constant_fold import constant_fold
    from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

    constant_fold(graph_module, _quant_node_constraint)


@quiet("int8 fold batchnorm")
def fold_batchnorm(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fold eval-mode BatchNorm into the preceding convolutions of an exported graph (in place)."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _fuse_conv_bn_(graph_module)
    return graph_module
