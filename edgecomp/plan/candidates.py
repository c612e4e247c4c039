"""Candidate recipes for the planner, drawn from the stages a target allows.

The planner never names a stage: each ``Stage`` declares whether it is structural, the dtype it exports
with, its bytes per parameter and its ``search_space`` (see ``compress/base.py``). The list is the
untouched model first, then the value-only stages' recipes, then every structural recipe alone and
followed by each ``search_appends`` stage (int8), each group in ``search_rank`` order. Recipes whose
stages are not installed, not allowed by the target or not supported by it are simply not generated.
Without data (``data_free``) only stages that declare ``needs_data = False`` take part: what the planner
can bound without measuring accuracy (fp16, int8 calibrated from batch-norm statistics).

A value-only stage that names an ``accuracy_budget_setting`` (int8's ``max_drop``) also gets a copy of
its recipe with that setting at the target's accuracy budget, right after it, when there is data: where the
plain recipe misses the budget, that copy keeps its most sensitive layers float until the budget holds.
"""

from __future__ import annotations

import logging
from typing import Any

from edgecomp.compress.base import SearchRecipe, Stage, get_stage, stage_names
from edgecomp.compress.recipe import RecipeStep, make_step
from edgecomp.dtypes import bytes_per_weight
from edgecomp.errors import ConfigError
from edgecomp.targets import Target

logger = logging.getLogger(__name__)


def _step(name: str, kwargs: dict[str, Any]) -> RecipeStep | None:
    try:
        return make_step(name, kwargs)
    except ConfigError as exc:  # a stage whose settings changed: skip it rather than guess
        logger.debug("planner skips %s(%s): %s", name, kwargs, exc.message)
        return None


def _usable_stages(target: Target, data_free: bool = False) -> dict[str, type[Stage]]:
    """The stages ``target`` allows, that are installed and that support it (and need no data), by name."""
    installed = set(stage_names())
    stages = {name: get_stage(name) for name in target.methods if name in installed}
    return {name: cls for name, cls in stages.items()
            if cls().supports(target) and not (data_free and cls.needs_data)}


def generate(target: Target, data_free: bool = False) -> list[list[RecipeStep]]:
    """All candidate recipes for ``target``: the untouched model first, then single methods, then chains.

    With ``data_free``, only recipes whose every stage needs no data (``Stage.needs_data`` False).
    """
    usable = _usable_stages(target, data_free)
    leads = sorted(usable.values(), key=lambda cls: (cls.search_rank, cls.name))

    def recipes(structural: bool) -> list[SearchRecipe]:
        return [recipe for cls in leads if cls.structural == structural for recipe in cls.search_space()
                if all(name in usable for name, _ in recipe)]

    def with_budget(recipe: SearchRecipe) -> list[SearchRecipe]:
        budget = target.budgets.accuracy_drop_pct
        setting = getattr(get_stage(recipe[-1][0]), "accuracy_budget_setting", None) if recipe else None
        if data_free or budget is None or setting is None:
            return [recipe]
        return [recipe, [*recipe[:-1], (recipe[-1][0], {**recipe[-1][1], setting: budget})]]

    appended: list[SearchRecipe] = [[(cls.name, {})] for cls in leads if cls.search_appends]
    candidates: list[SearchRecipe] = [[], *(r for recipe in recipes(structural=False) for r in with_budget(recipe))]
    for chain in recipes(structural=True):
        candidates += [chain] + [chain + extra for extra in appended]
    steps = [[_step(name, kwargs) for name, kwargs in recipe] for recipe in candidates]
    return [recipe for recipe in steps if all(s is not None for s in recipe)]  # type: ignore[misc]


def is_structural(step: RecipeStep) -> bool:
    """Whether ``step`` changes the network's shape (and so its MACs and latency)."""
    return get_stage(step.name).structural


def dtype_of(recipe: list[RecipeStep]) -> str:
    """The weight dtype a recipe exports with: the last one a stage sets, else fp32."""
    dtype = "fp32"
    for step in recipe:
        dtype = get_stage(step.name).export_dtype or dtype
    return dtype


def bytes_per_param(recipe: list[RecipeStep], fmt: str) -> float:
    """Stored bytes per parameter in ``fmt`` after ``recipe`` (palettized CoreML stores n-bit indices)."""
    dtype = dtype_of(recipe)
    if dtype == "fp32":
        for step in recipe:
            stored = get_stage(step.name).bytes_per_param(step.config, fmt)
            if stored is not None:
                return stored
    return bytes_per_weight(dtype)
