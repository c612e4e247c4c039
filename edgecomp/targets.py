"""Deployment targets and hardware profiles: frozen, versioned schemas loaded from YAML.

This module never imports torch. A target (``<name>.yaml`` in a targets folder) says what a deployment can
run; a hardware profile (``<name>.yaml`` in a profiles folder) says what the silicon does. Both are validated
strictly: unknown keys, wrong types and unknown names give a :class:`ConfigError` naming the file and the key.

The built-in ones ship inside the package (``edgecomp/resources/targets`` and ``.../profiles``, found with
:mod:`importlib.resources`, so a wheel install has them); ``$EDGECOMP_TARGETS_PATH`` and
``$EDGECOMP_PROFILES_PATH`` (``os.pathsep``-separated folders) add more and win on equal names.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgecomp.errors import ConfigError, did_you_mean

KINDS = ("targets", "profiles")
PLAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a file name: no '/', no leading '.' (so never '..')
FORMAT_NAME = r"^[a-z][a-z0-9_]*$"  # a registered export format (edgecomp.export.base; checked at build time)
DType = Literal["fp32", "fp16", "int8", "binary"]


class Frozen(BaseModel):
    """Base for configuration schemas: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Budgets(Frozen):
    """What a build must meet; ``None`` means no limit."""

    size_mb: float | None = Field(None, gt=0, description="Largest allowed model file, in MB (1e6 bytes).")
    latency_ms: float | None = Field(None, gt=0, description="Largest allowed p50 latency on the hardware.")
    accuracy_drop_pct: float | None = Field(
        None, ge=0, description="Largest allowed top-1 drop against the source model, in points."
    )

    def missed(self, size_bytes: float | None = None, latency_ms: float | None = None,
               accuracy_drop: float | None = None, *, size_what: str = "size", latency_source: str = "",
               accuracy_what: str = "accuracy drop") -> list[str]:
        """The one budget check (planner and build): each budget these numbers miss, in words.

        A number that is None is not checked; an empty list means every checked budget is met. The words
        name what was measured (``size_what``, ``accuracy_what``) and where a latency came from.
        """
        misses = []
        if self.size_mb is not None and size_bytes is not None and size_bytes > self.size_mb * 1e6:
            misses.append(f"{size_what} {size_bytes / 1e6:.4f} MB > {self.size_mb} MB")
        if self.latency_ms is not None and latency_ms is not None and latency_ms > self.latency_ms:
            source = f" ({latency_source})" if latency_source else ""
            misses.append(f"latency {latency_ms:.4f} ms > {self.latency_ms} ms{source}")
        if (self.accuracy_drop_pct is not None and accuracy_drop is not None
                and accuracy_drop > self.accuracy_drop_pct):
            misses.append(f"{accuracy_what} {accuracy_drop:.2f} pt > {self.accuracy_drop_pct} pt")
        return misses


class Target(Frozen):
    """A deployment target: runtime, formats, dtypes, default hardware, budgets, allowed methods."""

    schema_version: Literal[1] = Field(description="Version of this schema.")
    name: str = Field(pattern=PLAIN_NAME, description="Target name, as given to --target: letters, digits, ._-")
    description: str = Field(description="One line shown by `edgecomp targets`.")
    runtime: Literal["litert", "onnxruntime", "coreml"] = Field(description="Runtime that will run the model.")
    formats: list[Annotated[str, Field(pattern=FORMAT_NAME)]] = Field(
        min_length=1, description="Formats exported, in order of preference (e.g. tflite, onnx, coreml).")
    optional_formats: list[Annotated[str, Field(pattern=FORMAT_NAME)]] = Field(
        default_factory=list, description="Formats the target can also ship, exported when asked (--formats).")
    dtypes: list[DType] = Field(min_length=1, description="Numeric types the runtime runs well.")
    hardware: str = Field(description="Default hardware profile name (profiles/<name>.yaml).")
    threads: int = Field(4, ge=1, description="Threads the runtime uses on the device.")
    budgets: Budgets = Field(default_factory=Budgets, description="Default budgets; CLI flags override.")
    methods: list[str] = Field(default_factory=list, description="Compression methods the planner may try.")


class CoreSpec(Frozen):
    """One cluster of identical CPU cores."""

    count: int = Field(ge=1, description="Number of cores in the cluster.")
    clock_ghz: float = Field(gt=0, description="Sustained clock in GHz.")
    fp32_flops_per_cycle: float = Field(gt=0, description="Peak fp32 FLOP per cycle per core (FMA = 2).")
    int8_ops_per_cycle: float = Field(gt=0, description="Peak int8 OP per cycle per core (e.g. SDOT).")


class HardwareProfile(Frozen):
    """What a piece of silicon does: cores, peak rates, bandwidth, per-op efficiency, calibration."""

    schema_version: Literal[1] = Field(description="Version of this schema.")
    name: str = Field(pattern=PLAIN_NAME, description="Profile name, as given to --hardware: letters, digits, ._-")
    description: str = Field(description="One line describing the silicon.")
    arch: Literal["arm64", "x86_64"] = Field(description="Instruction set.")
    cores: CoreSpec = Field(description="The cores a model runs on.")
    memory_bandwidth_gbs: float = Field(gt=0, description="Sustained DRAM bandwidth in GB/s.")
    efficiency: dict[str, float] = Field(
        default_factory=dict, description="Fraction of peak reached per op type (conv, depthwise, fc, ...)."
    )
    overhead_us: float = Field(0.0, ge=0, description="Fixed cost per op invocation, in microseconds.")
    thread_sync_us: float = Field(
        0.0, ge=0, description="Extra cost per op and per extra thread of handing work out and waiting for it (µs)."
    )
    prime_cores: CoreSpec | None = Field(
        None, description="A faster cluster that threads use first (e.g. the 2.84 GHz A76 of a Pixel 4)."
    )
    parallel_efficiency: float = Field(
        0.9, gt=0, le=1, description="Speed-up of each extra thread as a fraction of one core (1 = perfect)."
    )
    memory_parallel_efficiency: float | None = Field(
        None, ge=0, le=1, description="Speed-up of each extra thread on memory-bound work (None: parallel_efficiency)."
    )
    gemm_tile: dict[str, int] = Field(
        default_factory=dict, description="Output-channel tile width of the GEMM micro-kernels per dtype (fp32, int8; "
        "<dtype>_narrow: the narrower kernel for layers of fewer output channels than a tile)."
    )
    gemm_kr: dict[str, int] = Field(
        default_factory=dict, description="Input channels the GEMM micro-kernels consume at a time per dtype "
        "(XNNPACK's kr; each kernel tap's channels are padded to a multiple of it; absent: 1)."
    )
    cache_mb: float = Field(
        0.0, ge=0, description="Last-level cache in MB; weights of a model larger than this stream from DRAM."
    )
    cache_bandwidth_gbs: float | None = Field(
        None, gt=0, description="Bandwidth for data that stays in cache (used when cache_mb > 0)."
    )
    l2_kb: float = Field(
        0.0, ge=0, description="Per-core L2 cache in KB; GEMM weights larger than this are re-read from the "
        "last-level cache for every block of gemm_rows output pixels (0: ignore)."
    )
    gemm_rows: int = Field(4, ge=1, description="Output pixels per GEMM micro-kernel block (XNNPACK's mr).")
    small_k: float = Field(
        0.0, ge=0, description="Reduction length (Cin*kh*kw) at which a convolution reaches half its efficiency."
    )
    small_k_int8: float | None = Field(
        None, ge=0, description="small_k for int8 kernels, whose per-output requantization costs more (None: small_k)."
    )
    calibration: dict[str, Any] = Field(
        default_factory=dict, description="Written by `edgecomp profile --calibrate`: fitted values and provenance."
    )


def packaged_dir(kind: str) -> Path:
    """The folder of built-in ``kind`` ('targets' or 'profiles') YAML files shipped inside the package."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return Path(str(files("edgecomp").joinpath("resources", kind)))


def user_dir(kind: str) -> Path:
    """The user's folder of ``kind`` (``$EDGECOMP_USER_<KIND>_DIR``, else ``<user config dir>/edgecomp/<kind>``):
    where ``edgecomp profile --calibrate`` writes, never into the installed package."""
    env = os.environ.get(f"EDGECOMP_USER_{kind.upper()}_DIR")
    if env:
        return Path(env)
    import platformdirs

    return platformdirs.user_config_path("edgecomp") / kind


def search_dirs(kind: str) -> list[Path]:
    """Directories searched for ``kind``: those of $EDGECOMP_<KIND>_PATH, the user's folder, then the built-in ones."""
    env = os.environ.get(f"EDGECOMP_{kind.upper()}_PATH")
    dirs = [Path(p) for p in env.split(os.pathsep) if p] if env else []
    return dirs + [user_dir(kind), packaged_dir(kind)]


def available(kind: str) -> dict[str, Path]:
    """Map each known name of ``kind`` to its YAML file (earlier search dirs win)."""
    found: dict[str, Path] = {}
    for d in reversed(search_dirs(kind)):
        for path in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            found[path.stem] = path
    return found


def _load_yaml(path: Path, schema: type[Frozen]) -> Any:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})", "fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level",
                          "see `edgecomp targets show host` for the shape")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}", f"fix these keys; the schema is {schema.__name__}") from exc


def resolve_path(kind: str, name_or_path: str) -> Path:
    """The YAML file of ``kind`` ('targets' or 'profiles'): a path ending in .yaml/.yml, or a known name.

    An unknown name is a :class:`ConfigError` with a did-you-mean and the known names.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"{kind[:-1]} file not found: {candidate}", "check the path")
        return candidate
    known = available(kind)
    if name_or_path not in known:
        raise ConfigError(
            f"unknown {kind[:-1]} '{name_or_path}'." + did_you_mean(name_or_path, known),
            f"known {kind}: {', '.join(sorted(known))} (`edgecomp {kind}` lists them)",
        )
    return known[name_or_path]


def load_target(name_or_path: str, *, check_methods: bool = True) -> Target:
    """Load and validate a target by name (``<name>.yaml`` in :func:`search_dirs`) or by path to a YAML file.

    With ``check_methods`` (the default) every entry of ``methods`` must name a registered compression
    stage; that imports the stage registry (and torch), so only a caller that reads the schema alone
    (``edgecomp targets`` listing) turns it off.
    """
    path = resolve_path("targets", name_or_path)
    target = _load_yaml(path, Target)
    if check_methods:
        _check_methods(target, path)
    return target


def _check_methods(target: Target, path: Path) -> None:
    """A ConfigError, with a did-you-mean, for a ``methods`` entry that no compression stage is registered as."""
    from edgecomp.compress.base import stage_names  # lazy: the registry imports every stage, and torch

    known = stage_names()
    for method in target.methods:
        if method not in known:
            raise ConfigError(
                f"{path}: key 'methods': unknown compression method '{method}'." + did_you_mean(method, known),
                f"use one of: {', '.join(known)}",
            )


def load_profile(name_or_path: str) -> HardwareProfile:
    """Load and validate a hardware profile by name (``<name>.yaml`` in :func:`search_dirs`) or path."""
    return _load_yaml(resolve_path("profiles", name_or_path), HardwareProfile)
