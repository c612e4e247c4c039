"""Fit a hardware profile's efficiencies to measured latencies, and write them back to its YAML.

The fit minimises the squared log-ratio of predicted to measured latency over the measured runs
(scipy's ``least_squares``), with a weak pull towards the profile's current values so that a
parameter the runs cannot tell apart stays where it was. It fits the per-op-type efficiencies seen in
the runs (per dtype; memory-bound ops per runtime op name; ops outside XNNPACK as ``reference``), the
per-op overhead, the DRAM and cache bandwidths, the short-reduction penalties ``small_k`` and
``small_k_int8`` and, given runs at several thread counts, ``parallel_efficiency``,
``memory_parallel_efficiency`` and ``thread_sync_us``; peaks (clocks, FLOP per cycle) are facts about the silicon and stay fixed.
:func:`fit_scales` fits only a few scales, for a handful of whole-network figures (published ones).

A calibrated profile is written to the user's profiles folder (:func:`user_profile_path`), never into the
installed package; a host template keeps one fit per ISA family (:func:`with_family`).
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
from edgecomp.profile.predict import (
    COMPUTE_OPS,
    MEMORY_OPS,
    REFERENCE,
    LayerCost,
    efficiency_of,
    is_delegated,
    predict_from_layers,
)
from edgecomp.targets import HardwareProfile, user_dir

logger = logging.getLogger(__name__)
PRIOR_WEIGHT = 0.05
# fit_scales' pull towards the prior (log scale): a handful of figures must not move a scale far on its own
# (two figures of one network at two dtypes cannot tell compute from memory-bound time).
SCALE_PRIOR_WEIGHT = 0.3


@dataclass
class Measurement:
    """One measured run: the model's layers, its dtype, the thread count and the measured latency."""

    name: str
    layers: list[LayerCost]
    dtype: str
    threads: int
    measured_ms: float
    source: str = "measured:host"
    cores: dict[str, Any] | None = None  # the device's cores where they differ from the profile's (count, clock)

    def on(self, profile: HardwareProfile) -> HardwareProfile:
        """``profile`` with this run's device cores (itself when the run names none)."""
        if not self.cores:
            return profile
        return profile.model_copy(update={"cores": profile.cores.model_copy(update=self.cores), "prime_cores": None})


def _keys(measurements: list[Measurement]) -> list[str]:
    keys = set()
    for m in measurements:
        for layer in m.layers:
            if layer.op == "free":
                continue
            if not is_delegated(layer, m.dtype):
                base = REFERENCE
            else:
                base = layer.kind if layer.kind and layer.op in MEMORY_OPS else layer.op
            keys.add(base if m.dtype == "fp32" else f"{base}_{m.dtype}")
    return sorted(keys)


def _scalars(profile: HardwareProfile, measurements: list[Measurement]) -> list[tuple[str, float, float, float]]:
    """(field, start, lower, upper) of each scalar the fit adjusts besides the efficiencies."""
    out = [("overhead_us", max(profile.overhead_us, 0.5), 0.01, math.inf),
           ("memory_bandwidth_gbs", profile.memory_bandwidth_gbs, 0.1, math.inf),
           ("small_k", max(profile.small_k, 4.0), 0.5, math.inf),
           ("small_k_int8", max(profile.small_k if profile.small_k_int8 is None else profile.small_k_int8, 4.0),
            0.5, math.inf)]
    if profile.cache_mb:
        out.append(("cache_bandwidth_gbs", profile.cache_bandwidth_gbs or profile.memory_bandwidth_gbs, 0.1, math.inf))
    if any(m.threads > 1 for m in measurements):  # multi-thread runs tell how compute and memory scale
        mpe = profile.parallel_efficiency if profile.memory_parallel_efficiency is None \
            else profile.memory_parallel_efficiency
        out += [("parallel_efficiency", profile.parallel_efficiency, 0.05, 1.0),
                ("memory_parallel_efficiency", max(mpe, 0.05), 0.01, 1.0),
                ("thread_sync_us", max(profile.thread_sync_us, 1.0), 0.01, math.inf)]
    return out


def _with(profile: HardwareProfile, keys: list[str], scalars: list[str], theta: np.ndarray) -> HardwareProfile:
    eff = dict(profile.efficiency)
    for key, value in zip(keys, theta[: len(keys)]):
        eff[key] = float(min(math.exp(value), 1.0))
    update: dict[str, Any] = {"efficiency": eff}
    for name, value in zip(scalars, theta[len(keys):]):
        update[name] = float(math.exp(value))
        if name.endswith("parallel_efficiency"):
            update[name] = min(update[name], 1.0)
    return profile.model_copy(update=update)


def _start(profile: HardwareProfile, keys: list[str]) -> list[float]:
    values = []
    for key in keys:
        name, dtype = (key[: -len("_int8")], "int8") if key.endswith("_int8") else (key, "fp32")
        op = name if name in COMPUTE_OPS or name in MEMORY_OPS or name == REFERENCE else "elementwise"
        values.append(math.log(efficiency_of(profile, op, dtype, kind=name)))
    return values


def predicted_ms(profile: HardwareProfile, m: Measurement) -> float:
    """The profile's prediction for one measured run."""
    return predict_from_layers(m.layers, m.on(profile), m.threads, m.dtype).ms


def fit_profile(profile: HardwareProfile, measurements: list[Measurement]) -> HardwareProfile:
    """Return ``profile`` with efficiencies, overhead, bandwidths and small_k fitted to ``measurements``
    (and, given multi-thread runs, how compute and memory-bound work scale with threads).

    The returned profile's ``calibration`` block records when, from what, and the fit's errors.
    """
    from scipy.optimize import least_squares

    if len(measurements) < 2:
        raise ConfigError("calibration needs at least 2 measured runs",
                          "measure more models (or more dtypes/thread counts) before --calibrate")
    keys = _keys(measurements)
    scalars = _scalars(profile, measurements)
    names = [name for name, *_ in scalars]
    theta0 = np.asarray(_start(profile, keys) + [math.log(v) for _, v, _, _ in scalars])
    lower = np.log([1e-4] * len(keys) + [lo for _, _, lo, _ in scalars])
    upper = np.concatenate([np.zeros(len(keys)), np.log([hi for *_, hi in scalars])])
    measured = np.log([m.measured_ms for m in measurements])

    def residuals(theta: np.ndarray) -> np.ndarray:
        p = _with(profile, keys, names, theta)
        pred = np.log([max(predicted_ms(p, m), 1e-6) for m in measurements])
        return np.concatenate([pred - measured, PRIOR_WEIGHT * (theta - theta0)])

    result = least_squares(residuals, np.clip(theta0, lower + 1e-9, upper - 1e-9), bounds=(lower, upper),
                           x_scale=1.0, max_nfev=100 * len(theta0))
    fitted = _with(profile, keys, names, result.x)
    rows = [{"name": m.name, "dtype": m.dtype, "threads": m.threads, "measured_ms": round(m.measured_ms, 4),
             "predicted_ms": round(predicted_ms(fitted, m), 4), "source": m.source} for m in measurements]
    errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows]
    calibration: dict[str, Any] = {
        **{k: v for k, v in profile.calibration.items() if k not in ("runs", "status")},
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fitted": keys + names,
        "runs": rows,
        "median_abs_error_pct": round(100 * float(np.median(errors)), 2),
        "max_abs_error_pct": round(100 * float(np.max(errors)), 2),
    }
    logger.info("calibrated %s on %d runs: median error %.1f%%", profile.name, len(rows),
                calibration["median_abs_error_pct"])
    return fitted.model_copy(update={"calibration": calibration})


def family_entry_of(fitted: HardwareProfile, fitted_on: str) -> dict[str, Any]:
    """The values of a host profile fitted on this machine, as an entry of ``calibration.families``."""
    data = fitted.model_dump(mode="json", exclude_none=True)
    cal = fitted.calibration
    entry = {"fitted_on": fitted_on, "fitted_at": cal.get("fitted_at"), "clock_ghz": fitted.cores.clock_ghz,
             "median_abs_error_pct": cal.get("median_abs_error_pct"),
             "max_abs_error_pct": cal.get("max_abs_error_pct"), "runs": len(cal.get("runs", []))}
    for key in ("efficiency", "overhead_us", "thread_sync_us", "memory_bandwidth_gbs", "cache_bandwidth_gbs", "small_k",
                "small_k_int8", "parallel_efficiency", "memory_parallel_efficiency", "cache_mb", "l2_kb"):
        if key in data:
            entry[key] = {k: round(v, 4) for k, v in data[key].items()} if key == "efficiency" else \
                round(data[key], 4) if isinstance(data[key], float) else data[key]
    return entry


def with_family(template: HardwareProfile, family: str, entry: dict[str, Any]) -> HardwareProfile:
    """A host template whose ``calibration.families[family]`` is ``entry`` (the other families kept)."""
    families = dict(template.calibration.get("families") or {})
    families[family] = entry
    return template.model_copy(update={"calibration": {**template.calibration, "families": families}})


def user_profile_path(name: str) -> Path:
    """Where a calibrated profile ``name`` is written: the user's profiles folder, never the package."""
    return user_dir("profiles") / f"{name}.yaml"


class _NoAliases(yaml.SafeDumper):
    """A YAML dumper that writes a shared dict twice rather than as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_profile(profile: HardwareProfile, path: str | Path) -> Path:
    """Write ``profile`` to ``path`` as YAML (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = profile.model_dump(mode="json", exclude_none=True)
    data["efficiency"] = {k: round(v, 4) for k, v in data["efficiency"].items()}
    for key in ("overhead_us", "thread_sync_us", "memory_bandwidth_gbs", "small_k", "small_k_int8",
                "cache_bandwidth_gbs", "parallel_efficiency", "memory_parallel_efficiency"):
        if key in data:
            data[key] = round(data[key], 4)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.dump(data, Dumper=_NoAliases, sort_keys=False, width=120))
    tmp.replace(path)
    return path


def scaled_profile(profile: HardwareProfile, compute: float = 1.0, memory: float = 1.0,
                   parallel: float | None = None, memory_parallel: float | None = None) -> HardwareProfile:
    """``profile`` with every compute-op efficiency times ``compute``, every memory-bound op's efficiency and
    the bandwidths times ``memory`` (reference-kernel efficiencies unchanged), and the thread scalings set."""
    eff = {op: efficiency_of(profile, op, "fp32") for op in COMPUTE_OPS + MEMORY_OPS}
    eff.update(profile.efficiency)
    for key, value in eff.items():
        if not key.startswith(REFERENCE):
            factor = compute if key.split("_int8")[0] in COMPUTE_OPS else memory
            eff[key] = min(value * factor, 1.0)
    update: dict[str, Any] = {"efficiency": eff, "memory_bandwidth_gbs": profile.memory_bandwidth_gbs * memory}
    if profile.cache_bandwidth_gbs:
        update["cache_bandwidth_gbs"] = profile.cache_bandwidth_gbs * memory
    if parallel is not None:
        update["parallel_efficiency"] = parallel
    if memory_parallel is not None:
        update["memory_parallel_efficiency"] = memory_parallel
    return profile.model_copy(update=update)


def fit_scales(profile: HardwareProfile, measurements: list[Measurement]) -> tuple[HardwareProfile, dict[str, float]]:
    """Fit few parameters to few whole-network figures (published ones): one scale on compute efficiencies,
    one on memory-bound work and, when the figures span thread counts, the two thread scalings.

    Returns the fitted profile (:func:`scaled_profile`) and the fitted values by name.
    """
    from scipy.optimize import least_squares

    if not measurements:
        raise ConfigError("fitting scales needs at least one measurement", "add measurements")
    threads = {m.threads for m in measurements}
    mpe0 = profile.parallel_efficiency if profile.memory_parallel_efficiency is None \
        else profile.memory_parallel_efficiency
    names = ["compute", "memory"] + (["parallel", "memory_parallel"] if len(threads) > 1 else [])
    theta0 = np.array([0.0, 0.0] + ([profile.parallel_efficiency, mpe0] if len(threads) > 1 else []))
    lower = np.array([-3.0, -3.0] + [0.05, 0.01] * (len(threads) > 1))
    upper = np.array([3.0, 3.0] + [1.0, 1.0] * (len(threads) > 1))
    measured = np.log([m.measured_ms for m in measurements])

    def build(theta: np.ndarray) -> HardwareProfile:
        extra = theta[2:] if len(theta) > 2 else [None, None]
        return scaled_profile(profile, math.exp(theta[0]), math.exp(theta[1]), *extra)

    def residuals(theta: np.ndarray) -> np.ndarray:
        p = build(theta)
        pred = np.log([max(predicted_ms(p, m), 1e-6) for m in measurements])
        return np.concatenate([pred - measured, SCALE_PRIOR_WEIGHT * (theta - theta0)])

    result = least_squares(residuals, np.clip(theta0, lower + 1e-9, upper - 1e-9), bounds=(lower, upper))
    values = {n: float(math.exp(v)) if n in ("compute", "memory") else float(v) for n, v in zip(names, result.x)}
    return build(result.x), values
