"""`edgecomp profile MODEL_FILE...`: latency on this machine, or on an Android device over adb.

Host (default): .tflite through LiteRT (XNNPACK) or .onnx through onnxruntime, in a fresh process:
mean, p50, p90, std, init time, peak memory; a per-op breakdown from onnxruntime's profiler (.onnx) or
the latency predictor (.tflite, labelled predicted). ``--device [SERIAL]`` runs TFLite's benchmark_model
on a phone instead (``--benchmark-binary``, see edgecomp/android/device.py for where to get it).
``--predict PROFILE`` adds the predicted latency (``host``: this machine, see profile/host_cpu.py).

``--calibrate PROFILE`` fits the profile's efficiencies to these runs (and the earlier runs it
recorded); with no MODEL_FILE it times edgecomp's built-in micro-benchmarks instead: ``--calibrate host``
on this machine (in under a minute), ``--calibrate NAME --device SERIAL`` on a phone. The fitted profile
is written to the user's profiles folder (``targets.user_dir``), never into the installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

NAME = "profile"
HELP = "measure latency on this machine or an Android device (adb); optionally predict or calibrate"
BINARY_ENV = "EDGECOMP_BENCHMARK_BINARY"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `edgecomp profile`."""
    p.add_argument("models", nargs="*", metavar="MODEL_FILE",
                   help=".tflite or .onnx file(s) (none with --calibrate: the built-in micro-benchmarks)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: 2 on the host, 4 on a device)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument("--device", nargs="?", const="", default=None, metavar="SERIAL",
                   help="run on an Android device over adb (the only one attached, or SERIAL)")
    p.add_argument("--benchmark-binary", metavar="PATH", default=os.environ.get(BINARY_ENV),
                   help=f"TFLite benchmark_model built for the device (or ${BINARY_ENV})")
    p.add_argument("--cores", choices=["big", "little", "all"], default="big", help="cores to pin threads to")
    p.add_argument("--delegate", choices=["xnnpack", "gpu", "nnapi"], default="xnnpack", help="device delegate")
    p.add_argument("--via", choices=["benchmark", "app"], default="benchmark",
                   help="device runs: TFLite's benchmark_model (default) or the android_demo app's BenchmarkActivity "
                        "(MODEL_FILE must be a bundle's .tflite; see edgecomp/android/via_app.py)")
    p.add_argument("--csv", metavar="OUT", help="device runs: pull benchmark_model's op-profiling CSV to OUT")
    p.add_argument("--no-op-profiling", action="store_true", help="skip the per-op breakdown")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a device run counts as hung")
    p.add_argument("--predict", metavar="PROFILE",
                   help="also predict the latency on this hardware profile ('host': this machine)")
    p.add_argument("--calibrate", metavar="PROFILE",
                   help="fit this hardware profile to the measured runs (no MODEL_FILE: to the built-in "
                        "micro-benchmarks, here for 'host' or on --device SERIAL) and write it to the user's "
                        "profiles folder")


def _validate(args: argparse.Namespace) -> list[Path]:
    from edgecomp.errors import ConfigError, ModelLoadError
    from edgecomp.export.base import FORMATS, format_of_file, runnable_names

    paths = [Path(m) for m in args.models]
    if not paths and not args.calibrate:
        raise ConfigError("no model file given", "pass MODEL_FILE(s), or --calibrate PROFILE to fit a profile on "
                          "the built-in micro-benchmarks")
    for path in paths:
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}", "check the path")
        plugin = format_of_file(path)
        if plugin is None or plugin.runner is None:
            files = ", ".join(FORMATS[n].filename for n in runnable_names())
            raise ModelLoadError(f"cannot profile {path.name}: expected one of {files}",
                                 "export one first with `edgecomp build`")
    for flag in ("runs", "warmup"):
        if getattr(args, flag) < (1 if flag == "runs" else 0):
            raise ConfigError(f"--{flag} must be {'at least 1' if flag == 'runs' else '0 or more'}", "")
    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads must be at least 1", "")
    if args.via == "app" and args.device is None:
        raise ConfigError("--via app runs on a device", "add --device [SERIAL]")
    if args.device is not None and args.via == "benchmark" and not args.benchmark_binary:
        raise ConfigError("--device needs --benchmark-binary PATH (TFLite's benchmark_model for the phone)",
                          f"or set ${BINARY_ENV}; see `edgecomp profile --help`")
    if args.calibrate and any(p.suffix != ".tflite" for p in paths):
        raise ConfigError("--calibrate fits the predictor of .tflite graphs", "profile .tflite files to calibrate")
    return paths


def _profile_host(path: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    from edgecomp.export.base import format_of_file
    from edgecomp.profile.host import measure_host

    plugin = format_of_file(path)
    latency = measure_host(plugin.name, path, threads=threads, runs=args.runs, warmup=args.warmup)
    result: dict[str, Any] = {"model": str(path), "source": latency.source, "threads": threads,
                              "latency": latency.model_dump(exclude={"source", "threads"})}
    if not args.no_op_profiling:
        if path.suffix == ".onnx":
            from edgecomp.profile.host_ops import onnx_op_profile

            result["per_op"] = onnx_op_profile(path, threads, runs=min(args.runs, 20))
            result["per_op_source"] = "measured:host"
        elif plugin.predictor_reads:
            from edgecomp.profile.predict import predict_latency

            pred = predict_latency(path, args.predict or "host", threads)
            result["per_op"] = [{"name": o.name, "node_type": o.name.split(":")[0], "avg_ms": o.ms,
                                 "percent": 100 * o.ms / pred.ms if pred.ms else 0.0} for o in pred.per_op]
            result["per_op_source"] = pred.source
    return result


def _profile_device(path: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    if args.via == "app":
        from edgecomp.android.via_app import profile_via_app

        out = profile_via_app(path, args.device or None, threads=threads, runs=args.runs, warmup=args.warmup,
                              timeout_s=args.timeout).to_dict()
        return {**out, "model": str(path)}
    from edgecomp.android.device import profile_on_device

    prof = profile_on_device(path, args.benchmark_binary, args.device or None, threads=threads, runs=args.runs,
                             warmup=args.warmup, cores=args.cores, delegate=args.delegate,
                             op_profiling=not args.no_op_profiling, csv_out=args.csv, timeout_s=args.timeout)
    out = prof.to_dict()
    out["model"] = str(path)
    out["per_op_source"] = prof.source
    return out


def _print(result: dict[str, Any]) -> None:
    lat = result["latency"]
    fmt = (lambda v, unit=" ms": "-" if v is None else f"{v:.3f}{unit}")
    print(f"{result['model']}  [{result['source']}, {result['threads']} threads]")
    print(f"  mean {fmt(lat.get('mean_ms'))}  p50 {fmt(lat.get('p50_ms'))}  p90 {fmt(lat.get('p90_ms'))}  "
          f"std {fmt(lat.get('std_ms'))}  init {fmt(lat.get('init_ms'))}  peak memory "
          f"{fmt(lat.get('peak_memory_mb'), ' MB')}")
    if "predicted" in result:
        pred = result["predicted"]
        print(f"  predicted {pred['ms']:.3f} ms [{pred['source']}, {pred['threads']} threads, {pred['dtype']}"
              f"{', ' + pred['calibration'] if pred.get('calibration', 'calibrated') != 'calibrated' else ''}]")
        for warning in pred.get("warnings", []):
            print(f"  warning: {warning}")
    per_op = sorted(result.get("per_op", []), key=lambda r: -r["avg_ms"])[:10]
    if per_op:
        print(f"  slowest ops [{result.get('per_op_source')}]:")
        for r in per_op:
            print(f"    {r['avg_ms']:9.3f} ms {r['percent']:6.1f}%  {r['node_type']:20s} {r['name'][:70]}")


def _host_arch() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64" if machine in ("x86_64", "amd64") else machine


def _calibrate(profile_name: str, results: list[dict[str, Any]]) -> None:
    from edgecomp.bundle import sha256_of
    from edgecomp.errors import ConfigError
    from edgecomp.profile.calibrate import Measurement, fit_profile, user_profile_path, write_profile
    from edgecomp.profile.host_calibrate import fit_host_family
    from edgecomp.profile.host_cpu import HOST_PROFILES
    from edgecomp.profile.predict import read_tflite_layers
    from edgecomp.targets import load_profile, packaged_dir, resolve_path

    profile = load_profile(profile_name)
    given = resolve_path("profiles", profile_name)
    inside_package = given.resolve().is_relative_to(packaged_dir("profiles").resolve())
    path = user_profile_path(profile.name) if inside_package else given  # never into the installed package
    measurements, seen = [], set()
    for r in results:
        arch = _host_arch() if r["source"] == "measured:host" else "arm64"
        if arch != profile.arch:
            raise ConfigError(f"runs measured on {arch} cannot calibrate the {profile.arch} profile {profile.name}",
                              "calibrate a device profile from --device runs and the host profile from host runs")
        layers, dtype = read_tflite_layers(r["model"])
        lat = r["latency"]
        measured = lat.get("p50_ms") or lat.get("mean_ms")
        sha = sha256_of(Path(r["model"]))
        seen.add((sha, r["threads"]))
        measurements.append(Measurement(Path(r["model"]).name, layers, dtype, r["threads"], measured, r["source"]))
        measurements[-1].name = f"{Path(r['model']).resolve()}#{sha[:12]}"
    for old in profile.calibration.get("runs", []):  # earlier runs whose files are still here
        file, _, sha = old["name"].partition("#")
        fresh = Path(file).is_file() and (sha, old["threads"]) not in {(s[:12], t) for s, t in seen}
        if fresh and sha256_of(Path(file)).startswith(sha):
            layers, dtype = read_tflite_layers(file)
            measurements.append(Measurement(old["name"], layers, dtype, old["threads"], old["measured_ms"],
                                            old.get("source", "")))
    if profile.name in HOST_PROFILES.values():  # a host template: the fit is this machine's ISA family's entry
        fitted, template = fit_host_family(profile, measurements,
                                           f"edgecomp profile --calibrate on {len(measurements)} runs")
        cal = fitted.calibration
        fitted = template.model_copy(update={"calibration": {**template.calibration, **{
            k: cal[k] for k in ("fitted_at", "runs", "median_abs_error_pct", "max_abs_error_pct")}}})
    else:
        fitted = fit_profile(profile, measurements)
        cal = fitted.calibration
    write_profile(fitted, path)
    print(f"calibrated {profile.name} on {len(measurements)} runs: median error {cal['median_abs_error_pct']}%, "
          f"max {cal['max_abs_error_pct']}%; written to {path}")


def _calibrate_microbench(args: argparse.Namespace) -> int:
    """--calibrate without model files: the built-in micro-benchmarks, here (host) or on --device."""
    from edgecomp.errors import ConfigError

    if args.device is None:
        from edgecomp.profile.host_calibrate import calibrate_host
        from edgecomp.profile.host_cpu import HOST_PROFILES, describe_host, read_host

        if args.calibrate not in ("host", *HOST_PROFILES.values()):
            raise ConfigError(f"micro-benchmarks timed on this machine cannot calibrate '{args.calibrate}'",
                              "use --calibrate host for this machine, or add --device SERIAL to fit a phone's profile")
        threads = (args.threads,) if args.threads else None
        profile, path = calibrate_host(args.calibrate, threads)
        family = read_host().family
        entry = profile.calibration["families"][family]
        print(f"calibrated {profile.name} for {family} ({describe_host()}) on {entry['runs']} micro-benchmark "
              f"runs: median error {entry['median_abs_error_pct']}%, max {entry['max_abs_error_pct']}%; "
              f"written to {path}")
        return 0
    from edgecomp.commands._profile_calibrate import calibrate_device

    threads = (args.threads,) if args.threads else (1, 4)
    profile, path = calibrate_device(args.calibrate, args.device or None, args.benchmark_binary, threads,
                                     runs=args.runs, warmup=args.warmup, timeout_s=args.timeout)
    cal = profile.calibration
    print(f"calibrated {profile.name} on {cal.get('device_model') or cal.get('device')} from "
          f"{len(cal['runs'])} micro-benchmark runs: median error {cal['median_abs_error_pct']}%, "
          f"max {cal['max_abs_error_pct']}%; written to {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Profile each file, print a table, write JSON if asked, and calibrate if asked."""
    paths = _validate(args)
    if not paths:
        return _calibrate_microbench(args)
    on_device = args.device is not None
    threads = args.threads or (4 if on_device else 2)
    results = []
    for path in paths:
        result = _profile_device(path, args, threads) if on_device else _profile_host(path, args, threads)
        if args.predict and path.suffix == ".tflite":
            from edgecomp.profile.predict import predict_latency

            pred = predict_latency(path, args.predict, threads)
            result["predicted"] = {"ms": pred.ms, "source": pred.source, "threads": threads, "dtype": pred.dtype,
                                   "calibration": pred.calibration, "warnings": pred.warnings}
        results.append(result)
        _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    if args.calibrate:
        _calibrate(args.calibrate, results)
    return 0
