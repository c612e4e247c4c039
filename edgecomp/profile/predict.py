"""Latency predicted from a hardware profile: a per-layer roofline times per-op-type efficiency.

Each layer costs ``max(MACs / (peak MAC/s × efficiency × utilisation), bytes moved / bandwidth)`` plus a
fixed per-op overhead; layers without MACs (adds, pooling, padding, quantize) cost bytes moved over an
efficiency-scaled bandwidth. Peaks come from the profile (clock × FLOP or int8 OP per cycle, summed over
the cores the threads run on, the fastest first); utilisation models the micro-kernels' blocks of output
channels (``gemm_tile``; ``<dtype>_narrow``: the narrower kernel XNNPACK takes for layers with fewer output
channels than a tile, its "nr2" kernels), output pixels (``gemm_rows``) and input channels (``gemm_kr``), and the loss on
short reductions (``small_k``, ``small_k_int8``). Memory-bound work speeds up with threads by
``memory_parallel_efficiency`` per extra thread (bandwidth does not grow like compute does), and every
op XNNPACK runs on several threads pays ``thread_sync_us`` per extra thread for handing out its work and
waiting for the last thread (what keeps networks of many small ops from speeding up with threads). A PAD that
feeds a convolution costs nothing: XNNPACK folds it into the convolution's padding. Efficiencies are per
op type and dtype (``conv``, ``pointwise``, ``depthwise``, ``fc``, ``elementwise``, ``pool``, ``softmax``,
``data``, ``quantize``; ``<type>_int8`` for int8) and are fitted from measured runs by
:mod:`edgecomp.profile.calibrate`.

An op XNNPACK does not take (``LayerCost.delegated`` False, or None and absent from the delegate's
tables for its dtype) runs in TFLite's own kernel, single-threaded, at the ``reference`` efficiency
(``reference_int8`` for int8); the prediction names such ops in a warning. A profile that no
measurement calibrated marks every prediction "uncalibrated prior".

Two entry points: :func:`predict_latency` reads an exported ``.tflite`` graph
(:mod:`edgecomp.profile.tflite_layers`); :func:`predict_from_layers` takes a list of :class:`LayerCost`,
which :func:`layers_from_torch` (:mod:`edgecomp.profile.torch_layers`) builds from a PyTorch model
without exporting it (cheap, for planners).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecomp.errors import ConfigError
from edgecomp.targets import HardwareProfile

COMPUTE_OPS = ("conv", "pointwise", "depthwise", "fc")
MEMORY_OPS = ("elementwise", "pool", "softmax", "data", "quantize")
REFERENCE = "reference"  # the efficiency key of ops that run outside XNNPACK
UNCALIBRATED = "uncalibrated prior"
_FALLBACK = {"pointwise": "conv", "data": "elementwise", "quantize": "elementwise", "softmax": "elementwise",
             "pool": "elementwise"}
_DEFAULT_EFF = {"conv": 0.5, "depthwise": 0.25, "fc": 0.3, "elementwise": 0.3, REFERENCE: 0.03}


@dataclass(frozen=True)
class LayerCost:
    """The cost-relevant facts of one layer: op type, MACs, bytes moved, the GEMM shape, and delegation."""

    op: str
    macs: float = 0.0
    weight_bytes: float = 0.0
    act_bytes: float = 0.0
    out_channels: int = 0
    reduction: int = 0
    name: str = ""
    kind: str = ""
    taps: int = 1  # kernel positions (kh*kw): the reduction is taps x input channels
    delegated: bool | None = None  # runs in XNNPACK (None: as the delegate's op tables say for its kind)

    @property
    def bytes(self) -> float:
        """Bytes moved: weights plus input and output activations."""
        return self.weight_bytes + self.act_bytes


@dataclass
class OpPrediction:
    """Predicted time of one layer and what bounds it (``compute``, ``memory``, ``reference`` or ``free``)."""

    name: str
    op: str
    ms: float
    bound: str
    macs: float
    bytes: float


@dataclass
class Prediction:
    """A predicted latency, per layer, labelled ``predicted:<profile>``, with its warnings."""

    ms: float
    per_op: list[OpPrediction] = field(default_factory=list)
    source: str = "predicted"
    threads: int = 1
    dtype: str = "fp32"
    calibration: str = "calibrated"  # or "uncalibrated prior": the profile was never fitted to measurements
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return asdict(self)


def is_calibrated(profile: HardwareProfile) -> bool:
    """Whether measurements stand behind ``profile``: fitted runs, published figures, or a fitted ISA family."""
    cal = profile.calibration
    return cal.get("status") != UNCALIBRATED and bool(cal.get("runs") or cal.get("published") or cal.get("families"))


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
    default = op if op in _DEFAULT_EFF else "elementwise" if op in MEMORY_OPS else "conv"
    return _DEFAULT_EFF[default]


def _core_rates(profile: HardwareProfile, dtype: str) -> list[float]:
    per_core = []
    for spec in ([profile.prime_cores] if profile.prime_cores else []) + [profile.cores]:
        ops = spec.int8_ops_per_cycle if dtype == "int8" else spec.fp32_flops_per_cycle
        per_core += [spec.clock_ghz * 1e9 * ops / 2.0] * spec.count
    return per_core


def peak_macs_per_s(profile: HardwareProfile, threads: int, dtype: str) -> float:
    """Peak multiply-accumulates per second of ``threads`` threads on the fastest cores first."""
    used = _core_rates(profile, dtype)[: max(1, threads)]
    return used[0] + profile.parallel_efficiency * sum(used[1:])


def memory_speedup(profile: HardwareProfile, threads: int) -> float:
    """How much faster memory-bound work runs on ``threads`` threads than on one."""
    cores = (profile.prime_cores.count if profile.prime_cores else 0) + profile.cores.count
    extra = max(0, min(threads, cores) - 1)
    per_thread = (profile.parallel_efficiency if profile.memory_parallel_efficiency is None
                  else profile.memory_parallel_efficiency)
    return 1.0 + per_thread * extra


def _utilisation(layer: LayerCost, profile: HardwareProfile, dtype: str) -> float:
    util = 1.0
    tile = profile.gemm_tile.get(dtype) or profile.gemm_tile.get("fp32")
    narrow = profile.gemm_tile.get(f"{dtype}_narrow")
    if tile and narrow and layer.out_channels < tile:  # fewer output channels than a tile: a narrower kernel
        tile = narrow
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


def is_delegated(layer: LayerCost, dtype: str) -> bool:
    """Whether XNNPACK runs ``layer``: as recorded, else as the delegate's tables say for its kind."""
    if layer.delegated is not None or layer.op == "free":
        return layer.delegated is not False or layer.op == "free"
    if not layer.kind:
        return True  # convolutions, linear layers, activations folded into them
    from edgecomp.profile.delegation import statically_delegated

    return statically_delegated(layer.kind, dtype)


def predict_from_layers(layers: list[LayerCost], profile: HardwareProfile, threads: int = 1,
                        dtype: str | None = None) -> Prediction:
    """Sum the per-layer roofline costs of ``layers`` on ``profile`` with ``threads`` threads."""
    dtype = dtype or "fp32"
    if dtype not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"cannot predict latency for dtype '{dtype}'", "use fp32, fp16 or int8")
    peak = peak_macs_per_s(profile, threads, dtype)
    one_core = peak_macs_per_s(profile, 1, dtype)
    speedup = memory_speedup(profile, threads)
    dram = profile.memory_bandwidth_gbs * 1e9
    cache_bytes = profile.cache_mb * 1e6
    cache = (profile.cache_bandwidth_gbs or profile.memory_bandwidth_gbs) * 1e9 if cache_bytes else dram
    weights_bw = dram if cache_bytes and sum(la.weight_bytes for la in layers) > cache_bytes else cache
    overhead = profile.overhead_us * 1e-6
    sync = profile.thread_sync_us * 1e-6 * (min(threads, len(_core_rates(profile, dtype))) - 1)
    per_op, undelegated = [], []
    for layer in layers:
        if layer.op == "free":
            per_op.append(OpPrediction(layer.name, layer.op, 0.0, "free", 0.0, layer.bytes))
            continue
        act_bw = cache if not cache_bytes or layer.act_bytes < cache_bytes else dram
        memory = layer.weight_bytes / weights_bw + layer.act_bytes / act_bw
        if profile.l2_kb and layer.op in ("conv", "pointwise", "fc") and layer.weight_bytes > profile.l2_kb * 1024:
            rows = layer.macs / max(layer.out_channels * layer.reduction, 1)  # output pixels (GEMM M)
            memory += layer.weight_bytes * math.ceil(rows / profile.gemm_rows) / cache
        if not is_delegated(layer, dtype):  # TFLite's own kernel: one thread, its own efficiency
            undelegated.append(layer.kind or layer.op)
            ref = efficiency_of(profile, REFERENCE, dtype)
            compute = layer.macs / (one_core * ref) if layer.macs else 0.0
            seconds = max(compute, memory / ref) + overhead
            per_op.append(OpPrediction(layer.name, layer.op, seconds * 1e3, "reference", layer.macs, layer.bytes))
            continue
        if layer.op in COMPUTE_OPS and layer.macs > 0:
            compute = layer.macs / (peak * efficiency_of(profile, layer.op, dtype) * _utilisation(layer, profile, dtype))
            memory /= speedup
        else:
            compute, memory = 0.0, memory / efficiency_of(profile, layer.op, dtype, layer.kind) / speedup
        bound = "compute" if compute >= memory else "memory"
        seconds = max(compute, memory) + overhead + sync
        per_op.append(OpPrediction(layer.name, layer.op, seconds * 1e3, bound, layer.macs, layer.bytes))
    total = sum(p.ms for p in per_op)
    pred = Prediction(ms=total, per_op=per_op, source=f"predicted:{profile.name}", threads=threads, dtype=dtype)
    if undelegated:
        from edgecomp.profile.delegation import undelegated_warning

        ref_ms = sum(p.ms for p in per_op if p.bound == "reference")
        pred.warnings.append(undelegated_warning(undelegated, dtype, ref_ms, total))
    if not is_calibrated(profile):
        pred.calibration = UNCALIBRATED
        pred.warnings.append(f"{profile.name} is an {UNCALIBRATED}: no measurement calibrated it, so this "
                             "prediction may be off by 2x or more (`edgecomp profile --calibrate` fits one)")
    return pred


def predict_latency(tflite_path: str | Path, profile: HardwareProfile | str, threads: int = 1,
                    dtype: str | None = None) -> Prediction:
    """Predict the latency of an exported .tflite model on ``profile`` (a HardwareProfile or its name;
    a host profile's name gives this machine, see :func:`edgecomp.profile.host_cpu.resolve_profile`)."""
    if isinstance(profile, str):
        from edgecomp.profile.host_cpu import resolve_profile

        profile = resolve_profile(profile)
    layers, file_dtype = read_tflite_layers(tflite_path)
    return predict_from_layers(layers, profile, threads, dtype or file_dtype)


# re-exported (they need LayerCost, defined above)
from edgecomp.profile.tflite_layers import read_tflite_layers
from edgecomp.profile.torch_layers import layers_from_torch

__all__ = ["COMPUTE_OPS", "MEMORY_OPS", "LayerCost", "OpPrediction", "Prediction", "efficiency_of",
           "is_calibrated", "layers_from_torch", "memory_speedup", "peak_macs_per_s", "predict_from_layers",
           "predict_latency", "read_tflite_layers"]
