"""Candidate recipes for the planner, drawn from the methods a target allows.

Order inside a recipe follows the usual pipeline: rewrite -> prune -> weight sharing -> quantize.
Every candidate is a list of validated ``RecipeStep``; candidates whose stage is not installed or not
allowed by the target are simply not generated.
"""

from __future__ import annotations

import logging

from edgecomp.compress.base import stage_names
from edgecomp.compress.recipe import RecipeStep, make_step
from edgecomp.errors import ConfigError
from edgecomp.targets import Target

logger = logging.getLogger(__name__)

PRUNE_RATIOS = (0.3, 0.5, 0.7)
VALUE_ONLY = ("quantize.", "cluster", "binarize")
"""Stages that change weight values or storage but not the network's structure."""


def _step(name: str, **kwargs) -> RecipeStep | None:
    try:
        return make_step(name, kwargs)
    except ConfigError as exc:  # a stage whose settings changed: skip it rather than guess
        logger.debug("planner skips %s(%s): %s", name, kwargs, exc.message)
        return None


def generate(target: Target) -> list[list[RecipeStep]]:
    """All candidate recipes for ``target``: the untouched model first, then single methods, then chains."""
    allowed = set(target.methods) & set(stage_names())
    int8 = "quantize.int8" in allowed and "int8" in target.dtypes
    structural: list[list[RecipeStep | None]] = []
    if "separable" in allowed:
        structural.append([_step("separable")])
    if "lowrank" in allowed:
        structural.append([_step("lowrank")])
    if "prune.filter" in allowed:
        structural += [[_step("prune.filter", ratio=r)] for r in PRUNE_RATIOS]
    if "separable" in allowed and "prune.filter" in allowed:
        structural.append([_step("separable"), _step("prune.filter", ratio=0.5)])
    candidates: list[list[RecipeStep | None]] = [[]]
    if int8:
        candidates.append([_step("quantize.int8")])
    if "cluster" in allowed:
        candidates.append([_step("cluster")])
    if "prune.magnitude" in allowed and "cluster" in allowed:
        candidates.append([_step("prune.magnitude"), _step("cluster")])
    for chain in structural:
        candidates.append(chain)
        if int8:
            candidates.append(chain + [_step("quantize.int8")])
    return [c for c in candidates if all(s is not None for s in c)]  # type: ignore[misc]


def is_structural(step: RecipeStep) -> bool:
    """Whether ``step`` changes the network's shape (and so its MACs and latency)."""
    return not step.name.startswith(VALUE_ONLY)


def dtype_of(recipe: list[RecipeStep]) -> str:
    """The weight dtype a recipe exports with."""
    return "int8" if any(s.name in ("quantize.int8", "binarize") for s in recipe) else "fp32"


def bytes_per_param(recipe: list[RecipeStep], fmt: str) -> float:
    """Stored bytes per parameter in ``fmt`` after ``recipe`` (palettized CoreML stores n-bit indices)."""
    if dtype_of(recipe) == "int8":
        return 1.0
    for step in recipe:
        bits = getattr(step.config, "bits", None)
        if step.name == "cluster" and fmt == "coreml" and bits:
            return bits / 8.0
    return 4.0
