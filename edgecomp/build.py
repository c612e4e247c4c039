"""The spine: model -> recipe -> compress -> export (+ parity) -> profile -> bundle + report.

``build`` is the one call behind ``edgecomp build``. Each step reads and writes plain objects; the
bundle is staged and moved into place only when every check passed, so a failed build leaves nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecomp import __version__
from edgecomp.bundle import (
    MANIFEST_NAME, SAMPLES_NAME, FileEntry, Manifest, deflate_size, now_iso, sha256_of, size_of, staging, write_json,
)
from edgecomp.compress.base import BuildContext, get_stage
from edgecomp.compress.recipe import RecipeStep, parse_recipe
from edgecomp.errors import ConfigError, EdgecompError, ExportError, ParityError
from edgecomp.export.common import ExportedArtifact
from edgecomp.export.coreml import MACOS_NOTE
from edgecomp.export.formats import EXPORTERS, FILENAMES
from edgecomp.export.parity import compare, not_run
from edgecomp.export.runtime import run_artifact
from edgecomp.finetune import accuracy, predict
from edgecomp.model import LoadedModel, count_macs, count_params, load_model
from edgecomp.plan.targets import Budgets, Target, load_profile, load_target
from edgecomp.profile.host import measure_host
from edgecomp.report import ArtifactRecord, BuildReport, ModelRecord, StageRecord, console_table, render_html

logger = logging.getLogger(__name__)
MAX_PARITY_SAMPLES = 512


@dataclass
class BuildOptions:
    """Everything ``build`` can be told besides the model and the target (CLI flags map 1:1)."""

    out: str | Path | None = None
    recipe: str | list[RecipeStep] | None = None
    input_shape: list[int] | None = None
    weights: str | None = None
    data: str | None = None
    hardware: str | None = None
    budgets: Budgets | None = None
    formats: list[str] | None = None
    threads: int | None = None
    runs: int = 50
    warmup: int = 5
    seed: int = 0
    skip_failed_formats: bool = False
    allow_parity_failure: bool = False
    extra: dict = field(default_factory=dict)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"edgecomp": __version__}
    for pkg in ("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert", "coremltools"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _parity_inputs(loaded: LoadedModel, seed: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    if loaded.data is not None:
        x, y = loaded.data.x_test[:MAX_PARITY_SAMPLES], loaded.data.y_test[:MAX_PARITY_SAMPLES]
        return x, y, f"{len(x)} images of the {loaded.data.name} test split"
    shape = [64, *loaded.spec.input_shape[1:]]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return x, None, f"{len(x)} random normal inputs (no evaluation data given; pass --data for real inputs)"


def _steps(recipe: str | list[RecipeStep] | None) -> list[RecipeStep]:
    if recipe is None:
        return []
    return parse_recipe(recipe) if isinstance(recipe, str) else list(recipe)


def apply_recipe(loaded: LoadedModel, steps: list[RecipeStep], ctx: BuildContext) -> tuple:
    """Run each stage in order; return (final model, stage records, final export options)."""
    model, records = loaded.module, []
    for i, step in enumerate(steps, 1):
        stage = get_stage(step.name)()
        if not stage.supports(ctx.target):
            raise ConfigError(f"{step.name} cannot run on target '{ctx.target.name}'",
                              f"{ctx.target.name} allows: {', '.join(ctx.target.methods) or 'no methods'}")
        logger.info("[compress %d/%d] %s", i, len(steps), step.describe())
        start = time.monotonic()
        result = stage.apply(model, step.config, ctx)
        seconds = time.monotonic() - start
        model = result.model.eval()
        if result.export is not None:
            ctx.export = result.export
        acc = accuracy(model, ctx.data.x_test, ctx.data.y_test) if ctx.data is not None else None
        record = StageRecord(
            name=step.name, config=step.config.model_dump(mode="json"), seconds=seconds,
            params=count_params(model), macs=count_macs(model, ctx.spec.input_shape), accuracy=acc,
            metrics=result.metrics, notes=result.notes,
        )
        logger.info("  %s: %d params, %d MACs, accuracy %s, %.1f s", step.name, record.params, record.macs,
                    "n/a" if acc is None else f"{acc:.2f}%", seconds)
        records.append(record)
    return model, records, ctx.export


def _export_one(fmt: str, model, ctx: BuildContext, folder: Path, calibration) -> tuple[ExportedArtifact, float]:
    start = time.monotonic()
    chatter = io.StringIO()  # converters print progress to stdout; keep it for --debug only
    with contextlib.redirect_stdout(chatter if not logger.isEnabledFor(logging.DEBUG) else sys.stdout):
        artifact = EXPORTERS[fmt](model, ctx.spec, ctx.export, folder / FILENAMES[fmt], calibration)
    seconds = time.monotonic() - start
    logger.info("  %s: exported in %.1f s, %.4f MB", fmt, seconds, size_of(artifact.path) / 1e6)
    return artifact, seconds


def build(model: str | None = None, target: str = "android-arm64", options: BuildOptions | None = None) -> BuildReport:
    """Build a bundle of ``model`` for ``target``; return the report (also written into the bundle)."""
    opts = options or BuildOptions()
    tgt: Target = load_target(target)
    profile = load_profile(opts.hardware or tgt.hardware)
    formats = opts.formats or list(tgt.formats)
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown:
        raise ConfigError(f"unknown format(s): {', '.join(unknown)}", f"choose from {', '.join(EXPORTERS)}")
    steps = _steps(opts.recipe)
    logger.info("[load] %s", model or "built-in default model")
    loaded = load_model(model, opts.input_shape, opts.weights)
    if opts.data:
        from edgecomp.data import load_npz

        loaded.data = load_npz(opts.data, opts.seed)
    spec, data = loaded.spec, loaded.data
    threads = opts.threads or 2
    ctx = BuildContext(spec=spec, target=tgt, profile=profile, data=data, teacher=loaded.module,
                       seed=opts.seed, threads=threads)
    src = ModelRecord(
        name=spec.name, source=loaded.source, params=count_params(loaded.module),
        macs=count_macs(loaded.module, spec.input_shape),
        accuracy=accuracy(loaded.module, data.x_test, data.y_test) if data is not None else None,
    )
    logger.info("  %s: %d params, %d MACs, accuracy %s", spec.name, src.params, src.macs,
                "n/a" if src.accuracy is None else f"{src.accuracy:.2f}%")
    final, stage_records, export_opts = apply_recipe(loaded, steps, ctx)
    x, y, parity_desc = _parity_inputs(loaded, opts.seed)
    reference = predict(final, x)
    report = BuildReport(
        edgecomp_version=__version__, created=now_iso(), target=tgt.name, hardware=profile.name,
        budgets=(opts.budgets or tgt.budgets).model_dump(), model=src, recipe=[s.describe() for s in steps],
        stages=stage_records, parity_inputs=parity_desc, environment=_versions(),
    )
    dest = Path(opts.out) if opts.out else Path("build") / f"{spec.name}-{tgt.name}"
    calibration = data.calibration(seed=opts.seed) if data is not None else x
    with staging(dest) as folder:
        files = []
        for i, fmt in enumerate(formats, 1):
            logger.info("[export %d/%d] %s", i, len(formats), fmt)
            try:
                artifact, seconds = _export_one(fmt, final, ctx, folder, calibration)
            except ExportError as exc:
                if not opts.skip_failed_formats:
                    raise
                logger.warning("  %s: FAILED (%s); continuing (--skip-failed-formats)", fmt, exc.message)
                report.artifacts.append(ArtifactRecord(format=fmt, status="failed", notes=[exc.message]))
                continue
            record = _check_and_profile(artifact, seconds, final, reference, x, y, ctx, opts, folder)
            report.artifacts.append(record)
            files.append(FileEntry(format=fmt, path=record.path, bytes=record.bytes, sha256=record.sha256,
                                   dtype=artifact.dtype, inputs=artifact.inputs, outputs=artifact.outputs))
        if not files:
            raise ExportError("no format could be exported", "see the errors above")
        np.savez_compressed(folder / SAMPLES_NAME, x=x, y=y if y is not None else np.zeros(0, np.int64),
                            y_torch=reference)
        manifest = Manifest(schema_version=1, edgecomp_version=__version__, created=report.created,
                            target=tgt.name, model=spec, files=files)
        write_json(folder / MANIFEST_NAME, manifest)
        report.bundle = str(dest)
        write_json(folder / "report.json", report)
        (folder / "report.html").write_text(render_html(report))
    logger.info("[done] bundle written to %s", dest)
    return report


def _check_and_profile(artifact: ExportedArtifact, export_seconds: float, model, reference: np.ndarray,
                       x: np.ndarray, y: np.ndarray | None, ctx: BuildContext, opts: BuildOptions,
                       folder: Path) -> ArtifactRecord:
    record = ArtifactRecord(
        format=artifact.format, path=artifact.path.name, dtype=artifact.dtype, bytes=size_of(artifact.path),
        sha256=sha256_of(artifact.path), export_seconds=export_seconds, notes=list(artifact.notes),
        details={"deflate_bytes": deflate_size(artifact.path), **artifact.details},
    )
    if not artifact.runnable:
        record.parity = not_run(MACOS_NOTE if artifact.format == "coreml" else "no runtime on this machine")
        logger.info("  %s: parity not run (%s)", artifact.format, record.parity.note)
        return record
    outputs = run_artifact(artifact.format, artifact.path, x, ctx.spec.input_shape, ctx.threads)
    record.parity = compare(reference, outputs, quantized=artifact.dtype != "fp32")
    if y is not None:
        record.accuracy = float((outputs.argmax(1) == y).mean() * 100.0)
    p = record.parity
    logger.info("  %s: parity %s (max abs err %.2e, top-1 agreement %.1f%%)", artifact.format, p.status,
                p.max_abs_err, p.top1_agreement)
    if p.status == "failed" and not opts.allow_parity_failure:
        raise ParityError(
            f"{artifact.format} artifact does not match PyTorch: max abs err {p.max_abs_err:.3e}, "
            f"top-1 agreement {p.top1_agreement:.1f}% ({p.criterion})",
            "report the model to us; --allow-parity-failure writes the bundle anyway, marked failed",
        )
    try:
        record.latency = measure_host(artifact.format, folder / artifact.path.name, ctx.threads, opts.runs,
                                      opts.warmup)
        logger.info("  %s: p50 %.3f ms, p90 %.3f ms (%s, %d threads)", artifact.format, record.latency.p50_ms,
                    record.latency.p90_ms, record.latency.source, ctx.threads)
    except EdgecompError as exc:
        record.notes.append(f"host latency not measured: {exc.message}")
    return record
