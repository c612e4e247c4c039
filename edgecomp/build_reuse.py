"""Reuse of a whole build whose inputs are all unchanged, without importing torch or any converter.

A rebuild that hits every cache still spends seconds importing torch and loading the model, only to find that
nothing changed. When every input of a build can be identified from files, ``reuse_key`` names them all: the
model (the built-in model's cached weights, or the model file's bytes), the target and the hardware profile
(their content; for a host profile, this machine), every build option, edgecomp's own files, every installed
package and its version, this machine's CPU, and edgecomp's environment variables. A model given as a factory
(Python code), --data and --weights are not identified this way: such builds always run.

``keep`` copies a finished bundle into the artifact cache (size-capped, atomic; ``ArtifactCache.store_folder``);
``restore`` writes an identical build's bundle from it: the same model files, manifest and measurements, every
artifact marked cached with the date it was measured, and a report that says when the build it reuses ran
(``reused_from``) and times this one. --no-cache, --fresh-search and $EDGECOMP_NO_CACHE turn reuse off.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from edgecomp.artifact_cache import ArtifactCache, cache_enabled
from edgecomp.build_options import BuildOptions
from edgecomp.bundle import check_bundle_destination, now_iso, sha256_of, staging, write_json
from edgecomp.errors import EdgecompError
from edgecomp.records import BuildReport
from edgecomp.timings import Phase

logger = logging.getLogger(__name__)
KEY_VERSION = 1  # bump when the key or what is kept changes
NOT_KEYED_ENV = ("EDGECOMP_CACHE_DIR", "EDGECOMP_ARTIFACT_CACHE_DIR", "EDGECOMP_CACHE_MAX_MB", "EDGECOMP_NO_CACHE")
REUSED_TEXT = ("build reused: identical to the build of {date} (same model, data, target, options, edgecomp and "
               "packages), so nothing was compressed, exported or measured again; --no-cache builds afresh")


class _Miss(Exception):
    """No usable kept build: the staging folder is dropped and the build runs."""


@functools.cache
def source_digest() -> str:
    """SHA-256 of every file of the edgecomp package (code and package data), by relative path."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(root)}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def installed_digest() -> str:
    """SHA-256 of the Python version and every installed distribution's name and version (the metadata folders
    on ``sys.path``; which folder holds them, e.g. the working directory, does not count)."""
    names: set[str] = set()
    for entry in sys.path:
        try:
            names.update(n for n in os.listdir(entry or ".") if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
    return hashlib.sha256(f"{sys.version}\n{','.join(sorted(names))}".encode()).hexdigest()


def machine_identity() -> dict[str, object]:
    """This machine as host measurements depend on it: architecture, core count, CPU model and flags."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = set(cpuinfo.read_text().splitlines()) if cpuinfo.is_file() else set()
    described = sorted(line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part")))
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "cpu": described}


def model_identity(model: str | None, opts: BuildOptions) -> dict[str, str] | None:
    """The model as files identify it (built-in weights or a model file), or None when code or data decide it."""
    from edgecomp.zoo_cache import DEFAULT_MODEL, ZOO_NAMES, zoo_weights_path

    if opts.weights or opts.data or opts.preprocess is not None or (opts.metric and ":" in opts.metric):
        return None
    if model is None or model in ZOO_NAMES:
        weights = zoo_weights_path(model or DEFAULT_MODEL)
        return {"ref": str(model), "weights": sha256_of(weights)} if weights.is_file() else None
    path = Path(model)
    return {"ref": model, "file": sha256_of(path)} if path.is_file() else None


def _options(opts: BuildOptions) -> dict[str, object]:
    """The options that shape a build's result (not where it is written, nor whether caches are used)."""
    values = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name not in ("out", "force", "cache")}
    recipe = values["recipe"]
    if isinstance(recipe, list):
        values["recipe"] = [step.describe() for step in recipe]
    if values["budgets"] is not None:
        values["budgets"] = values["budgets"].model_dump(mode="json")
    return values


def loaded_identity(model: str | None, loaded, opts: BuildOptions) -> dict[str, object] | None:
    """The model and data as loaded (weights and structure digest, spec, data fingerprint), or None when user
    code beyond the model decides the result (a dataset factory, whose loss is code, or a metric function)."""
    from edgecomp.artifact_cache import model_digest

    if (opts.metric and ":" in opts.metric) or (opts.data and ":" in opts.data and not Path(opts.data).exists()):
        return None
    data = loaded.data
    return {"ref": str(model), "source": loaded.source, "digest": model_digest(loaded.module),
            "spec": loaded.spec.model_dump(mode="json"), "data": None if data is None else data.fingerprint(),
            "metric": None if data is None or data.metric is None else data.metric.name}


def reuse_key(model: str | None, target: str, opts: BuildOptions, loaded=None) -> str | None:
    """The key of a build whose inputs are identified, or None when it must run (see the module docstring).

    Without ``loaded``, files must identify the model (no torch is imported); with ``loaded`` (an
    ``edgecomp.model.LoadedModel``), its weights, structure and data do, after loading.
    """
    from edgecomp.profile.host_cpu import resolve_profile
    from edgecomp.targets import load_target, resolve_path

    if not (opts.cache and opts.reuse_plans and cache_enabled()):
        return None
    identity = model_identity(model, opts) if loaded is None else loaded_identity(model, loaded, opts)
    if identity is None:
        return None
    try:
        target_file = resolve_path("targets", target)
        profile = resolve_profile(opts.hardware or load_target(target, check_methods=False).hardware)
    except EdgecompError:
        return None  # the build itself says what is wrong
    payload = {
        "key_version": KEY_VERSION, "model": identity, "target": [target, sha256_of(target_file)],
        "profile": profile.model_dump(mode="json"), "options": _options(opts), "edgecomp": source_digest(),
        "installed": installed_digest(), "machine": machine_identity(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("EDGECOMP_") and k not in NOT_KEYED_ENV},
    }
    return ("build-" if loaded is None else "loaded-") + hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def keep(key: str, report: BuildReport) -> None:
    """Keep the bundle ``report`` describes under ``key`` (with the report, which the bundle also holds)."""
    ArtifactCache().store_folder(key, Path(report.bundle), {"report": report.model_dump(mode="json")})


def find(model: str | None, target: str, opts: BuildOptions) -> tuple[str | None, BuildReport | None]:
    """The build's reuse key from files (None: not identified so) and, when an identical build was kept, its
    restored report; torch is not imported."""
    start = time.monotonic()
    key = reuse_key(model, target, opts)
    if key is None:
        return None, None
    return key, restore(key, opts.out, opts.force, [Phase(name="reuse:key", seconds=time.monotonic() - start)])


def restore(key: str, out: str | Path | None, force: bool = False, phases: list[Phase] | None = None
            ) -> BuildReport | None:
    """Write the build kept under ``key`` to ``out`` (default: where the build would write it) and return its
    report as this build's, or None (a miss). ``phases``: this build's phases so far (loading, the key)."""
    from edgecomp.report.html import render_html
    from edgecomp.report.plot_memo import plot_memo_dir
    from edgecomp.zoo_cache import cache_dir

    start = time.monotonic()
    cache = ArtifactCache()
    meta = cache.folder_meta(key)
    try:
        report = BuildReport.model_validate(meta["report"]) if meta is not None else None
    except (KeyError, ValueError):
        report = None
    if report is None:
        return None
    dest = Path(out) if out else Path("build") / f"{report.model.name}-{report.target}"
    check_bundle_destination(dest, force)
    try:
        with staging(dest, force) as folder:
            if cache.restore_folder(key, folder) is None:
                raise _Miss
            report.reused_from = report.reused_from or report.created
            report.created, report.bundle = now_iso(), str(dest)
            for artifact in report.artifacts:
                artifact.cached = artifact.cached or artifact.status == "ok"
            note = REUSED_TEXT.format(date=report.reused_from)
            report.phases = [*(Phase(name=p.name, seconds=round(p.seconds, 3)) for p in phases or []),
                             Phase(name="reuse:restore", seconds=round(time.monotonic() - start, 3))]
            report.build_seconds = round(sum(p.seconds for p in report.phases), 3)
            with plot_memo_dir(cache_dir() / "plots"):
                page = render_html(report, [f"<h2>Reused</h2><p>{html.escape(note)}</p>"])
            write_json(folder / "report.json", report)
            (folder / "report.html").write_text(page)
    except _Miss:
        return None
    logger.info("[reuse] %s", REUSED_TEXT.format(date=report.reused_from))
    logger.info("[done] bundle written to %s", dest)
    return report
