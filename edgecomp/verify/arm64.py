"""``verify_bundle``: run a bundle's .tflite and .onnx files on the host and on emulated ARM64, and compare.

Both runs use :mod:`edgecomp.verify.worker` on the same inputs (``samples.npz``'s ``x``), one thread,
one sample batch at a time where the model has a fixed batch. The host run uses edgecomp's Python; the
ARM64 run uses the userland of :mod:`edgecomp.verify.userland`, where LiteRT's XNNPACK and onnxruntime's
MLAS take their ARM64 (NEON, dot-product) code paths. The bundle is only read, never written.

Emulated wall-clock time says nothing about speed on a phone: the report gives the time the whole check
took (``check_seconds``) and no latency.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from edgecomp.bundle import SAMPLES_NAME, FileEntry, read_manifest, sha256_of
from edgecomp.errors import ConfigError, ParityError
from edgecomp.export.base import FORMATS, format_names, get_format
from edgecomp.export.parity import OutputParity, compare_across_machines, cross_machine_criterion
from edgecomp.fsutil import contained
from edgecomp.verify.userland import DEFAULT_CPU, EmulationError, check_cpu, load_userland

logger = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("worker.py")


class ArtifactParity(BaseModel):
    """The verdict on one model file of the bundle."""

    path: str = Field(description="Path of the file relative to the bundle.")
    format: str = Field(description="File format: tflite or onnx.")
    dtype: str = Field(description="Weight type from the manifest; selects the comparison rule.")
    rule: str = Field(description="The rule applied, in words.")
    input: dict | None = Field(None, description="Input details the ARM64 runtime reported (dtype, quantization).")
    outputs: list[OutputParity] = Field(default_factory=list, description="One comparison per output tensor.")
    error: str | None = Field(None, description="Why the file could not be run, if it could not.")
    passed: bool = Field(description="True when every output meets the rule and both runs succeeded.")


class VerifyReport(BaseModel):
    """Result of ``edgecomp verify --arch arm64``: per-file parity between the host and emulated ARM64."""

    bundle: str = Field(description="The bundle folder.")
    target: str = Field(description="The bundle's deployment target.")
    arch: str = Field(description="Architecture verified against the host.")
    cpu: str = Field(description="CPU model qemu emulated.")
    samples: int = Field(description="Number of input samples run through each file.")
    host: dict = Field(description="Host machine and runtime versions.")
    emulated: dict = Field(description="Emulated machine, CPU features seen, and runtime versions.")
    artifacts: list[ArtifactParity] = Field(description="One verdict per .tflite/.onnx file.")
    skipped: list[str] = Field(default_factory=list, description="Files not verified (other formats).")
    skip_reasons: dict[str, str] = Field(default_factory=dict, description="Why each skipped file was not verified.")
    check_seconds: float = Field(description="Wall-clock time of the whole check; NOT a latency.")
    passed: bool = Field(description="True when every verified file passed.")


def _bundle_inputs(bundle: Path, max_samples: int | None) -> tuple[list[FileEntry], list[str], np.ndarray, str]:
    """Check the bundle and return its runnable files, the skipped ones, the inputs, and the target."""
    if not bundle.is_dir():
        raise ConfigError(f"bundle folder {bundle} does not exist", "pass a folder written by `edgecomp build`")
    manifest = read_manifest(bundle)
    samples = contained(bundle, SAMPLES_NAME)
    if not samples.is_file():
        raise ConfigError(f"no {SAMPLES_NAME} in {bundle}: nothing to run the models on",
                          "rebuild the bundle with `edgecomp build`, which writes the evaluation inputs")
    try:
        with np.load(samples, allow_pickle=False) as data:
            if "x" not in data.files:
                raise ConfigError(f"{samples} has no array 'x' (has {data.files})", "rebuild the bundle")
            x = np.asarray(data["x"], np.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{samples} is not a readable .npz: {exc}", "rebuild the bundle") from exc
    if x.ndim < 2 or len(x) == 0:
        raise ConfigError(f"{samples}: 'x' has shape {list(x.shape)}; expected a batch of samples",
                          "rebuild the bundle")
    if max_samples:
        x = x[:max_samples]
    files, skipped = [], []
    for entry in manifest.files:
        if get_format(entry.format).arm64 is None:
            skipped.append(entry.path)
            continue
        path = contained(bundle, entry.path)
        if not path.is_file():
            raise ConfigError(f"{entry.path} is listed in edgecomp.json but missing from {bundle}",
                              "rebuild the bundle; do not move files out of it")
        if sha256_of(path) != entry.sha256:
            raise ConfigError(f"{entry.path} does not match the sha256 in edgecomp.json (changed after the build)",
                              "rebuild the bundle")
        files.append(entry)
    if not files:
        verifiable = [n for n in format_names() if FORMATS[n].arm64]
        raise ConfigError(f"{bundle} holds no file that runs on emulated ARM64 ({', '.join(verifiable)})",
                          f"build for a target whose formats include {' or '.join(verifiable)} (e.g. android-arm64)")
    return files, skipped, x, manifest.target


def _request(folder: Path, name: str, files: list[FileEntry], bundle: Path, site: Path | None) -> Path:
    req = {"site": str(site) if site else None, "inputs": str(folder / "x.npy"), "threads": 1,
           "out": str(folder / f"{name}.npz"), "meta": str(folder / f"{name}.json"),
           "models": [{"path": str(contained(bundle, f.path)), "format": get_format(f.format).arm64}
                      for f in files]}
    path = folder / f"{name}-request.json"
    path.write_text(json.dumps(req))
    return path


def _load(folder: Path, name: str) -> tuple[dict, dict]:
    meta = json.loads((folder / f"{name}.json").read_text())
    with np.load(folder / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return meta, arrays


def verify_bundle(bundle: str | Path, arch: str = "arm64", root: Path | None = None, cpu: str = DEFAULT_CPU,
                  max_samples: int | None = None, timeout: float = 900) -> VerifyReport:
    """Run the bundle's .tflite/.onnx files on the host and under ARM64 emulation and compare the outputs.

    Raises ConfigError for a bad bundle and EmulationError when the userland is missing or emulation
    fails; a parity failure is not raised but reported (``passed`` is False), see ``require_passed``.
    """
    if arch != "arm64":
        raise ConfigError(f"unknown architecture '{arch}'", "the only architecture verified is arm64")
    check_cpu(cpu)
    start = time.perf_counter()
    bundle = Path(bundle)
    files, skipped, x, target = _bundle_inputs(bundle, max_samples)
    land = load_userland(root)
    with tempfile.TemporaryDirectory(prefix="edgecomp-verify-") as tmp:
        folder = Path(tmp)
        np.save(folder / "x.npy", x)
        logger.info("running %d file(s) on %d samples on the host", len(files), len(x))
        host_req = _request(folder, "host", files, bundle, None)
        # -I: the worker's folder, the cwd and PYTHON* variables stay off its path; cwd: our own folder.
        proc = subprocess.run([sys.executable, "-I", str(WORKER), str(host_req)], check=False,
                              capture_output=True, text=True, cwd=folder)
        if proc.returncode != 0:
            raise EmulationError(f"the host run failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}",
                                 "check that the bundle's files load with ai-edge-litert/onnxruntime here")
        logger.info("running them under ARM64 emulation (%s); this is slow and its time means nothing", cpu)
        arm_req = _request(folder, "arm64", files, bundle, land.site)
        land.run(str(WORKER), str(arm_req), cpu=cpu, timeout=timeout)
        host_meta, host_out = _load(folder, "host")
        arm_meta, arm_out = _load(folder, "arm64")
    kinds = read_manifest(bundle).model.output_kinds()  # which outputs are class logits (top-1 compared)
    artifacts = [_judge(i, f, host_meta["models"][i], arm_meta["models"][i], host_out, arm_out, kinds)
                 for i, f in enumerate(files)]
    return VerifyReport(bundle=str(bundle), target=target, arch=arch, cpu=cpu, samples=len(x),
                        host=host_meta["versions"], emulated=arm_meta["versions"], artifacts=artifacts,
                        skipped=skipped, skip_reasons=_skip_reasons(bundle, skipped), check_seconds=round(time.perf_counter() - start, 1),
                        passed=all(a.passed for a in artifacts))


def _skip_reasons(bundle: Path, skipped: list[str]) -> dict[str, str]:
    """Each skipped file's reason, from its format (e.g. no aarch64 runtime wheel on the package index)."""
    by_path = {f.path: f.format for f in read_manifest(bundle).files}
    return {p: get_format(by_path[p]).arm64_note for p in skipped if p in by_path}


def _judge(i: int, entry: FileEntry, host: dict, arm: dict, host_out: dict, arm_out: dict,
           kinds: list[str] | None = None) -> ArtifactParity:
    base = {"path": entry.path, "format": entry.format, "dtype": entry.dtype,
            "rule": cross_machine_criterion(entry.dtype)}
    for side, meta in (("host", host), ("arm64", arm)):
        if not meta["ok"]:
            return ArtifactParity(**base, error=f"{side}: {meta['error']}", passed=False)
    if host["n_outputs"] != arm["n_outputs"]:
        return ArtifactParity(**base, input=arm["input"], passed=False,
                              error=f"{host['n_outputs']} outputs on the host, {arm['n_outputs']} on arm64")
    known = kinds is not None and len(kinds) == host["n_outputs"]  # the manifest says which outputs are logits
    outputs = [compare_across_machines(host_out[f"m{i}_o{j}"], arm_out[f"m{i}_o{j}"], entry.dtype, j,
                                       logits=kinds[j] == "logits" if known else None)
               for j in range(host["n_outputs"])]
    return ArtifactParity(**base, input=arm["input"], outputs=outputs, passed=all(o.passed for o in outputs))


def require_passed(report: VerifyReport) -> None:
    """Raise ParityError naming the files that differ on ARM64, if any."""
    bad = [a.path for a in report.artifacts if not a.passed]
    if bad:
        raise ParityError(f"{len(bad)} of {len(report.artifacts)} file(s) compute differently on {report.arch} "
                          f"under emulation: {', '.join(bad)}",
                          "its ARM64 kernels compute something else than the host's: re-run with another --cpu "
                          "(e.g. cortex-a53, cortex-a76, max) to find the CPU feature involved, and check the "
                          "file on a real device before shipping it")


def format_table(report: VerifyReport) -> str:
    """A plain-text table of the report, one row per output tensor."""
    em = report.emulated
    title = (f"ARM64 check of {report.bundle} (target {report.target}): {report.samples} samples, "
             f"emulated {report.cpu} [{' '.join(em.get('cpu_features', []))}], "
             f"LiteRT {em.get('ai-edge-litert')}, onnxruntime {em.get('onnxruntime')}")
    header = (f"{'file':<28} {'dtype':<6} {'out':>3} {'max abs err':>12} {'tolerance':>10} {'cos mean':>9} "
              f"{'cos min':>9} {'top-1':>7} {'exact':>5}  verdict")
    lines = [title, header]
    for a in report.artifacts:
        if a.error:
            lines.append(f"{a.path:<28} {a.dtype:<6} {'-':>3} {'error: ' + a.error}")
            continue
        for o in a.outputs:
            tol = f"{o.tolerance:.2e}" if o.tolerance is not None else "-"
            top1 = f"{o.top1_agreement:.2%}" if o.top1_agreement is not None else "-"
            lines.append(f"{a.path:<28} {a.dtype:<6} {o.output:>3} {o.max_abs_err:>12.3e} {tol:>10} "
                         f"{o.cosine_mean:>9.6f} {o.cosine_min:>9.6f} {top1:>7} {'yes' if o.bit_exact else 'no':>5}"
                         f"  {'PASS' if o.passed else 'FAIL'}")
    for path in report.skipped:
        lines.append(f"{path:<28} skipped ({report.skip_reasons.get(path, 'format not runnable on arm64 Linux')})")
    lines.append(f"{'PASSED' if report.passed else 'FAILED'}; the check took {report.check_seconds:.1f} s "
                 "wall-clock (emulation: not a latency)")
    return "\n".join(lines)
