"""Layer-wise int8 error report: where an int8 model loses precision, in PyTorch and in the .tflite.

Every int8 activation of a ``QuantizedModel`` (the output of each ``quantize_per_tensor`` node of the
converted PT2E graph) is compared with the same tensor of the float network on calibration inputs:
SQNR in dB (``10 log10(sum x^2 / sum (x - x_q)^2)``), mean per-sample cosine, and max absolute
error. The float network is the converted graph itself with every quantize/dequantize op bypassed,
so both sides have the same nodes (BatchNorm already folded) and the comparison is tensor for tensor.

Errors accumulate along the network, so ``sqnr_db`` is always worst near the output; ``lost_db`` is
what each layer adds (its input's SQNR minus its own), the sensitivity ranking that ``max_drop``
reverts layers by. The same activations read from an exported .tflite (LiteRT's interpreter with
``experimental_preserve_all_tensors``, tensors matched by scale, zero point and size) show errors
the converter introduced on top of the PyTorch simulation.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

logger = logging.getLogger(__name__)

_ATEN = torch.ops.aten
_WEIGHT_OPS = {_ATEN.conv2d.default, _ATEN.linear.default, _ATEN.conv1d.default, _ATEN.conv_transpose2d.input}
_PASS_THROUGH = {_ATEN.relu.default, _ATEN.relu_.default, _ATEN.hardtanh.default, _ATEN.hardtanh_.default,
                 _ATEN.clamp.default, _ATEN.batch_norm.default,
                 _ATEN._native_batch_norm_legit_no_training.default}


@functools.cache
def _qdq_ops() -> tuple[set, set, set]:
    """(activation quantize ops, activation dequantize ops, every quantize/dequantize op)."""
    import torchao.quantization.pt2e  # noqa: F401 - registers the quantized_decomposed ops

    qd = torch.ops.quantized_decomposed
    quant = {qd.quantize_per_tensor.default, qd.quantize_per_tensor.tensor}
    dequant = {qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor}
    return quant, dequant, quant | dequant | {qd.quantize_per_channel.default, qd.dequantize_per_channel.default}


@dataclass
class LayerError:
    """Error of one int8 activation against its float value (PyTorch, and the .tflite when measured)."""

    name: str  # the module (or, for functional ops, the graph node) that produces the activation
    op: str  # the aten op whose output is quantized
    node: str  # the quantize node of the converted graph
    sqnr_db: float
    cosine: float
    max_abs_error: float
    lost_db: float  # this layer's own share: its inputs' SQNR minus its SQNR (>= 0)
    scale: float
    zero_point: int
    tflite_sqnr_db: float | None = None
    tflite_cosine: float | None = None
    tflite_max_abs_error: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready, floats rounded."""
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class _Stats:
    """Running sums for SQNR, cosine and max error of one tensor over batches."""

    def __init__(self) -> None:
        self.signal = self.noise = self.max_err = 0.0
        self.cosines: list[np.ndarray] = []

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref, got = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
        diff = ref - got
        self.signal += float((ref**2).sum())
        self.noise += float((diff**2).sum())
        self.max_err = max(self.max_err, float(np.abs(diff).max(initial=0.0)))
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        self.cosines.append(np.where(norms > 0, (ref * got).sum(1) / np.maximum(norms, 1e-30), 1.0))

    def result(self) -> tuple[float, float, float]:
        return sqnr_db(self.signal, self.noise), float(np.concatenate(self.cosines).mean()), self.max_err


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """``10 log10(signal / noise)``; 200 dB for no noise (capped so that JSON stays finite)."""
    if noise_power <= 0:
        return 200.0
    if signal_power <= 0:
        return -200.0
    return float(min(200.0, 10.0 * np.log10(signal_power / noise_power)))


def float_twin(graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of a converted PT2E graph with every quantize/dequantize op bypassed: the float network."""
    twin = copy.deepcopy(graph)
    for node in list(twin.graph.nodes):
        if node.op == "call_function" and node.target in _qdq_ops()[2]:
            node.replace_all_uses_with(node.args[0])
            twin.graph.erase_node(node)
    twin.graph.eliminate_dead_code()
    twin.recompile()
    return twin


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L['self']", "")


def layer_name(node: fx.Node) -> str:
    """The module that produces ``node``'s value: the conv/linear behind a fused activation, else its own."""
    seen = node
    while seen.op == "call_function" and (seen.target in _PASS_THROUGH or seen.target in _qdq_ops()[2]) \
            and seen.args and isinstance(seen.args[0], fx.Node) and seen.args[0].op == "call_function":
        seen = seen.args[0]
    if seen.op == "call_function" and seen.target in _WEIGHT_OPS and _module_path(seen):
        return _module_path(seen)
    path = _module_path(node)
    return f"{path}:{node.name}" if path else node.name


def activation_points(graph: fx.GraphModule) -> list[fx.Node]:
    """The quantize nodes of int8 activations (not of the graph input or constant weights), in order."""
    return [n for n in graph.graph.nodes if n.op == "call_function" and n.target in _qdq_ops()[0]
            and isinstance(n.args[0], fx.Node) and n.args[0].op == "call_function"]


def _upstream(node: fx.Node, names: set[str]) -> set[str]:
    """The activation quantize nodes (by name) whose values reach ``node``'s producer."""
    found, stack, seen = set(), list(node.args[0].all_input_nodes), set()
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.name in names or (n.op == "call_function" and n.target in _qdq_ops()[0] and n.args[0].op == "placeholder"):
            found.add(n.name)
            continue
        stack.extend(n.all_input_nodes)
    return found


class _Capture(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, names: set[str]) -> None:
        super().__init__(gm)
        self.names, self.values = names, {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.names:
            self.values[n.name] = out.detach().float().numpy()
        return out


def _batches(x: np.ndarray, dynamic: bool, size: int = 32):
    step = size if dynamic else 1
    for i in range(0, len(x), step):
        yield torch.as_tensor(x[i : i + step], dtype=torch.float32)


def layer_errors(quantized: nn.Module, x: np.ndarray) -> list[LayerError]:
    """Per-activation error of a ``QuantizedModel`` against its float twin on inputs ``x``, graph order."""
    graph = quantized.unfolded[0]
    twin = float_twin(graph)
    points = activation_points(graph)
    names = {p.name for p in points}
    producers = {p.name: p.args[0].name for p in points}
    qparams = {p.name: (float(p.args[1]), int(p.args[2])) for p in points}
    inputs = [n.name for n in graph.graph.nodes
              if n.op == "call_function" and n.target in _qdq_ops()[0] and n.args[0].op == "placeholder"]
    stats = {name: _Stats() for name in [*names, *inputs]}
    try:
        graph(torch.as_tensor(x[:2], dtype=torch.float32))
        dynamic = True
    except Exception:  # noqa: BLE001 - a static-batch graph refuses batch 2
        dynamic = False
    with torch.no_grad():
        for xb in _batches(x, dynamic):
            got = _Capture(graph, names | set(inputs))
            got.run(xb)
            ref = _Capture(twin, set(producers.values()) | {graph.graph.find_nodes(op="placeholder")[0].name})
            ref.run(xb)
            for name in names:
                scale, zero = qparams[name]
                stats[name].add(ref.values[producers[name]], (got.values[name] - zero) * scale)
            for name in inputs:
                node = next(n for n in graph.graph.nodes if n.name == name)
                scale, zero = float(node.args[1]), int(node.args[2])
                stats[name].add(xb.numpy(), (got.values[name] - zero) * scale)
    results = {name: stats[name].result() for name in stats}
    out = []
    for p in points:
        sqnr, cos, err = results[p.name]
        before = [results[u][0] for u in _upstream(p, names)]
        lost = max(0.0, min(before) - sqnr) if before else 0.0
        op = str(p.args[0].target).replace("aten.", "").replace(".default", "")
        out.append(LayerError(layer_name(p.args[0]), op, p.name, sqnr, cos, err, lost, *qparams[p.name]))
    return out


def worst(errors: list[LayerError], n: int = 5, key: str = "lost_db") -> list[LayerError]:
    """The ``n`` layers that lose the most (``lost_db``) or have the lowest SQNR (``key='sqnr_db'``)."""
    if key == "sqnr_db":
        return sorted(errors, key=lambda e: e.sqnr_db)[:n]
    return sorted(errors, key=lambda e: -getattr(e, key))[:n]


def sensitivity_order(errors: list[LayerError]) -> list[str]:
    """Distinct layer names, most sensitive first (largest ``lost_db``)."""
    order: list[str] = []
    for e in worst(errors, len(errors)):
        if e.name not in order:
            order.append(e.name)
    return order


def _numel(node: fx.Node) -> int | None:
    """Elements per sample of a node's value (from export metadata), or None if unknown."""
    val = node.meta.get("val")
    return int(np.prod([int(d) for d in val.shape[1:]])) if hasattr(val, "shape") else None


def tflite_layer_errors(path: str | Path, quantized: nn.Module, errors: list[LayerError], x: np.ndarray,
                        limit: int = 32) -> list[LayerError]:
    """Fill the ``tflite_*`` fields of ``errors`` from the int8 .tflite at ``path`` (in place; returned).

    Each activation is matched to the .tflite tensor with the same scale, zero point and size (the
    converter copies them from the graph; where a chain of ops shares one scale, e.g. conv -> ReLU6,
    the last op's output is the one the .tflite keeps); activations with no such tensor (fused
    away) stay None. Only the first ``limit`` inputs run (one at a time, the file's batch is 1).
    """
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "intended for debugging purposes only": that is what this is
        warnings.simplefilter("ignore", UserWarning)
        interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    details = [d for d in interp.get_tensor_details() if d["dtype"] == np.int8 and d["quantization"][0]]
    twin = float_twin(quantized.unfolded[0])
    graph_nodes = {n.name: n for n in quantized.unfolded[0].graph.nodes}
    matches: dict[str, int] = {}
    used: set[int] = set()
    for e in reversed(errors):  # from the output back: where ops share scales, the fused op's output wins
        numel = _numel(graph_nodes[e.node].args[0])
        for d in reversed(details):
            s, z = d["quantization"]
            if d["index"] in used or not np.isclose(s, e.scale, rtol=1e-6) or z != e.zero_point:
                continue
            if numel is not None and int(np.prod(d["shape"][1:])) != numel:
                continue
            matches[e.node], _ = d["index"], used.add(d["index"])
            break
    producers = {e.node: graph_nodes[e.node].args[0].name for e in errors}
    stats = {node: _Stats() for node in matches}
    in_scale, in_zero = inp["quantization"]
    with torch.no_grad():
        for xi in x[:limit]:
            sample = xi[None].astype(np.float32)
            ref = _Capture(twin, set(producers.values()))
            ref.run(torch.as_tensor(sample))
            nhwc = sample.ndim == 4 and list(inp["shape"]) != list(sample.shape)
            feed = sample.transpose(0, 2, 3, 1) if nhwc else sample
            if inp["dtype"] == np.int8:
                feed = np.clip(np.round(feed / in_scale + in_zero), -128, 127).astype(np.int8)
            interp.set_tensor(inp["index"], feed.reshape(inp["shape"]))
            interp.invoke()
            for node, idx in matches.items():
                d = next(t for t in details if t["index"] == idx)
                s, z = d["quantization"]
                value = (interp.get_tensor(idx).astype(np.float32) - z) * s
                want = ref.values[producers[node]]
                if value.ndim == 4 and want.ndim == 4:
                    value = value.transpose(0, 3, 1, 2)
                stats[node].add(want, value.reshape(want.shape))
    for e in errors:
        if e.node in stats:
            e.tflite_sqnr_db, e.tflite_cosine, e.tflite_max_abs_error = stats[e.node].result()
    return errors


def summary(errors: list[LayerError], n: int = 5) -> dict:
    """What goes into report.json: every layer (graph order) and the names of the worst ``n``."""
    return {
        "layers": [e.as_dict() for e in errors],
        "most_sensitive": [e.name for e in worst(errors, n)],
        "lowest_sqnr": [e.name for e in worst(errors, n, "sqnr_db")],
        "definition": "sqnr_db = 10 log10(sum x_float^2 / sum (x_float - x_int8)^2) over calibration inputs; "
                      "lost_db = the layer's inputs' SQNR minus its own",
    }


def format_table(errors: list[LayerError], n: int = 10) -> str:
    """The ``n`` most sensitive layers as a text table (for the console and benchmark logs)."""
    rows = [f"{'layer':32} {'op':14} {'SQNR dB':>8} {'lost dB':>8} {'cosine':>8} {'max err':>9} {'tflite dB':>9}"]
    for e in worst(errors, n):
        tfl = "-" if e.tflite_sqnr_db is None else f"{e.tflite_sqnr_db:9.2f}"
        rows.append(f"{e.name[:32]:32} {e.op[:14]:14} {e.sqnr_db:8.2f} {e.lost_db:8.2f} {e.cosine:8.5f} "
                    f"{e.max_abs_error:9.4f} {tfl:>9}")
    return "\n".join(rows)


def tflite_report(path: str | Path, quantized: nn.Module, x: np.ndarray, limit: int = 32) -> dict:
    """The layer-wise report of an exported int8 .tflite (PyTorch and .tflite columns) as report.json wants it.

    Also names the layer where the .tflite departs most from the fake-quant graph (``converter_worst``).
    """
    errors = tflite_layer_errors(path, quantized, layer_errors(quantized, x[:limit]), x, limit)
    out = summary(errors)
    gaps = [(e.sqnr_db - e.tflite_sqnr_db, e.name) for e in errors if e.tflite_sqnr_db is not None]
    if gaps:
        gap, name = max(gaps)
        out["converter_worst"] = {"layer": name, "sqnr_gap_db": round(gap, 3)}
    return out
