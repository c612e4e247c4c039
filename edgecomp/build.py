"""The spine: model -> recipe -> compress -> export (+ parity) -> profile -> bundle + report.

``build`` is the one call behind ``edgecomp build``. Each step reads and writes plain objects; the
bundle is staged and moved into place only when every check passed, so a failed build leaves nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecomp import __version__, build_reuse
from edgecomp.artifact_cache import ArtifactCache, array_digest, artifact_key, cache_enabled, package_versions
from edgecomp.build_options import BuildOptions
from edgecomp.bundle import (
    MANIFEST_NAME,
    SAMPLES_NAME,
    Manifest,
    check_bundle_destination,
    copy_model_file,
    deflate_size,
    now_iso,
    sha256_of,
    size_of,
    staging,
    write_json,
)
from edgecomp.compress.base import BuildContext
from edgecomp.compress.pipeline import apply_recipe
from edgecomp.compress.recipe import RecipeStep, parse_recipe
from edgecomp.errors import ConfigError, EdgecompError, ExportError, ParityError
from edgecomp.export.base import format_names, get_format
from edgecomp.export.common import ExportedArtifact
from edgecomp.export.parity import compare_to_reference, not_run
from edgecomp.export.parity_int8 import BROKEN_REFERENCE, QUANT_REPORT_HINT
from edgecomp.finetune import predict_all
from edgecomp.metrics import evaluate
from edgecomp.model import LoadedModel, count_macs, count_params, float_network, load_model
from edgecomp.profile.host import measure_host
from edgecomp.profile.host_cpu import resolve_profile
from edgecomp.quiet import captured_output
from edgecomp.records import ACCURACY_NOT_MEASURED, ArtifactRecord, BuildReport, Latency, ModelRecord
from edgecomp.report.html import render_html
from edgecomp.report.plot_memo import plot_memo_dir
from edgecomp.targets import Budgets, Target, load_target
from edgecomp.timings import Timings
from edgecomp.zoo_cache import cache_dir

logger = logging.getLogger(__name__)
MAX_PARITY_SAMPLES = 512


def _parity_inputs(loaded: LoadedModel, seed: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    if loaded.data is not None:
        x, targets = loaded.data.sample("test", MAX_PARITY_SAMPLES)
        y = np.asarray([int(t) for t in targets]) if _all_class_indices(targets) else None
        return x, y, f"{len(x)} inputs of the {loaded.data.name} test split"
    shape = [64, *loaded.spec.input_shape[1:]]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return x, None, f"{len(x)} random normal inputs (no evaluation data given; pass --data for real inputs)"


def _describe_data(data) -> str:
    """One line about the evaluation data: where it came from and the split sizes."""
    sizes = "/".join(f"{data.size(s):,}" for s in ("train", "val", "test"))
    return f"{data.source or data.name} (train/val/test {sizes})"


def _all_class_indices(targets: list) -> bool:
    """Whether every target is one integer class index (then parity also compares top-1 agreement)."""
    return all(not isinstance(t, (tuple, list, dict))  # e.g. (class, box) of a detection-style model
               and np.ndim(t) == 0 and np.issubdtype(np.asarray(t).dtype, np.integer) for t in targets)


def _steps(recipe: str | list[RecipeStep] | None) -> list[RecipeStep]:
    if recipe is None:
        return []
    return parse_recipe(recipe) if isinstance(recipe, str) else list(recipe)


def _export_one(fmt: str, model, ctx: BuildContext, folder: Path, calibration) -> tuple[ExportedArtifact, float]:
    start = time.monotonic()
    plugin = get_format(fmt)
    plugin.check(ctx.export)
    artifact = plugin.export(model, ctx.spec, ctx.export, folder / plugin.filename, calibration)  # quiet itself
    seconds = time.monotonic() - start
    logger.info("  %s: exported in %.1f s, %.4f MB", fmt, seconds, size_of(artifact.path) / 1e6)
    return artifact, seconds


def _planner_export(fmt: str, final, ctx: BuildContext, folder: Path, planned) -> tuple[ExportedArtifact, float] | None:
    """The planner's export of the untouched model (made to measure the format's overhead), copied into
    ``folder``, when ``final`` is that model in that format with the same options; else None."""
    source = planned[0].source_export if planned is not None else None
    if source is None or final is not planned[0].model or source.artifact.format != fmt or ctx.export != source.options:
        return None
    path = folder / source.artifact.path.name
    copy_model_file(source.artifact.path, path)
    logger.info("  %s: the planner's export of the untouched model, reused (exported in %.1f s), %.4f MB",
                fmt, source.seconds, size_of(path) / 1e6)
    return dataclasses.replace(source.artifact, path=path), source.seconds


def _quietly(fn):
    """``fn()`` with third-party output (quantizers, converters) captured to the debug log (``edgecomp.quiet``)."""
    with captured_output("plan"):
        return fn()


def resolve_budgets(target: Target, overrides: Budgets | None) -> Budgets:
    """The target's budgets with every budget set in ``overrides`` replacing the target's."""
    if overrides is None:
        return target.budgets
    return target.budgets.model_copy(update=overrides.model_dump(exclude_none=True))


class BudgetMissed(EdgecompError):
    """The real export of a planned candidate missed a budget that its prediction met."""


def build(model: str | None = None, target: str = "android-arm64", options: BuildOptions | None = None) -> BuildReport:
    """Build a bundle of ``model`` for ``target``; return the report (also written into the bundle).

    With a recipe, its stages run as given. Without one, the planner chooses the recipe that meets the
    budgets (the target's, overridden by ``options.budgets``) with the least accuracy loss.
    """
    opts = options or BuildOptions()
    timings = Timings()
    with timings.phase("load"):
        loaded, tgt, profile, formats, budgets, steps = _load(model, target, opts)
    with timings.phase("reuse:key"):  # a model files could not identify (a factory, --data): after loading
        key = build_reuse.reuse_key(model, target, opts, loaded)
    restored = build_reuse.restore(key, opts.out, opts.force, timings.phases()) if key else None
    if restored is not None:
        return restored
    with timings.phase("load"):  # (one phase with the loading above)
        src = _source_record(loaded)
    spec, data = loaded.spec, loaded.data
    ctx = BuildContext(spec=spec, target=tgt, profile=profile, data=data, teacher=loaded.module,
                       seed=opts.seed, threads=opts.threads or 2)
    base = BuildReport(
        edgecomp_version=__version__, created=now_iso(), target=tgt.name, hardware=profile.name,
        budgets=budgets.model_dump(), model=src, environment=package_versions(),
    )
    dest = Path(opts.out) if opts.out else Path("build") / f"{spec.name}-{tgt.name}"
    check_bundle_destination(dest, opts.force)  # before any work: never replace someone's folder
    if opts.recipe is not None:
        with timings.phase("compress"), captured_output("compress"):  # quantizers print at import and run time
            final, stage_records, export_opts = apply_recipe(loaded.module, steps, ctx)
        _split_compress_phase(timings, stage_records)
        base.recipe, base.stages = [s.describe() for s in steps], stage_records
        return _kept(key, _write_bundle(base, loaded, final, dataclasses.replace(ctx, export=export_opts), formats,
                                        opts, dest, timings=timings))

    from edgecomp.plan.executors import make_executor
    from edgecomp.plan.plan_memo import PlanMemo, plan_key
    from edgecomp.plan.planner import Planner
    from edgecomp.plan.progress import make_progress

    memo = stored = None
    if opts.reuse_plans and cache_enabled(opts.cache):  # --fresh-search, --no-cache and $EDGECOMP_NO_CACHE search
        with timings.phase("plan:memo"):
            memo = PlanMemo(cache_dir() / "plans", plan_key(loaded.module, ctx, budgets, formats[0],
                                                            opts.search_time_s, opts.max_finetune_epochs,
                                                            {"early_stop": opts.early_stop, "workers": opts.workers,
                                                             "search_threads": opts.search_threads}))
            stored = memo.load()
    if stored is not None:
        logger.info("[plan] reusing the plan of %s (identical inputs): %s", stored.planned_at,
                    " -> ".join(stored.recipe) or "fp32 (untouched)")
        with timings.phase("plan:reuse"):
            final, stages, export = _quietly(lambda: stored.reapply(loaded.module, ctx, opts.max_finetune_epochs))
        report = base.model_copy(deep=True)
        report.recipe, report.stages, report.planner = stored.recipe, stages, stored.report_record()
        return _kept(key, _write_bundle(report, loaded, final, dataclasses.replace(ctx, export=export), formats,
                                        opts, dest, timings=timings))
    with tempfile.TemporaryDirectory(prefix="edgecomp-plan-") as scratch:  # the source model's export, for reuse
        planner = Planner(loaded.module, ctx, budgets, formats[0], search_time_s=opts.search_time_s,
                          max_finetune_epochs=opts.max_finetune_epochs,
                          cache_dir=cache_dir() / "plans" if opts.reuse_plans else None,
                          executor=make_executor(opts.workers, opts.ray, opts.search_threads),
                          early_stop=opts.early_stop, progress=make_progress(), export_dir=Path(scratch))
        return _search_and_write(planner, base, loaded, ctx, formats, opts, dest, memo, key, timings)


def _search_and_write(planner, base: BuildReport, loaded: LoadedModel, ctx: BuildContext, formats: list[str],
                      opts: BuildOptions, dest: Path, memo, key: str | None, timings: Timings) -> BuildReport:
    """Run the planner's search, then write the best candidate whose real numbers meet the budgets."""
    start = time.monotonic()
    with timings.phase("plan:search"):
        _quietly(planner.search)
    search_seconds = round(time.monotonic() - start, 1)
    while True:
        with timings.phase("plan:choose"):
            choice = _quietly(planner.next_choice)
        if choice is None:
            break
        candidate, chosen_steps, evaluated = choice
        logger.info("[plan] chosen: %s", candidate.label)
        report = base.model_copy(deep=True)
        report.recipe, report.stages = [s.describe() for s in chosen_steps], evaluated.stages
        report.planner = {"candidates": planner.candidates, "notes": planner.notes,
                          "search_seconds": search_seconds, **planner.summary()}
        try:
            written = _write_bundle(report, loaded, evaluated.model,
                                    dataclasses.replace(ctx, export=evaluated.export), formats, opts, dest,
                                    planned=(planner, candidate), timings=timings)
            if memo is not None:
                memo.store(written.recipe, written.planner)
            return _kept(key, written)
        except BudgetMissed as miss:
            logger.warning("  real numbers miss a budget: %s; trying the next candidate", miss.message)
            planner.reject_chosen(candidate, miss.message)
    raise planner.infeasible_error()


def _kept(key: str | None, report: BuildReport) -> BuildReport:
    """``report``, after keeping its bundle for an identical build (``edgecomp.build_reuse``) when ``key``."""
    if key is not None:
        build_reuse.keep(key, report)
    return report


def _split_compress_phase(timings: Timings, stages) -> None:
    """Replace the one ``compress`` phase by a ``stage:<name>`` phase per stage (+ the rest, if noticeable)."""
    total = timings.pop("compress")
    for stage in stages:
        timings.add(f"stage:{stage.name}", stage.seconds)
    rest = total - sum(stage.seconds for stage in stages)
    if rest >= 0.01:
        timings.add("compress:other", rest)


def _load(model: str | None, target: str, opts: BuildOptions):
    """Target, hardware profile, formats, budgets, recipe steps and the loaded model (with its data)."""
    tgt: Target = load_target(target)
    profile = resolve_profile(opts.hardware or tgt.hardware)  # a host profile is made this machine
    formats = opts.formats or list(tgt.formats)
    unknown = [f for f in formats if f not in format_names()]
    if unknown:
        raise ConfigError(f"unknown format(s): {', '.join(unknown)}", f"choose from {', '.join(format_names())}")
    for fmt in formats:
        get_format(fmt).check_installed()  # before any work: a missing optional extra names its install command
    budgets = resolve_budgets(tgt, opts.budgets)
    steps = _steps(opts.recipe)
    logger.info("[load] %s", model or "built-in default model")
    loaded = load_model(model, opts.input_shape, opts.weights)
    if opts.data:
        from edgecomp.data.sources import load_data

        loaded.data = load_data(opts.data, opts.seed, opts.preprocess, spec=loaded.spec)
    if loaded.data is not None:
        from edgecomp.data.checks import check_data_fits, spec_with_data
        from edgecomp.metrics import load_metric

        if opts.metric or loaded.data.metric is None:
            loaded.data.metric = load_metric(opts.metric)
        check_data_fits(loaded.module, loaded.spec, loaded.data)
        loaded.spec = spec_with_data(loaded.spec, loaded.data)
    if loaded.data is not None:
        for note in loaded.data.notes:
            logger.warning("  data: %s", note)
    return loaded, tgt, profile, formats, budgets, steps


def _source_record(loaded: LoadedModel) -> ModelRecord:
    """The source model measured: parameters, MACs and (with data) the metric on the test split."""
    spec, data = loaded.spec, loaded.data
    src = ModelRecord(
        name=spec.name, source=loaded.source, params=count_params(loaded.module),
        macs=count_macs(loaded.module, spec.input_shape),
        accuracy=evaluate(loaded.module, data, "test") if data is not None else None,
        metric=data.metric.name if data is not None else None,
        data=_describe_data(data) if data is not None else None,
        accuracy_note=ACCURACY_NOT_MEASURED if data is None else None,
    )
    logger.info("  %s: %d params, %d MACs, %s", spec.name, src.params, src.macs,
                f"{ACCURACY_NOT_MEASURED} (no --data)" if src.accuracy is None
                else f"{data.metric.name} {src.accuracy:.2f}{data.metric.unit} on the test split")
    return src


def _write_bundle(report: BuildReport, loaded: LoadedModel, final, ctx: BuildContext, formats: list[str],
                  opts: BuildOptions, dest: Path, planned=None, timings: Timings | None = None) -> BuildReport:
    """Export, check, profile and write the bundle atomically; with ``planned``, check the real numbers."""
    timings = timings or Timings()
    with timings.phase("parity:reference"):
        x, y, report.parity_inputs = _parity_inputs(loaded, opts.seed)
        reference = predict_all(final, x)  # one array per output, in order
        data = ctx.data
        calibration = data.calibration(seed=opts.seed) if data is not None else x
    cache = ArtifactCache() if cache_enabled(opts.cache) else None
    with staging(dest, opts.force) as folder:
        files = []
        formats = formats + [f for f in format_names() if f not in formats and get_format(f).requested_by(ctx.export)]
        for i, fmt in enumerate(formats, 1):
            logger.info("[export %d/%d] %s", i, len(formats), fmt)
            key = None
            if cache is not None:
                with timings.phase(f"cache:{fmt}"):
                    key = _cache_key(fmt, final, ctx, opts, calibration, x, y, report.environment)
                    hit = cache.restore(key, folder, get_format(fmt).filename)
                if hit is not None:
                    logger.info("  %s: cached from %s (identical export)", fmt, hit[0].measured_at)
                    report.artifacts.append(hit[0])
                    files.append(hit[1])
                    continue
            try:
                with timings.phase(f"export:{fmt}"):
                    reused = _planner_export(fmt, final, ctx, folder, planned)
                    artifact, seconds = reused or _export_one(fmt, final, ctx, folder, calibration)
            except ExportError as exc:
                if not opts.skip_failed_formats:
                    raise
                logger.warning("  %s: FAILED (%s); continuing (--skip-failed-formats)", fmt, exc.message)
                report.artifacts.append(ArtifactRecord(format=fmt, status="failed", notes=[exc.message]))
                continue
            record = _check_and_profile(artifact, seconds, final, reference, x, y, ctx, opts, folder, timings)
            report.artifacts.append(record)
            entry = get_format(fmt).manifest_entry(artifact, record)
            files += [entry] if entry is not None else []
            if key is not None and entry is not None and record.parity is not None and record.parity.status != "failed":
                with timings.phase(f"cache:{fmt}"):
                    cache.store(key, artifact.path, record, entry)
        if not files:
            raise ExportError("no format could be exported", "see the errors above")
        for record in report.artifacts:
            if record.status == "ok":
                get_format(record.format).finish(record, report.artifacts)
        if planned is not None:
            _check_real_numbers(report, final, ctx, *planned)
        with timings.phase("bundle"):
            more = {f"y_torch_{j}": r for j, r in enumerate(reference[1:], 1)}  # outputs after the first
            np.savez_compressed(folder / SAMPLES_NAME, x=x, y=y if y is not None else np.zeros(0, np.int64),
                                y_torch=reference[0], **more)
            manifest = Manifest(schema_version=1, edgecomp_version=__version__, created=report.created,
                                target=ctx.target.name, model=ctx.spec, files=files)
            write_json(folder / MANIFEST_NAME, manifest)
            report.bundle = str(dest)
            report.phases, report.build_seconds = timings.phases(), round(timings.elapsed(), 3)
            with plot_memo_dir(cache_dir() / "plots" if cache is not None else None):
                page = render_html(report)  # phases up to here; report.json: the whole bundle phase
        report.phases, report.build_seconds = timings.phases(), round(timings.elapsed(), 3)
        write_json(folder / "report.json", report)
        (folder / "report.html").write_text(page)
    logger.info("[done] bundle written to %s", dest)
    return report


def _cache_key(fmt: str, model, ctx: BuildContext, opts: BuildOptions, calibration, x, y,
               versions: dict[str, str]) -> str:
    """The artifact cache key: the model, and everything else its file, parity and timings depend on."""
    return artifact_key(model, fmt, {
        "spec": ctx.spec.model_dump(mode="json"), "export": ctx.export.model_dump(mode="json"),
        "calibration": array_digest(np.asarray(calibration)), "parity_inputs": array_digest(x, y),
        "profile": ctx.profile.model_dump(mode="json"), "target_threads": ctx.target.threads,
        "host": {"threads": ctx.threads, "runs": opts.runs, "warmup": opts.warmup,
                 "tolerance": opts.latency_tolerance}, "versions": versions,
    })


def _check_real_numbers(report: BuildReport, final, ctx: BuildContext, planner, candidate) -> None:
    """Re-measure the chosen candidate from its real export; raise BudgetMissed if a budget is missed."""
    primary = next((a for a in report.artifacts if a.status == "ok"), None)
    if primary is None:
        return
    candidate.real_bytes = primary.bytes
    by_graph = sorted(report.artifacts, key=lambda a: not get_format(a.format).predictor_reads)  # predicts best
    predicted = next((a.predicted_latency for a in by_graph if a.predicted_latency), None)
    candidate.real_ms = predicted.p50_ms if predicted else None
    src_acc = report.model.accuracy
    acc = primary.accuracy if primary.accuracy is not None else candidate.accuracy
    misses = planner.budgets.missed(
        primary.bytes, candidate.real_ms, src_acc - acc if src_acc is not None and acc is not None else None,
        size_what=f"{primary.format} file", latency_source=predicted.source if predicted else "",
        accuracy_what="test accuracy drop")
    if misses:
        raise BudgetMissed("; ".join(misses))


def _check_and_profile(artifact: ExportedArtifact, export_seconds: float, model, reference: list[np.ndarray],
                       x: np.ndarray, y: np.ndarray | None, ctx: BuildContext, opts: BuildOptions,
                       folder: Path, timings: Timings) -> ArtifactRecord:
    """The record of an exported artifact: size, parity (+ accuracy), predicted and host latency."""
    record = ArtifactRecord(
        format=artifact.format, path=artifact.path.name, dtype=artifact.dtype, bytes=size_of(artifact.path),
        measured_at=now_iso(),
        sha256=sha256_of(artifact.path), export_seconds=export_seconds, notes=list(artifact.notes),
        details={"deflate_bytes": deflate_size(artifact.path), **artifact.details},
    )
    plugin = get_format(artifact.format)
    with timings.phase(f"parity:{artifact.format}"):
        outputs = plugin.host_outputs(artifact, model, x, ctx.spec.input_shape, ctx.threads)
    if outputs is None:
        record.predicted_latency = _predict(artifact, model, ctx)
        record.parity = not_run(plugin.no_runner_note)
        logger.info("  %s: parity not run (%s)", artifact.format, record.parity.note)
        return record
    float_model = float_network(model)  # int8: judged against it, relative to the reference (export/parity_int8)
    float_ref = predict_all(float_model, x) if artifact.dtype == "int8" and float_model is not model else None
    record.parity = compare_to_reference(reference, outputs, quantized=artifact.dtype not in ("fp32", "compressed"),
                                         names=ctx.spec.output_names(), kinds=ctx.spec.output_kinds(),
                                         float_reference=float_ref)
    if y is not None:
        record.accuracy = float((outputs[0].argmax(1) == y).mean() * 100.0)
    elif ctx.data is not None:
        try:
            record.accuracy = _artifact_metric(outputs, ctx.data, len(x))
        except Exception as exc:  # noqa: BLE001 -- the metric scored the PyTorch model; say why not this file
            record.notes.append(f"metric not measured on this file: {type(exc).__name__}: {exc}")
    p = record.parity
    logger.info("  %s: parity %s (%s)", artifact.format, p.status, p.summary())
    if p.status == "failed" and not opts.allow_parity_failure:
        raise ParityError(
            f"{artifact.format} artifact does not match PyTorch: {p.summary()}",
            ("the quantization, not the export, failed: " + QUANT_REPORT_HINT if BROKEN_REFERENCE in p.note
             else "report the model to us") + "; --allow-parity-failure writes the bundle anyway, marked failed",
        )
    with timings.phase(f"predict:{artifact.format}"):
        record.predicted_latency = _predict(artifact, model, ctx)
    if plugin.runner is None:
        return record
    try:
        with timings.phase(f"profile:{artifact.format}"):
                record.latency = lat = measure_host(artifact.format, folder / artifact.path.name, ctx.threads,
                                                opts.runs, opts.warmup, tolerance=opts.latency_tolerance)
        logger.info("  %s: p50 %.3f ms +-%.1f %%, p90 %.3f ms (%s on %s, %d threads, %d of at most %d runs)",
                    artifact.format, lat.p50_ms, lat.ci_halfwidth_pct or 0.0, lat.p90_ms, lat.source, lat.machine,
                    ctx.threads, lat.runs, opts.runs)
    except EdgecompError as exc:
        record.notes.append(f"host latency not measured: {exc.message}")
    return record


def _artifact_metric(outputs: list[np.ndarray], data, n: int) -> float:
    """The data's metric of an artifact's outputs on the parity inputs (the first ``n`` of the test split), for
    targets that are not class indices (e.g. class + box): outputs go to the metric as the model returns them."""
    import torch
    from torch.utils.data import default_collate

    from edgecomp.metrics import load_metric

    _, targets = data.sample("test", n)
    metric = (data.metric or load_metric(None)).make()
    for i in range(0, n, 256):
        batch = [torch.as_tensor(o[i : i + 256]) for o in outputs]
        metric.update(batch[0] if len(batch) == 1 else tuple(batch), default_collate(targets[i : i + 256]))
    return float(metric.compute())


def _predict(artifact: ExportedArtifact, model, ctx: BuildContext) -> Latency | None:
    """Latency predicted for the target's hardware: from the .tflite graph, else from the torch layers."""
    from edgecomp.profile.predict import layers_from_torch, predict_from_layers, predict_latency

    plugin = get_format(artifact.format)
    if not plugin.predicted:
        return None
    dtype = artifact.dtype if artifact.dtype in ("fp32", "fp16", "int8") else "int8"
    threads = ctx.target.threads
    try:
        if plugin.predictor_reads:
            pred = predict_latency(artifact.path, ctx.profile, threads)
        else:
            # a quantized model's int8 graph has no conv/linear modules to see: use the float network it
            # wraps, costed at the artifact's dtype
            layers = layers_from_torch(float_network(model), ctx.spec.input_shape, dtype)
            if not any(layer.macs for layer in layers):
                logger.debug("no latency prediction for %s: no conv/linear layers visible", artifact.format)
                return None
            pred = predict_from_layers(layers, ctx.profile, threads, dtype)
    except Exception as exc:  # noqa: BLE001 -- a prediction is a nicety: never fail a build over it
        logger.debug("no latency prediction for %s: %s", artifact.format, exc)
        return None
    return Latency(p50_ms=pred.ms, threads=threads, source=pred.source)
