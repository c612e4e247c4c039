"""Fit a hardware profile's efficiencies to measured latencies, and write them back to its YAML.

The fit minimises the squared log-ratio of predicted to measured latency over the measured runs
(scipy's ``least_squares``), with a weak pull towards the profile's current values so that a
parameter the runs cannot tell apart stays where it was. It fits the per-op-type efficiencies seen in
the runs (per dtype; memory-bound ops per runtime op name), the per-op overhead, the DRAM and cache
bandwidths and the short-reduction penalties ``small_k`` and ``small_k_int8``; peaks (clocks, FLOP per
cycle) are facts about the silicon and stay fixed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgecomp.errors import ConfigError
from edgecomp.profile.predict import COMPUTE_OPS, MEMORY_OPS, LayerCost, predict_from_layers
from edgecomp.targets import HardwareProfile

logger = logging.getLogger(__name__)
PRIOR_WEIGHT = 0.05


@dataclass
class Measurement:
    """One measured run: the model's layers, its dtype, the thread count and the measured latency."""

    name: str
    layers: list[LayerCost]
    dtype: str
    threads: int
    measured_ms: float
    source: str = "measured:host"


def _keys(measurements: list[Measurement]) -> list[str]:
    keys = set()
    for m in measurements:
        for layer in m.layers:
            if layer.op != "free":
                base = layer.kind if layer.kind and layer.op in MEMORY_OPS else layer.op
                keys.add(base if m.dtype == "fp32" else f"{base}_{m.dtype}")
    return sorted(keys)


def _with(profile: HardwareProfile, keys: list[str], theta: np.ndarray) -> HardwareProfile:
    eff = dict(profile.efficiency)
    for key, value in zip(keys, theta[: len(keys)]):
        eff[key] = float(min(math.exp(value), 1.0))
    overhead, bandwidth, small_k, cache_bw, small_k_int8 = (float(math.exp(v)) for v in theta[len(keys):])
    update = {"efficiency": eff, "overhead_us": overhead, "memory_bandwidth_gbs": bandwidth, "small_k": small_k,
              "small_k_int8": small_k_int8}
    if profile.cache_mb:
        update["cache_bandwidth_gbs"] = cache_bw
    return profile.model_copy(update=update)


def _start(profile: HardwareProfile, keys: list[str]) -> np.ndarray:
    from edgecomp.profile.predict import efficiency_of

    values = []
    for key in keys:
        name, dtype = (key[: -len("_int8")], "int8") if key.endswith("_int8") else (key, "fp32")
        op = name if name in COMPUTE_OPS or name in MEMORY_OPS else "elementwise"
        values.append(math.log(efficiency_of(profile, op, dtype, kind=name)))
    values += [math.log(max(profile.overhead_us, 0.5)), math.log(profile.memory_bandwidth_gbs),
               math.log(max(profile.small_k, 4.0)),
               math.log(profile.cache_bandwidth_gbs or profile.memory_bandwidth_gbs),
               math.log(max(profile.small_k if profile.small_k_int8 is None else profile.small_k_int8, 4.0))]
    return np.asarray(values)


def predicted_ms(profile: HardwareProfile, m: Measurement) -> float:
    """The profile's prediction for one measured run."""
    return predict_from_layers(m.layers, profile, m.threads, m.dtype).ms


def fit_profile(profile: HardwareProfile, measurements: list[Measurement]) -> HardwareProfile:
    """Return ``profile`` with efficiencies, overhead, bandwidth and small_k fitted to ``measurements``.

    The returned profile's ``calibration`` block records when, from what, and the fit's errors.
    """
    from scipy.optimize import least_squares

    if len(measurements) < 2:
        raise ConfigError("calibration needs at least 2 measured runs",
                          "measure more models (or more dtypes/thread counts) before --calibrate")
    keys = _keys(measurements)
    theta0 = _start(profile, keys)
    measured = np.log([m.measured_ms for m in measurements])

    def residuals(theta: np.ndarray) -> np.ndarray:
        p = _with(profile, keys, theta)
        pred = np.log([max(predicted_ms(p, m), 1e-6) for m in measurements])
        return np.concatenate([pred - measured, PRIOR_WEIGHT * (theta - theta0)])

    upper = np.concatenate([np.zeros(len(keys)), np.full(5, np.inf)])
    lower = np.concatenate([np.full(len(keys), math.log(1e-3)),
                            [math.log(0.01), math.log(0.1), math.log(0.5), math.log(0.1), math.log(0.5)]])
    result = least_squares(residuals, np.clip(theta0, lower + 1e-9, upper - 1e-9), bounds=(lower, upper),
                           x_scale=1.0, max_nfev=200 * len(theta0))
    fitted = _with(profile, keys, result.x)
    rows = [{"name": m.name, "dtype": m.dtype, "threads": m.threads, "measured_ms": round(m.measured_ms, 4),
             "predicted_ms": round(predicted_ms(fitted, m), 4), "source": m.source} for m in measurements]
    errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows]
    calibration: dict[str, Any] = {
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fitted": keys + ["overhead_us", "memory_bandwidth_gbs", "small_k", "small_k_int8"]
        + (["cache_bandwidth_gbs"] if profile.cache_mb else []),
        "runs": rows,
        "median_abs_error_pct": round(100 * float(np.median(errors)), 2),
        "max_abs_error_pct": round(100 * float(np.max(errors)), 2),
    }
    logger.info("calibrated %s on %d runs: median error %.1f%%", profile.name, len(rows),
                calibration["median_abs_error_pct"])
    return fitted.model_copy(update={"calibration": calibration})


def write_profile(profile: HardwareProfile, path: str | Path) -> Path:
    """Write ``profile`` to ``path`` as YAML (atomically: a temporary file renamed into place)."""
    path = Path(path)
    data = profile.model_dump(mode="json", exclude_none=True)
    data["efficiency"] = {k: round(v, 4) for k, v in data["efficiency"].items()}
    for key in ("overhead_us", "memory_bandwidth_gbs", "small_k", "small_k_int8", "cache_bandwidth_gbs"):
        if key in data:
            data[key] = round(data[key], 4)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, width=120))
    tmp.replace(path)
    return path
