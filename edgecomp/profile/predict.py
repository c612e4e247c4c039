"""Latency predicted from a hardware profile: a per-layer roofline times per-op-type efficiency.

Each layer costs ``max(MACs / (peak MAC/s × efficiency × utilisation), bytes moved / bandwidth)`` plus a
fixed per-op overhead; layers without MACs (adds, pooling, padding, quantize) cost bytes moved over an
efficiency-scaled bandwidth. Peaks come from the profile (clock × FLOP or int8 OP per cycle, summed over
the cores the threads run on, the fastest first); utilisation models the micro-kernels' blocks of output
channels (``gemm_tile``), output pixels (``gemm_rows``) and input channels (``gemm_kr``), and the loss on
short reductions (``small_k``, ``small_k_int8``). A PAD that feeds a convolution costs nothing: XNNPACK
folds it into the convolution's padding. Efficiencies are per op type and dtype (``conv``, ``pointwise``,
``depthwise``, ``fc``, ``elementwise``, ``pool``, ``softmax``, ``data``, ``quantize``; ``<type>_int8`` for
int8) and are fitted from measured runs by :mod:`edgecomp.profile.calibrate`.

Two entry points: :func:`predict_latency` reads an exported ``.tflite`` graph
(``ai_edge_litert.schema_py_generated``); :func:`predict_from_layers` takes a list of :class:`LayerCost`,
which :func:`layers_from_torch` builds from a PyTorch model without exporting it (cheap, for planners).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecomp.dtypes import bytes_per_weight
from edgecomp.errors import ConfigError, ModelLoadError
from edgecomp.targets import HardwareProfile

COMPUTE_OPS = ("conv", "pointwise", "depthwise", "fc")
MEMORY_OPS = ("elementwise", "pool", "softmax", "data", "quantize")
_FALLBACK = {"pointwise": "conv", "data": "elementwise", "quantize": "elementwise", "softmax": "elementwise",
             "pool": "elementwise"}
_DEFAULT_EFF = {"conv": 0.5, "depthwise": 0.25, "fc": 0.3, "elementwise": 0.3}

_TFLITE_CATEGORY = {
    "CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "DEPTHWISE_CONV_2D": "depthwise",
    "FULLY_CONNECTED": "fc", "BATCH_MATMUL": "fc",
    "AVERAGE_POOL_2D": "pool", "MAX_POOL_2D": "pool", "MEAN": "pool", "SUM": "pool", "REDUCE_MAX": "pool",
    "SOFTMAX": "softmax", "LOG_SOFTMAX": "softmax",
    "CONCATENATION": "data", "PAD": "data", "PADV2": "data", "TRANSPOSE": "data", "SPLIT": "data",
    "SPLIT_V": "data", "SLICE": "data", "STRIDED_SLICE": "data", "GATHER": "data", "TILE": "data",
    "RESIZE_BILINEAR": "data", "RESIZE_NEAREST_NEIGHBOR": "data", "BROADCAST_TO": "data",
    "DEPTH_TO_SPACE": "data", "SPACE_TO_DEPTH": "data", "MIRROR_PAD": "data",
    "QUANTIZE": "quantize", "DEQUANTIZE": "quantize",
    "RESHAPE": "free", "SQUEEZE": "free", "EXPAND_DIMS": "free", "SHAPE": "free",
}
_PAD_FUSES_INTO = {"CONV_2D", "DEPTHWISE_CONV_2D"}
_TYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "INT64": 8, "INT8": 1, "UINT8": 1, "INT16": 2, "BOOL": 1}


@dataclass(frozen=True)
class LayerCost:
    """The cost-relevant facts of one layer: op type, MACs, bytes moved and the GEMM shape."""

    op: str
    macs: float = 0.0
    weight_bytes: float = 0.0
    act_bytes: float = 0.0
    out_channels: int = 0
    reduction: int = 0
    name: str = ""
    kind: str = ""
    taps: int = 1  # kernel positions (kh*kw): the reduction is taps x input channels

    @property
    def bytes(self) -> float:
        """Bytes moved: weights plus input and output activations."""
        return self.weight_bytes + self.act_bytes


@dataclass
class OpPrediction:
    """Predicted time of one layer and what bounds it."""

    name: str
    op: str
    ms: float
    bound: str
    macs: float
    bytes: float


@dataclass
class Prediction:
    """A predicted latency, per layer, labelled ``predicted:<profile>``."""

    ms: float
    per_op: list[OpPrediction] = field(default_factory=list)
    source: str = "predicted"
    threads: int = 1
    dtype: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return asdict(self)


def efficiency_of(profile: HardwareProfile, op: str, dtype: str, kind: str = "") -> float:
    """Fraction of peak for ``op`` at ``dtype``: ``<op>_int8`` for int8, then ``<op>``, then its fallback.

    ``kind`` (the runtime's op name, e.g. ``hard_swish``) is tried first, for memory-bound ops whose
    kernels differ a lot in speed.
    """
    eff = profile.efficiency
    keys = ([f"{kind}_{dtype}", kind] if dtype != "fp32" else [kind]) if kind and op in MEMORY_OPS else []
    cur: str | None = op
    while cur is not None:
        keys += [f"{cur}_{dtype}", cur] if dtype != "fp32" else [cur]
        cur = _FALLBACK.get(cur)
    for key in keys:
        if key in eff:
            return float(eff[key])
    return _DEFAULT_EFF["elementwise" if op in MEMORY_OPS else op if op in _DEFAULT_EFF else "conv"]


def peak_macs_per_s(profile: HardwareProfile, threads: int, dtype: str) -> float:
    """Peak multiply-accumulates per second of ``threads`` threads on the fastest cores first."""
    per_core = []
    for spec in ([profile.prime_cores] if profile.prime_cores else []) + [profile.cores]:
        ops = spec.int8_ops_per_cycle if dtype == "int8" else spec.fp32_flops_per_cycle
        per_core += [spec.clock_ghz * 1e9 * ops / 2.0] * spec.count
    used = per_core[: max(1, min(threads, len(per_core)))]
    return used[0] + profile.parallel_efficiency * sum(used[1:])


def _utilisation(layer: LayerCost, profile: HardwareProfile, dtype: str) -> float:
    util = 1.0
    tile = profile.gemm_tile.get(dtype) or profile.gemm_tile.get("fp32")
    if tile and layer.out_channels:
        util *= layer.out_channels / (math.ceil(layer.out_channels / tile) * tile)
    small_k = profile.small_k_int8 if dtype == "int8" and profile.small_k_int8 is not None else profile.small_k
    if small_k and layer.reduction and layer.op != "depthwise":
        util *= layer.reduction / (layer.reduction + small_k)
    kr = profile.gemm_kr.get(dtype, 1)
    if kr > 1 and layer.reduction and layer.op != "depthwise":  # each tap's input channels padded to kr
        channels = layer.reduction // max(layer.taps, 1)
        util *= channels / (math.ceil(channels / kr) * kr)
    if layer.op in ("conv", "pointwise") and layer.out_channels and layer.reduction:
        rows = round(layer.macs / (layer.out_channels * layer.reduction))  # output pixels: the GEMM's M
        mr = profile.gemm_rows
        if rows > mr:  # the last block of mr rows is partly empty (fewer rows run a narrower kernel)
            util *= rows / (math.ceil(rows / mr) * mr)
    return util


def predict_from_layers(layers: list[LayerCost], profile: HardwareProfile, threads: int = 1,
                        dtype: str | None = None) -> Prediction:
    """Sum the per-layer roofline costs of ``layers`` on ``profile`` with ``threads`` threads."""
    dtype = dtype or "fp32"
    if dtype not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"cannot predict latency for dtype '{dtype}'", "use fp32, fp16 or int8")
    peak = peak_macs_per_s(profile, threads, dtype)
    dram = profile.memory_bandwidth_gbs * 1e9
    cache_bytes = profile.cache_mb * 1e6
    cache = (profile.cache_bandwidth_gbs or profile.memory_bandwidth_gbs) * 1e9 if cache_bytes else dram
    weights_bw = dram if cache_bytes and sum(la.weight_bytes for la in layers) > cache_bytes else cache
    overhead = profile.overhead_us * 1e-6
    per_op = []
    for layer in layers:
        if layer.op == "free":
            per_op.append(OpPrediction(layer.name, layer.op, 0.0, "free", 0.0, layer.bytes))
            continue
        act_bw = cache if not cache_bytes or layer.act_bytes < cache_bytes else dram
        memory = layer.weight_bytes / weights_bw + layer.act_bytes / act_bw
        if profile.l2_kb and layer.op in ("conv", "pointwise", "fc") and layer.weight_bytes > profile.l2_kb * 1024:
            rows = layer.macs / max(layer.out_channels * layer.reduction, 1)  # output pixels (GEMM M)
            memory += layer.weight_bytes * math.ceil(rows / profile.gemm_rows) / cache
        if layer.op in COMPUTE_OPS and layer.macs > 0:
            compute = layer.macs / (peak * efficiency_of(profile, layer.op, dtype) * _utilisation(layer, profile, dtype))
        else:
            compute, memory = 0.0, memory / efficiency_of(profile, layer.op, dtype, layer.kind)
        bound = "compute" if compute >= memory else "memory"
        seconds = max(compute, memory) + overhead
        per_op.append(OpPrediction(layer.name, layer.op, seconds * 1e3, bound, layer.macs, layer.bytes))
    total = sum(p.ms for p in per_op)
    return Prediction(ms=total, per_op=per_op, source=f"predicted:{profile.name}", threads=threads, dtype=dtype)


# -- reading a .tflite graph -------------------------------------------------------------------------------
def read_tflite_layers(path: str | Path) -> tuple[list[LayerCost], str]:
    """The layers of the main subgraph of a .tflite file, and the model's dtype (fp32, fp16 or int8)."""
    from edgecomp.export.tflite_inspect import builtin_op_name, read_raw, tensor_type_name

    path = Path(path)
    try:
        buf = path.read_bytes()
        model = read_raw(buf)
        graph = model.Subgraphs(0)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as a .tflite flatbuffer: {exc}", "pass a .tflite file") from exc

    def tensor(i: int) -> tuple[list[int], str, bool]:
        t = graph.Tensors(i)
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        b = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        const = b is not None and (b.DataLength() > 0 or b.Size() > 0)
        return shape, tensor_type_name(t.Type(), unknown="FLOAT32"), const

    def nbytes(shape: list[int], ttype: str) -> float:
        return float(math.prod(shape)) * _TYPE_BYTES.get(ttype, 4)

    operators = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    codes = [model.OperatorCodes(op.OpcodeIndex()) for op in operators]
    opnames = [builtin_op_name(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), unknown="CUSTOM") for c in codes]
    consumers: dict[int, set[str]] = {}  # tensor index -> names of the ops that read it
    for op, opname in zip(operators, opnames):
        for j in range(op.InputsLength()):
            consumers.setdefault(op.Inputs(j), set()).add(opname)
    layers: list[LayerCost] = []
    weight_types: set[str] = set()
    for i, (op, opname) in enumerate(zip(operators, opnames)):
        ins = [tensor(k) for k in (op.Inputs(j) for j in range(op.InputsLength())) if k >= 0]
        outs = [tensor(op.Outputs(j)) for j in range(op.OutputsLength())]
        weight_bytes = sum(nbytes(s, t) for s, t, c in ins if c)
        act_bytes = sum(nbytes(s, t) for s, t, c in ins if not c) + sum(nbytes(s, t) for s, t, _ in outs)
        category = _TFLITE_CATEGORY.get(opname, "elementwise")
        readers = consumers.get(op.Outputs(0), set())
        if opname in ("PAD", "PADV2") and readers and readers <= _PAD_FUSES_INTO:
            category = "free"  # XNNPACK folds a zero pad into the padding of the convolution it feeds
        macs, out_ch, red, taps = 0.0, 0, 0, 1
        out_shape = outs[0][0] if outs else []
        if opname in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV") and len(ins) >= 2:
            w_shape, w_type = ins[1][:2]  # weights are input 1 (TRANSPOSE_CONV: output_shape, weights, data)
            weight_types.add(w_type)
            if opname == "CONV_2D":
                out_ch, red, taps = w_shape[0], math.prod(w_shape[1:]), w_shape[1] * w_shape[2]
                macs = float(math.prod(out_shape[:-1]) * out_ch * red)
                if w_shape[1] == w_shape[2] == 1:
                    category = "pointwise"
            elif opname == "DEPTHWISE_CONV_2D":
                out_ch, red = w_shape[-1], w_shape[1] * w_shape[2]
                macs = float(math.prod(out_shape[:-1]) * out_ch * red)
            elif opname == "FULLY_CONNECTED":
                out_ch, red = w_shape[0], w_shape[-1]
                macs = float(math.prod(ins[0][0]) // max(red, 1) * out_ch * red)
            else:  # TRANSPOSE_CONV: weights [O, kh, kw, I]; every input pixel scatters a kh×kw×O patch
                out_ch, red = w_shape[0], math.prod(w_shape[1:])
                data = next((s for s, _, c in ins if not c and len(s) == 4), [1, 1, 1, 1])
                macs = float(math.prod(data[:-1]) * out_ch * red)
        elif opname == "BATCH_MATMUL" and len(ins) >= 2:
            a, b = ins[0][0], ins[1][0]
            out_ch, red = b[-1], a[-1]
            macs = float(math.prod(a[:-1]) * red * out_ch)
        raw_name = graph.Tensors(op.Outputs(0)).Name() if op.OutputsLength() else None
        name = raw_name.decode(errors="replace") if raw_name else f"#{i}"  # trimmed int8 files drop names
        layers.append(LayerCost(category, macs, weight_bytes, act_bytes, out_ch, red, f"{opname}:{name}",
                                opname.lower(), taps))
    dtype = "int8" if "INT8" in weight_types or "UINT8" in weight_types else (
        "fp16" if weight_types == {"FLOAT16"} else "fp32")
    return layers, dtype


def predict_latency(tflite_path: str | Path, profile: HardwareProfile | str, threads: int = 1,
                    dtype: str | None = None) -> Prediction:
    """Predict the latency of an exported .tflite model on ``profile`` (a HardwareProfile or its name)."""
    if isinstance(profile, str):
        from edgecomp.targets import load_profile

        profile = load_profile(profile)
    layers, file_dtype = read_tflite_layers(tflite_path)
    return predict_from_layers(layers, profile, threads, dtype or file_dtype)


# -- a torch model's layers, without exporting -----------------------------------------------------------------
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
