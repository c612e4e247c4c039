"""A PyTorch model's layers as :class:`~edgecomp.profile.predict.LayerCost`, from one forward pass (no export).

Cheap enough for planners: the hooks see convolutions, linear layers, pooling and activations; a
dispatch mode sees tensor-tensor adds, multiplies and concatenations. Whether XNNPACK takes each layer
is left to the delegate's op tables at prediction time (``LayerCost.delegated`` is None).
"""

from __future__ import annotations

import math
from typing import Any

from edgecomp.dtypes import bytes_per_weight
from edgecomp.profile.predict import LayerCost


def layers_from_torch(model: Any, input_shape: tuple[int, ...] | list[int], dtype: str = "fp32") -> list[LayerCost]:
    """LayerCosts of a torch model from one forward pass with hooks on its leaf modules (no export).

    Convolutions, linear layers, pooling and activations are seen through hooks on the leaf modules;
    tensor-tensor adds and multiplies (residual blocks, squeeze-and-excitation) and concatenations in
    ``forward`` code are seen at the ATen level (:func:`_functional_ops`).
    """
    import torch
    from torch import nn

    elem = int(bytes_per_weight(dtype))  # activations are stored in the model's dtype too
    layers: list[LayerCost] = []

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        y = output if isinstance(output, torch.Tensor) else None
        if x is None or y is None:
            return
        act = float(x.numel() + y.numel()) * elem
        name = type(module).__name__
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            red = module.in_channels // module.groups * kh * kw
            macs = float(y.numel() * red)
            depthwise = module.groups == module.in_channels and module.groups > 1
            op = "depthwise" if depthwise else "pointwise" if kh == kw == 1 else "conv"
            layers.append(LayerCost(op, macs, module.weight.numel() * elem, act, module.out_channels, red, name,
                                    taps=kh * kw))
        elif isinstance(module, nn.Linear):
            macs = float(y.numel() * module.in_features)
            layers.append(LayerCost("fc", macs, module.weight.numel() * elem, act, module.out_features,
                                    module.in_features, name))
        elif isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            layers.append(LayerCost("pool", 0.0, 0.0, act, name=name, kind="max_pool_2d"))
        elif isinstance(module, nn.AvgPool2d):
            layers.append(LayerCost("pool", 0.0, 0.0, act, name=name, kind="average_pool_2d"))
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            layers.append(LayerCost("pool", 0.0, 0.0, act, name=name, kind="mean"))
        elif isinstance(module, (nn.Softmax, nn.LogSoftmax)):
            layers.append(LayerCost("softmax", 0.0, 0.0, act, name=name, kind="softmax"))
        elif isinstance(module, (nn.Hardswish, nn.Sigmoid, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Tanh)):
            kind = {nn.Hardswish: "hard_swish", nn.Sigmoid: "logistic", nn.Tanh: "tanh", nn.GELU: "gelu"}
            layers.append(LayerCost("elementwise", 0.0, 0.0, act, name=name, kind=kind.get(type(module), "")))
        # ReLU/ReLU6 and BatchNorm fold into the preceding convolution on export: free.

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), _functional_ops(layers, elem):
            was_training = model.training
            model.eval()
            out = model(torch.zeros(tuple(input_shape)))
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    if dtype == "int8":  # a full-integer file with float I/O quantizes its input and dequantizes its output
        n_in, n_out = math.prod(input_shape), out.numel() if isinstance(out, torch.Tensor) else 0
        layers.insert(0, LayerCost("quantize", 0.0, 0.0, 5.0 * n_in, name="input", kind="quantize"))
        layers.append(LayerCost("quantize", 0.0, 0.0, 5.0 * n_out, name="output", kind="dequantize"))
    return layers


_FUNCTIONAL_KINDS = {"add": ("elementwise", "add"), "mul": ("elementwise", "mul"), "cat": ("data", "concatenation")}


def _functional_ops(layers: list[LayerCost], elem: int) -> Any:
    """A dispatch mode that appends tensor-tensor ``add``/``mul`` and ``cat`` to ``layers``, in call order.

    Only ops between activations (every operand a tensor of two or more dimensions) count: a bias add or
    a scale by a constant folds into the neighbouring layer on export.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class FunctionalOps(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:  # else its first call imports torch._dynamo (seconds)
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__.rstrip("_")
            operands = (list(args[0]) if name == "cat" else list(args[:2])) if name in _FUNCTIONAL_KINDS else []
            if (isinstance(out, torch.Tensor) and len(operands) >= 2
                    and all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in operands)):
                op, kind = _FUNCTIONAL_KINDS[name]
                act = float(sum(t.numel() for t in operands) + out.numel()) * elem
                layers.append(LayerCost(op, 0.0, 0.0, act, name=f"aten.{name}", kind=kind))
            return out

    return FunctionalOps()
