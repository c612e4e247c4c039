"""Latency predictor vs measurements: this machine (LiteRT, fp32 and int8, 1 and 2 threads) and published figures.

Part 1, this machine. The host profile is derived at run time from /proc/cpuinfo (cores, clock, vector
ISA and its peaks: edgecomp.profile.host_cpu.host_profile) and its efficiencies are fitted for this
machine's ISA family. Every architecture in benchmarks/predictor_models.py is exported to .tflite (fp32,
and int8 as edgecomp's quantize.int8 builds it) and timed here with LiteRT (XNNPACK) by the product's own
measuring loop (edgecomp.profile.timed_runs): every file at every thread count once per round, ROUNDS
shuffled rounds, the fastest run counting; 1 thread as thread CPU time, 2 threads as wall time, leaving
out rounds during which the process did not have a CPU for each thread (another process held one). A
measurement with no other round is a loaded machine's: it is marked * in the table, left out of the fit,
and the share within ±10 % is also printed without it. The load average before and after and how far
the rounds' medians lie above the fastest runs say how quiet the machine was. The profile is calibrated on the CALIBRATION
architectures only (small networks plus op micro-benchmarks, at both thread counts), then predicts the
EVALUATION architectures, which share no family with them. Goal: >= 90 % of the held-out predictions
within ±10 %. ``--write-host-family`` stores the fit as this ISA family's entry in
edgecomp/resources/profiles/host-x86.yaml (calibration.families). ``--save-times``/``--load-times`` keep
one run's timings to work on the model without timing again.

Part 2, published figures (benchmarks/published_latency.yaml, each with its source). For every shipped
profile with figures, a few parameters (one scale on compute efficiencies, one on memory-bound work and,
where the figures span thread counts, the two thread scalings) are fitted leave-one-model-out: each
model's figures are predicted from a fit to the other models' figures only. Prints the figures used,
each held-out error and a stated confidence per profile; profiles with no figure are reported as
uncalibrated priors. Goal: >= 90 % of the figures within ±15 % held out. ``--write-profiles`` writes the
fit to all figures, and the validation, into the shipped profiles.

Run: nice .venv/bin/python benchmarks/predictor.py  (10+ minutes the first time on 2 cores, mostly exports,
cached in ~/.cache/edgecomp/predictor-v2; then about 2 minutes of timing, measured afresh unless --load-times).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.predictor_models import (
    CALIBRATION,
    EVALUATION,
    mobilenet_v1,
    mobilenet_v2,
    mobilenet_v3,
    squeezenet,
)
from edgecomp.profile.calibrate import Measurement, fit_scales, predicted_ms, scaled_profile, write_profile
from edgecomp.profile.host_calibrate import fit_host_family
from edgecomp.profile.host_cpu import HOST_PROFILES, host_profile, read_host
from edgecomp.profile.predict import read_tflite_layers
from edgecomp.profile.timed_runs import (
    CLEAN_CPU_SHARE,
    Timed,
    load_average,
    time_rounds,
    time_tflite,
    to_measurements,
)
from edgecomp.targets import available, load_profile, packaged_dir

ROUNDS = 8  # shuffled rounds: every file at every thread count once per round
RUNS, BUDGET_S = 40, 0.1  # per round: up to RUNS runs, at least 3, as many as fit in BUDGET_S
CACHE = Path(os.environ.get("EDGECOMP_PREDICTOR_CACHE", "~/.cache/edgecomp/predictor-v2")).expanduser()
PUBLISHED = Path(__file__).with_name("published_latency.yaml")
PHONE_MODELS = {"mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2,
                "mobilenet_v3_large": lambda: mobilenet_v3(True), "mobilenet_v3_small": lambda: mobilenet_v3(False),
                "squeezenet": squeezenet}


def export(name: str, factory, side: int, dtype: str) -> Path:
    """Export (or reuse the cached) .tflite of one architecture at one dtype with edgecomp's exporter.

    int8 is what edgecomp's quantize.int8 builds: full integer, float I/O, calibrated on random inputs.
    """
    path = CACHE / f"{name}_{dtype}.tflite"
    if path.is_file():
        return path
    import torch

    from edgecomp.compress.base import ExportOptions
    from edgecomp.compress.pt2e import QuantSettings
    from edgecomp.compress.quantize import ptq
    from edgecomp.export.tflite import export_tflite
    from edgecomp.spec import ModelSpec

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = factory().eval()
    shape = [1, 3, side, side]
    if dtype == "int8":
        calib = np.random.default_rng(0).standard_normal([8, *shape[1:]]).astype(np.float32)
        model = ptq(model, QuantSettings(), calib, shape)
    tmp = path.with_suffix(".tmp")
    export_tflite(model, ModelSpec(name=name, input_shape=shape), ExportOptions(dtype=dtype), tmp)
    tmp.replace(path)
    return path


def host_part(threads: tuple[int, ...], rounds: int, write_family: bool, save_times: str | None = None,
              load_times: str | None = None) -> list[float]:
    """Derive the host profile, calibrate on CALIBRATION, predict EVALUATION; print the table; return |errors|."""
    info = read_host()
    print(f"machine: {info.isa}, {info.model or 'unknown model'}, {info.cores} cores at "
          f"{info.clock_ghz or 0:g} GHz (ISA family {info.family})")
    models = {**{("cal", k): v for k, v in CALIBRATION.items()}, **{("eval", k): v for k, v in EVALUATION.items()}}
    t0 = time.perf_counter()
    files = {(role, name, dt): export(name, f, side, dt) for (role, name), (f, side) in models.items()
             for dt in ("fp32", "int8")}
    print(f"exported/cached {len(files)} .tflite files in {time.perf_counter() - t0:.0f} s")
    t0, before = time.perf_counter(), load_average()
    if load_times:  # timings saved by an earlier run (--save-times): the model's development without re-timing
        saved = json.loads(Path(load_times).read_text())
        timed = {(tuple(key), t): Timed(**saved[f"{key[1]}:{key[2]}:{t}"]) for key in files for t in threads}
        load = saved["_load"]
        print(f"timings loaded from {load_times}, measured with {load}")
    else:
        timer = functools.partial(time_tflite, runs=RUNS, budget_s=BUDGET_S, warmup=3)
        timed = time_rounds(files, threads, timer, rounds, extra_rounds=rounds)
        load = f"{before} before, {load_average()} after"
        print(f"measured {len(files)} models x threads {list(threads)} x {rounds} shuffled rounds (and up to "
              f"{rounds} more of those with no uncontended round) in {time.perf_counter() - t0:.0f} s (LiteRT, up "
              f"to {RUNS} runs or {BUDGET_S:g} s per round; 1 thread: thread CPU time, more: wall time; the "
              f"fastest run over the rounds counts)\n  {load}")
    if save_times:
        saved = {f"{key[1]}:{key[2]}:{t}": dataclasses.asdict(v) for (key, t), v in timed.items()}
        Path(save_times).write_text(json.dumps({**saved, "_load": load}))
    excess = [100 * t.load_excess for t in timed.values()]
    print(f"  the best round's median lies above the fastest run by {statistics.median(excess):.1f}% (median "
          f"over files), {max(excess):.1f}% at most")
    contended = {key for key, t in timed.items() if t.contended}
    multi = [key for key in timed if key[1] > 1]
    print(f"  multi-thread rounds during which the process had less than {CLEAN_CPU_SHARE:g} of a CPU per thread "
          "(another process held one) do not count; "
          f"{sum(k in contended for k in multi)} of {len(multi)} multi-thread measurements had no other round "
          "(marked * below: a loaded machine's time)\n")
    runs = dict(zip(timed, to_measurements(files, timed, lambda key, t: f"{key[1]}:{key[2]}:{t}t")))
    template = load_profile(HOST_PROFILES.get(info.arch, "host-x86"))
    prior = host_profile(template)
    core = prior.cores
    print(f"{prior.description}\npeaks {core.fp32_flops_per_cycle:g} fp32 FLOP and {core.int8_ops_per_cycle:g} "
          f"int8 ops per cycle per core at {core.clock_ghz:g} GHz")
    t0 = time.perf_counter()
    calibration = [m for key, m in runs.items() if key[0][0] == "cal" and key not in contended]
    fitted, with_fit = fit_host_family(template, calibration, f"benchmarks/predictor.py, threads {list(threads)}")
    print(f"{template.name} calibrated for {info.family} on {len(calibration)} timings ({len(CALIBRATION)} "
          f"architectures x 2 dtypes x {len(threads)} thread counts, less the loaded ones) in {time.perf_counter() - t0:.0f} s; fitted: "
          + ", ".join(f"{k}={v:.3g}" for k, v in sorted(fitted.efficiency.items()))
          + f", overhead_us={fitted.overhead_us:.3g}, thread_sync_us={fitted.thread_sync_us:.3g}, bandwidth_gbs={fitted.memory_bandwidth_gbs:.3g}, "
          f"small_k={fitted.small_k:.3g}, small_k_int8={fitted.small_k_int8:.3g}, "
          f"parallel_efficiency={fitted.parallel_efficiency:.3g}, "
          f"memory_parallel_efficiency={fitted.memory_parallel_efficiency or 0:.3g}\n")
    if write_family:
        target = packaged_dir("profiles") / f"{template.name}.yaml"
        write_profile(with_fit, target)
        print(f"wrote the {info.family} family into {target}\n")
    print(f"{'architecture (evaluation set)':30s} {'dtype':5s} {'thr':>3s} {'MMACs':>8s} {'measured':>9s} "
          f"{'predicted':>9s} {'error':>7s} {'prior':>7s}")
    errors: dict[tuple[str, int], list[float]] = {}
    loaded: dict[tuple[str, int], list[bool]] = {}
    for ((role, name, dt), t), m in sorted(runs.items()):
        if role != "eval":
            continue
        pred = predicted_ms(fitted, m)
        err = pred / m.measured_ms - 1
        errors.setdefault((dt, t), []).append(abs(err))
        loaded.setdefault((dt, t), []).append(((role, name, dt), t) in contended)
        macs = sum(layer.macs for layer in m.layers) / 1e6
        mark = "*" if ((role, name, dt), t) in contended else " "
        print(f"{name:30s} {dt:5s} {t:3d} {macs:8.1f} {m.measured_ms:7.3f}ms{mark}{pred:7.3f}ms {100 * err:+6.1f}% "
              f"{100 * (predicted_ms(prior, m) / m.measured_ms - 1):+6.0f}%")
    print(f"\n{'configuration':20s} {'predictions':>11s} {'within ±5%':>10s} {'within ±10%':>11s} "
          f"{'median |error|':>14s} {'max |error|':>11s} {'loaded (*)':>10s}")
    everything = [e for errs in errors.values() for e in errs]
    rows = [(f"{dt}, {t} thread(s)", errs, loaded[(dt, t)]) for (dt, t), errs in sorted(errors.items())]
    all_marks = [mark for marks in loaded.values() for mark in marks]
    for label, errs, marks in [*rows, ("all", everything, all_marks)]:
        print(f"{label:20s} {len(errs):11d} {sum(e <= 0.05 for e in errs):10d} {sum(e <= 0.10 for e in errs):11d} "
              f"{100 * statistics.median(errs):13.1f}% {100 * max(errs):10.1f}% {sum(marks):10d}")
    print(f"{info.isa} ({info.family}): {sum(e <= 0.10 for e in everything)} of {len(everything)} held-out host "
          "predictions within ±10%:", end=" ")
    _distribution(everything, 0.10)
    if any(all_marks):
        clean = [e for e, mark in zip(everything, all_marks) if not mark]
        print(f"without the {sum(all_marks)} loaded (*) measurements:", end=" ")
        _distribution(clean, 0.10)
    return everything


def _distribution(errors: list[float], goal: float) -> None:
    within = sum(e <= goal for e in errors)
    print(f"error distribution over {len(errors)} predictions: within ±5%: {sum(e <= 0.05 for e in errors)}, "
          f"±10%: {within}, ±15%: {sum(e <= 0.15 for e in errors)}, ±20%: {sum(e <= 0.20 for e in errors)}; "
          f"median |error| {100 * statistics.median(errors):.1f}%, max {100 * max(errors):.1f}%")
    print(f"goal >= 90% within ±{100 * goal:.0f}%: {100 * within / len(errors):.0f}% -> "
          f"{'met' if within >= 0.9 * len(errors) else 'NOT met'}")


def _confidence(errors: list[float]) -> str:
    """A stated confidence from held-out errors: high (all within ±10 %), medium (median within ±15 % and
    three quarters within ±15 %), else low."""
    within15 = sum(e <= 0.15 for e in errors) / len(errors)
    level = ("high" if max(errors) <= 0.10 else "medium" if statistics.median(errors) <= 0.15 and within15 >= 0.75
             else "low")
    return (f"{level} ({len(errors)} held-out figures, median |error| {100 * statistics.median(errors):.1f}%, "
            f"max {100 * max(errors):.1f}%)")


def published_part(write_profiles: bool) -> list[float]:
    """Leave-one-model-out validation of every shipped profile on the published figures; return |errors|."""
    data = yaml.safe_load(PUBLISHED.read_text())
    sources, devices = data["sources"], data["devices"]
    print("\nsources:")
    for key, src in sources.items():
        print(f"  [{key}] {' '.join(src['title'].split())}\n      {src['url']}")
    figures = data["measurements"]
    needed = {(f["model"], f["dtype"]) for f in figures}
    files = {key: export(f"{key[0]}_224", PHONE_MODELS[key[0]], 224, key[1]) for key in sorted(needed)}
    layers = {key: read_tflite_layers(path)[0] for key, path in files.items()}
    all_errors: list[float] = []
    for name in sorted(n for n in available("profiles") if not n.startswith("host")):
        base = _prior(load_profile(name))
        used = {d: dev for d, dev in devices.items() if dev["profile"] == name}
        rows = [f for f in figures if f["device"] in used]
        if not rows:
            print(f"\n{name}: no public measurement -> uncalibrated prior (its description and every prediction "
                  "say so)")
            continue
        runs = [Measurement(f["model"], layers[(f["model"], f["dtype"])], f["dtype"], f["threads"], f["ms"],
                            f"published:{f['source']}", used[f["device"]].get("cores")) for f in rows]
        print(f"\n{name}: leave-one-model-out on " + "; ".join(f"{d} = {dev['description']}" for d, dev in used.items()))
        print(f"  {'model (224x224)':20s} {'device':8s} {'dtype':5s} {'thr':>3s} {'published':>9s} {'prior':>8s} "
              f"{'held-out':>8s} {'error':>7s}  fitted on the other models")
        errors = [0.0] * len(runs)
        for model in sorted({r.name for r in runs}):
            fitted, values = fit_scales(base, [r for r in runs if r.name != model])
            for i, (f, r) in enumerate(zip(rows, runs)):
                if r.name != model:
                    continue
                pred, before = predicted_ms(fitted, r), predicted_ms(base, r)
                err = pred / r.measured_ms - 1
                errors[i] = abs(err)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in values.items())
                print(f"  {model:20s} {f['device']:8s} {r.dtype:5s} {r.threads:3d} {r.measured_ms:7.1f}ms "
                      f"{before:6.1f}ms {pred:6.1f}ms {100 * err:+6.1f}%  {shown}")
        confidence = _confidence(errors)
        print(f"  confidence: {confidence}")
        all_errors += errors
        if write_profiles:
            _, values = fit_scales(base, runs)
            _write_validated(base, values, rows, errors, confidence)
    print("\npublished figures, held out:", end=" ")
    _distribution(all_errors, 0.15)
    return all_errors


def _prior(profile):
    """A shipped profile as it was before an earlier ``--write-profiles`` fitted it to the published figures
    (the fit undone), so that each held-out figure is predicted without having seen it."""
    published = profile.calibration.get("published")
    if not published:
        return profile
    fitted, prior = published["fitted"], published["prior"]
    undone = scaled_profile(profile, 1 / fitted["compute"], 1 / fitted["memory"], prior["parallel_efficiency"],
                            prior.get("memory_parallel_efficiency"))
    return undone.model_copy(update={"calibration": {}, "memory_parallel_efficiency": prior.get(
        "memory_parallel_efficiency"), "description": profile.description.split(" (validated on")[0]})


def _write_validated(base, values: dict[str, float], rows: list[dict], errors: list[float], confidence: str) -> None:
    """Write the fit to all of a profile's figures, and the validation, into the shipped profile."""
    fitted = scaled_profile(base, values["compute"], values["memory"], values.get("parallel"),
                            values.get("memory_parallel"))
    description = base.description.split(" (validated on")[0].split(" (uncalibrated prior")[0]
    cal = {"published": {"data": "benchmarks/published_latency.yaml",
                         "fitted": {k: round(v, 6) for k, v in values.items()},
                         "prior": {"parallel_efficiency": base.parallel_efficiency,
                                   "memory_parallel_efficiency": base.memory_parallel_efficiency},
                         "figures": [{**{k: r[k] for k in ("device", "model", "dtype", "threads", "ms", "source")},
                                      "held_out_error_pct": round(100 * e, 1)} for r, e in zip(rows, errors)],
                         "confidence": confidence}}
    fitted = fitted.model_copy(update={
        "calibration": cal, "description": f"{description} (validated on {len(rows)} published figures, "
                                           f"confidence {confidence.split(' ')[0]})"})
    target = packaged_dir("profiles") / f"{base.name}.yaml"
    write_profile(fitted, target)
    print(f"  wrote {target}")


def main() -> None:
    """Run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="host thread counts (default 1 2)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"shuffled host rounds (default {ROUNDS})")
    parser.add_argument("--save-times", metavar="JSON", help="write the host timings to JSON")
    parser.add_argument("--load-times", metavar="JSON", help="use host timings saved by --save-times, time nothing")
    parser.add_argument("--skip-host", action="store_true", help="only the published figures")
    parser.add_argument("--skip-published", action="store_true", help="only this machine")
    parser.add_argument("--write-host-family", action="store_true",
                        help="store the host fit as this ISA family's entry in the shipped host profile")
    parser.add_argument("--write-profiles", action="store_true",
                        help="write the fits to the published figures into the shipped profiles")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not args.skip_host:
        host_part(tuple(args.threads), args.rounds, args.write_host_family, args.save_times, args.load_times)
    if not args.skip_published:
        published_part(args.write_profiles)


if __name__ == "__main__":
    main()
