"""The format interface: every export format is a ``Format`` subclass that registers itself by name.

A format says what the rest of edgecomp needs without anyone naming it: its file name, the weight dtypes it can
carry, how to export a model to it, how to run it on the host (``runner``: a ``module:callable`` taking
``(path, threads)``, importable without torch so that host latency measures the runtime alone), whether the
latency predictor reads its graph, whether ``edgecomp verify --arch arm64`` can run it, and its entry in the
bundle manifest. Build, bundle, runtime, profile and verify ask this registry (``get_format``,
``format_names``). Adding a format is one new public module in ``edgecomp/export/`` plus listing it in the
targets that want it. Converters and runtimes are imported inside the methods, never at module level.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from edgecomp.errors import ConfigError, ExportError, did_you_mean

if TYPE_CHECKING:
    from edgecomp.bundle import FileEntry
    from edgecomp.compress.base import ExportOptions
    from edgecomp.export.common import ExportedArtifact
    from edgecomp.records import ArtifactRecord
    from edgecomp.spec import ModelSpec

FORMATS: dict[str, type[Format]] = {}


class Runner(Protocol):
    """One loaded model file on the host: float inputs in, float outputs out (the model's order)."""

    input_shape: list[int]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output for one input of ``input_shape``."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The first output for one input of ``input_shape``."""


class Format(ABC):
    """An export format. Subclasses set the class attributes below and implement ``export``."""

    name: ClassVar[str]
    """Name used by --formats, targets, reports and the manifest (e.g. ``tflite``)."""
    filename: ClassVar[str]
    """File (or folder) name inside the bundle."""
    dtypes: ClassVar[tuple[str, ...]] = ("fp32",)
    """Weight dtypes the format can carry (``ExportOptions.dtype``)."""
    runner: ClassVar[str | None] = None
    """``module:callable`` building a :class:`Runner` from ``(path, threads)``; None: no host runtime."""
    no_runner_note: ClassVar[str] = "no runtime for this format on this machine"
    """Why parity and latency are not measured when there is no runner."""
    predictor_reads: ClassVar[bool] = False
    """Whether the latency predictor reads this file's graph (else it costs the torch layers)."""
    predicted: ClassVar[bool] = True
    """Whether a latency prediction is made for the file at all (False for weight containers)."""
    arm64: ClassVar[str | None] = None
    """Key of the runner in ``edgecomp.verify.worker`` for the emulated ARM64 check; None: not verified."""
    arm64_note: ClassVar[str] = "format not runnable on arm64 Linux"
    """Why ``verify --arch arm64`` skips the file when ``arm64`` is None."""
    selectable: ClassVar[bool] = True
    """Whether --formats and targets may name it (False for files that stages request, e.g. model.ecz)."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Python modules the export needs beyond edgecomp's own dependencies (checked before exporting)."""
    install: ClassVar[str] = ""
    """The command that installs ``requires``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            FORMATS[cls.name] = cls

    @classmethod
    def requested_by(cls, options: ExportOptions) -> bool:
        """Whether the stages asked for this format although the target does not list it (e.g. model.ecz)."""
        return False

    def check(self, options: ExportOptions) -> None:
        """Raise a clear error before exporting when the dtype cannot be carried or a dependency is missing."""
        if options.dtype not in self.dtypes:
            carriers = [n for n in format_names() if options.dtype in FORMATS[n].dtypes and FORMATS[n].selectable]
            raise ExportError(
                f"{self.name} cannot carry {options.dtype} weights (it carries {', '.join(self.dtypes)})",
                f"formats that carry {options.dtype}: {', '.join(carriers) or 'none'}; build those with "
                f"--formats, or change the recipe")
        self.check_installed()

    def check_installed(self) -> None:
        """Raise an ExportError naming the install command when a module the export needs is missing."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise ExportError(f"{self.name} export needs {', '.join(missing)}, which is not installed",
                              f"install it with: {self.install}" if self.install else "install it")

    @abstractmethod
    def export(self, model: Any, spec: ModelSpec, options: ExportOptions, path: Path,
               calibration: np.ndarray | None = None) -> ExportedArtifact:
        """Write ``model`` to ``path`` in this format; return the artifact with its I/O tensors."""

    def make_runner(self, path: str | Path, threads: int = 2) -> Runner:
        """The host runner of a file of this format, or an ExportError when there is none."""
        if self.runner is None:
            raise ExportError(f"no host runtime for {self.name}: {self.no_runner_note}",
                              f"run it on its own platform; formats that run here: {', '.join(runnable_names())}")
        return load_callable(self.runner)(path, threads)

    def host_outputs(self, artifact: ExportedArtifact, model: Any, x: np.ndarray,
                     input_shape: list[int], threads: int) -> list[np.ndarray] | None:
        """Every output of the exported file for the rows of ``x`` (None when it cannot run here)."""
        if self.runner is None or not artifact.runnable:
            return None
        from edgecomp.export.runtime import run_artifact_outputs

        return run_artifact_outputs(self.name, artifact.path, x, input_shape, threads)

    def manifest_entry(self, artifact: ExportedArtifact, record: ArtifactRecord) -> FileEntry | None:
        """The bundle manifest's entry for the file (None: not listed, e.g. not a runtime format)."""
        from edgecomp.bundle import FileEntry

        return FileEntry(format=self.name, path=record.path, bytes=record.bytes, sha256=record.sha256,
                         dtype=artifact.dtype, inputs=artifact.inputs, outputs=artifact.outputs)

    def finish(self, record: ArtifactRecord, others: list[ArtifactRecord]) -> None:
        """Add what depends on the other formats' records (default: nothing)."""


def load_callable(ref: str) -> Any:
    """The attribute named by ``module:attr``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def format_names() -> list[str]:
    """Names of every registered format (importing every public module of ``edgecomp.export`` first)."""
    _import_all()
    return list(FORMATS)


def runnable_names() -> list[str]:
    """Names of the formats with a host runner."""
    return [n for n in format_names() if FORMATS[n].runner is not None]


def format_of_file(path: str | Path) -> Format | None:
    """The registered format whose file name has the suffix of ``path`` (None if none has)."""
    suffix = Path(path).suffix
    return next((get_format(n) for n in format_names() if suffix and Path(FORMATS[n].filename).suffix == suffix),
                None)


def get_format(name: str) -> Format:
    """The format registered under ``name``, or a ConfigError with a did-you-mean."""
    if name not in FORMATS:
        _import_all()
    if name not in FORMATS:
        raise ConfigError(f"unknown format '{name}'." + did_you_mean(name, FORMATS),
                          f"known formats: {', '.join(FORMATS)}")
    return FORMATS[name]()


def _import_all() -> None:
    import pkgutil

    from edgecomp import export

    for mod in pkgutil.iter_modules(export.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"edgecomp.export.{mod.name}")
