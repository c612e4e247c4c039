"""``BuildOptions``: everything a build can be told besides the model and the target (torch-free, so the CLI can
read them, and ``edgecomp.build_reuse`` key them, before deciding whether the spine must run at all)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgecomp.targets import Budgets

if TYPE_CHECKING:
    from edgecomp.compress.recipe import RecipeStep


@dataclass
class BuildOptions:
    """Everything ``build`` can be told besides the model and the target (CLI flags map 1:1)."""

    out: str | Path | None = None
    recipe: str | list[RecipeStep] | None = None
    input_shape: list[int] | None = None
    weights: str | None = None
    data: str | None = None  # --data: .npz, image folder or dataset factory (edgecomp.data.sources)
    metric: str | None = None  # --metric: top1 (default), top5 or module:fn (edgecomp.metrics)
    preprocess: object | None = None  # image-folder preprocessing (edgecomp.data.preprocess.Preprocess)
    hardware: str | None = None
    budgets: Budgets | None = None
    formats: list[str] | None = None
    threads: int | None = None
    runs: int = 50  # the most host timing runs; fewer once the p50 is known within latency_tolerance
    latency_tolerance: float = 0.02  # stop timing when the p50's 95 % CI half-width is within this fraction
    warmup: int = 5
    seed: int = 0
    skip_failed_formats: bool = False
    allow_parity_failure: bool = False
    search_time_s: float = 600.0
    max_finetune_epochs: int | None = None
    reuse_plans: bool = True
    workers: int | None = None  # --workers N: evaluate candidates in N local processes (edgecomp.plan.executors)
    ray: str | None = None  # --ray [ADDRESS]: evaluate candidates as Ray tasks ("local": a Ray instance of its own)
    search_threads: int | None = None  # torch threads per candidate evaluation (default: cores / workers)
    early_stop: bool = True  # successive halving of candidates (False: --no-early-stop, evaluate every one)
    force: bool = False  # replace an existing folder at ``out`` even if it is not a bundle
    cache: bool = True  # reuse identical exports (and their parity and host timings) from the artifact cache
