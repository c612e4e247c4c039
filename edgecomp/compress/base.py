"""The stage interface: every compression method is a ``Stage`` that registers itself by name.

A stage takes a model and returns a new one (``StageResult``); its configuration is a frozen
pydantic model whose fields each carry a one-line description. The build measures params, MACs and
accuracy after every stage itself, so a stage only reports what is specific to it (in ``metrics``
and ``notes``). Heavy imports belong inside ``apply``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgecomp.data import Dataset
from edgecomp.errors import ConfigError, did_you_mean
from edgecomp.finetune import FinetunePolicy
from edgecomp.spec import ModelSpec
from edgecomp.targets import HardwareProfile, Target

REGISTRY: dict[str, type[Stage]] = {}


class StageConfig(BaseModel):
    """Base of every stage's configuration: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Int8Export(BaseModel):
    """What the int8 quantization stages tell the exporters (and the reports) about the quantized model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["static", "dynamic"] = Field("static", description="Static (calibrated) or dynamic-range int8.")
    weights: Literal["per-channel", "per-tensor"] = Field("per-channel", description="Weight scale granularity.")
    io: Literal["float", "int8"] = Field("float", description="Model input/output dtype of a .tflite file.")
    trim: bool = Field(True, description="Drop what LiteRT does not need from the .tflite.")
    calibration: str | None = Field(None, description="How activation ranges were chosen (reports only).")
    percentile: float | None = Field(None, description="Percentile of calibration='percentile' (reports only).")
    rounding: str | None = Field(None, description="Rounding of weights to int8 (reports only).")
    fixed_point: str | None = Field(None, description="Power-of-two scales, if any (reports only).")
    skip: list[str] = Field(default_factory=list, description="Layers kept in float on purpose (quantize.int8 skip).")
    method: str | None = Field(None, description="ptq or qat (reports only).")


class ExportOptions(BaseModel):
    """How the exporters should write the model; stages such as quantization change these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str = Field("fp32", description="Numeric type of the exported weights: fp32, fp16, int8, binary.")
    int8: Int8Export | None = Field(None, description="How int8 weights/activations were made (quantize stages).")
    palettize_bits: int | None = Field(None, ge=1, le=8, description="Clustered weights: bits of the palette index.")
    compressed_form: bool = Field(False, description="Also write model.ecz (clustered or binary weights, coded).")


@dataclass
class BuildContext:
    """What a stage may read: the model's spec, the target, its hardware, data, teacher, seed, fine-tune policy."""

    spec: ModelSpec
    target: Target
    profile: HardwareProfile
    data: Dataset | None = None
    teacher: nn.Module | None = None
    export: ExportOptions = field(default_factory=ExportOptions)
    seed: int = 0
    threads: int = 2
    finetune_policy: FinetunePolicy = field(default_factory=FinetunePolicy)
    """Whether stages skip their recovery fine-tunes or cap their epochs (pass it to ``finetune``)."""


@dataclass
class StageResult:
    """A stage's output: the new model, stage-specific measurements and notes, and export options."""

    model: nn.Module
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    export: ExportOptions | None = None


SearchRecipe = list[tuple[str, dict[str, Any]]]
"""A recipe the planner may try, as (stage name, settings) pairs in order."""


class Stage(ABC):
    """A compression method. Subclasses set ``name`` and ``Config`` and implement ``apply``.

    The class attributes below tell the planner what it needs without it naming any stage.
    """

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    structural: ClassVar[bool] = True
    """Whether the stage changes the network's shape (and so its MACs and latency), not only weight values."""
    export_dtype: ClassVar[str | None] = None
    """The weight dtype exports take after this stage (None: it leaves the dtype as it was)."""
    search_rank: ClassVar[int] = 0
    """Where the stage's ``search_space`` comes in the planner's candidate list (lower first)."""
    search_appends: ClassVar[bool] = False
    """Whether the planner also tries every structural candidate followed by this stage (e.g. int8)."""
    needs_data: ClassVar[bool] = True
    """Whether the stage's loss can only be known (and recovered) with data: without ``--data`` the planner
    tries only stages that set this False, whose error is bounded without data (fp16, int8 calibrated from
    batch-norm statistics)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    def supports(self, target: Target) -> bool:
        """Whether this stage makes sense on ``target`` (e.g. int8 only where the runtime runs it)."""
        return True

    @classmethod
    def search_space(cls) -> list[SearchRecipe]:
        """The recipes this stage leads in the planner's search (default: none, the planner never tries it).

        A recipe may start with other stages (e.g. magnitude pruning before clustering); the planner drops
        a recipe whose stages the target does not all allow. Structural stages' recipes are also tried
        followed by each ``search_appends`` stage.
        """
        return []

    @classmethod
    def bytes_per_param(cls, cfg: StageConfig, fmt: str) -> float | None:
        """Stored bytes per parameter in format ``fmt`` when the recipe stays fp32 (None: 4, dense fp32)."""
        return None

    @abstractmethod
    def apply(self, model: nn.Module, cfg: StageConfig, ctx: BuildContext) -> StageResult:
        """Return a new model (the input may be modified or copied) and the stage's own record."""


def stage_names() -> list[str]:
    """Names of all registered stages (importing every module in ``edgecomp.compress`` first)."""
    _import_all()
    return sorted(REGISTRY)


def get_stage(name: str) -> type[Stage]:
    """The stage class registered under ``name``, or a ConfigError with a did-you-mean."""
    _import_all()
    if name not in REGISTRY:
        raise ConfigError(
            f"unknown compression method '{name}'." + did_you_mean(name, REGISTRY),
            f"known methods: {', '.join(sorted(REGISTRY))}",
        )
    return REGISTRY[name]


def _import_all() -> None:
    import importlib
    import pkgutil

    from edgecomp import compress

    for mod in pkgutil.iter_modules(compress.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"edgecomp.compress.{mod.name}")
