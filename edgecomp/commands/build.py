"""`edgecomp build`: compress, export, check and profile a model for a target, into a bundle."""

from __future__ import annotations

import argparse
import re

from edgecomp.errors import ConfigError

NAME = "build"
HELP = "compress, export, parity-check and profile a model for a target, writing a bundle"


def _shape(text: str) -> list[int]:
    """N,C,H,W (or NxCxHxW): positive sizes, each one given; '1,3,x,8' or '1,,8' is an error."""
    try:
        dims = [int(d) for d in re.split(r"[,x]", text.strip().lower())]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape like 1,3,224,224") from exc
    if any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape of positive sizes")
    return dims


def _at_least_one(text: str) -> int:
    """A count of 1 or more (runs, threads)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of 1 or more")
    return value


def _percent(text: str) -> float:
    """A percentage above 0 and at most 100."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"'{text}' is not a percentage above 0, e.g. 2")
    return value


def _quantity(unit: str, scale: dict[str, float]):
    def parse(text: str) -> float:
        t = text.strip().lower()
        for suffix, factor in sorted(scale.items(), key=lambda kv: -len(kv[0])):
            if t.endswith(suffix):
                t, mult = t[: -len(suffix)], factor
                break
        else:
            mult = 1.0
        try:
            value = float(t) * mult
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {unit} like 2{next(iter(scale))}") from exc
        if value <= 0 and unit != "accuracy drop":
            raise argparse.ArgumentTypeError(f"'{text}' must be positive")
        return value
    return parse


SIZE = _quantity("size", {"mb": 1.0, "kb": 1e-3, "gb": 1e3, "b": 1e-6})
LATENCY = _quantity("latency", {"ms": 1.0, "us": 1e-3, "s": 1e3})
DURATION = _quantity("duration", {"m": 60.0, "s": 1.0, "h": 3600.0})


PREPROCESS_FLAGS = {
    "resize": "S (shorter side to S, aspect kept) or H,W (default: the model's H,W when images differ from it)",
    "center_crop": "H,W (or S) cut from the centre after resizing",
    "mean": "per-channel mean(s) subtracted after scaling, e.g. 0.485,0.456,0.406 (default 0)",
    "std": "per-channel std(s) divided by last, e.g. 0.229,0.224,0.225 (default 1)",
    "scale": "multiplier applied to 8-bit pixels first (default 1/255)",
    "channels": "RGB, BGR or L (default: RGB, or L for a 1-channel model)",
    "layout": "NCHW or NHWC (default: the model's)",
    "interpolation": "bilinear (default), bicubic or nearest",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `edgecomp build`."""
    p.add_argument("model", nargs="?", default=None,
                   help="TorchScript file, torch.export .pt2, or package.module:factory / file.py:factory "
                        "(default: the built-in digits CNN)")
    p.add_argument("--target", default="android-arm64", help="deployment target (see `edgecomp targets`)")
    p.add_argument("--out", help="bundle folder (default build/<model>-<target>)")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it is a folder edgecomp did not write (its files are deleted)")
    p.add_argument("--recipe", help='compression stages, e.g. "prune.filter(ratio=0.5) -> quantize.int8"')
    p.add_argument("--input-shape", type=_shape, help="input shape N,C,H,W when the model does not say")
    p.add_argument("--weights", help="state_dict for a factory model (loaded with weights_only=True)")
    p.add_argument("--data", help="data for calibration, fine-tuning and evaluation: a folder of images in class "
                                  "folders, a .npz (x,y or x_train,y_train,x_test,y_test), or a dataset factory "
                                  "package.module:fn / file.py:fn returning torch datasets")
    p.add_argument("--metric", help="how to score the model: top1 (default), top5, or package.module:fn / "
                                    "file.py:fn (fn(batches) -> float, higher is better; or a class with "
                                    "update/compute)")
    pre = p.add_argument_group("image-folder preprocessing (recorded in edgecomp.json)")
    pre.add_argument("--preprocess", metavar="FILE.yaml", help="recipe file with keys " + ", ".join(PREPROCESS_FLAGS))
    for key, text in PREPROCESS_FLAGS.items():
        pre.add_argument("--" + key.replace("_", "-"), dest=f"pre_{key}", help=text)
    p.add_argument("--hardware", help="hardware profile for predictions (default: the target's)")
    p.add_argument("--formats", help="comma-separated subset of the target's formats")
    p.add_argument("--threads", type=_at_least_one, help="threads for host runtimes (default 2)")
    p.add_argument("--runs", type=_at_least_one, default=50,
                   help="most timed runs per artifact (default 50); timing stops earlier once the p50's 95%% "
                        "confidence interval is within --latency-tolerance")
    p.add_argument("--latency-tolerance", type=_percent, default=2.0, metavar="PCT",
                   help="stop host timing when the p50 is known within this %% (95%% CI half-width; default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything random (default 0)")
    p.add_argument("--max-size", type=SIZE, help="size budget, e.g. 2MB or 500kB (default: the target's)")
    p.add_argument("--max-latency", type=LATENCY, help="latency budget on the hardware, e.g. 10ms")
    p.add_argument("--max-accuracy-drop", type=float, help="largest drop of the metric in its points (top-1: percentage points), e.g. 1")
    p.add_argument("--search-time", type=DURATION, default=600.0, help="planner search time, e.g. 10m (default)")
    p.add_argument("--max-finetune-epochs", type=int, help="cap on every recovery fine-tune (faster search)")
    p.add_argument("--workers", type=_at_least_one, metavar="N",
                   help="evaluate planner candidates in N local worker processes (torch threads split among them)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="evaluate planner candidates as Ray tasks: on the cluster at ADDRESS (host:port, "
                        "ray://host:port or auto), or without ADDRESS on a local Ray instance (edgecomp[ray])")
    p.add_argument("--search-threads", type=_at_least_one, metavar="N",
                   help="torch threads per candidate evaluation (default: the cores divided among the workers; "
                        "1 on Ray); equal numbers across executors need equal threads")
    p.add_argument("--no-early-stop", action="store_true",
                   help="evaluate every candidate with the full fine-tune instead of successive halving")
    p.add_argument("--fresh-search", action="store_true",
                   help="re-evaluate every candidate instead of reusing cached planner results")
    p.add_argument("--no-cache", action="store_true",
                   help="export and measure every format again instead of reusing identical earlier exports "
                        "from the artifact cache (<user cache dir>/edgecomp/artifacts), and search again instead "
                        "of reusing the plan of an identical earlier build")
    p.add_argument("--skip-failed-formats", action="store_true", help="build the other formats if one fails")
    p.add_argument("--allow-parity-failure", action="store_true", help="write the bundle even if parity fails")


def run(args: argparse.Namespace) -> int:
    """Run the build (or reuse an identical one, without importing torch) and print the closing table."""
    from edgecomp import build_reuse
    from edgecomp.build_options import BuildOptions
    from edgecomp.report.console import console_table, explain_plan
    from edgecomp.targets import Budgets
    from edgecomp.timings import phase_table

    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads must be at least 1", "pass --threads 1 or more")
    preprocess = None
    pre_flags = {k: getattr(args, f"pre_{k}") for k in PREPROCESS_FLAGS}
    if args.preprocess or any(v is not None for v in pre_flags.values()):
        from edgecomp.data.preprocess import make_preprocess  # imports torch (edgecomp.data)

        preprocess = make_preprocess(args.preprocess, **pre_flags)
    opts = BuildOptions(
        out=args.out, recipe=args.recipe, input_shape=args.input_shape, weights=args.weights, data=args.data,
        metric=args.metric, preprocess=preprocess,
        hardware=args.hardware, formats=args.formats.split(",") if args.formats else None,
        threads=args.threads, runs=args.runs, seed=args.seed, skip_failed_formats=args.skip_failed_formats,
        allow_parity_failure=args.allow_parity_failure, search_time_s=args.search_time,
        max_finetune_epochs=args.max_finetune_epochs, reuse_plans=not args.fresh_search, force=args.force,
        workers=args.workers, ray=args.ray, search_threads=args.search_threads, early_stop=not args.no_early_stop,
        cache=not args.no_cache, latency_tolerance=args.latency_tolerance / 100,
        budgets=Budgets(size_mb=args.max_size, latency_ms=args.max_latency,
                        accuracy_drop_pct=args.max_accuracy_drop),
    )
    if args.recipe is not None and any(v is not None for v in (args.max_size, args.max_latency,
                                                               args.max_accuracy_drop)):
        print("note: with --recipe the planner does not run; budgets are reported, not enforced")
    key, report = build_reuse.find(args.model, args.target, opts)
    if report is None:
        from edgecomp.build import build

        report = build(args.model, args.target, opts)
        if key:
            build_reuse.keep(key, report)
    print()
    if report.planner:
        print(explain_plan(report))
        print()
    print(console_table(report))
    print()
    if report.reused_from:
        print(build_reuse.REUSED_TEXT.format(date=report.reused_from))
    print(phase_table(report.phases, report.build_seconds))
    print(f"\nbundle: {report.bundle}  (report.json, report.html, edgecomp.json)")
    return 0
