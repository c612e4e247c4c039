"""Recipes: an ordered list of stages with their settings, parsed from a short text form.

Syntax: stages separated by ``,`` or ``->``; each is a registered method name with optional keyword
arguments whose values are Python literals, e.g.::

    prune.filter(ratio=0.5) -> quantize.int8(calibration="percentile")
    separable(rank=1), distill(epochs=10)

A preset name (see ``PRESETS``) expands to its recipe. Nothing in a recipe is evaluated as code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edgecomp.compress.base import StageConfig, get_stage, stage_names
from edgecomp.errors import ConfigError, did_you_mean

PRESETS: dict[str, str] = {}
"""Named recipes, e.g. ``deep-compression``; stage modules add theirs on import."""


@dataclass(frozen=True)
class RecipeStep:
    """One stage of a recipe: the registered method name and its validated configuration."""

    name: str
    config: StageConfig

    def describe(self) -> str:
        """Text form that parses back to this step (non-default settings only)."""
        args = self.config.model_dump(exclude_defaults=True)
        inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return f"{self.name}({inner})" if inner else self.name


def _split(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    text = text.replace("->", ",")
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise ValueError("not a name")


def make_step(name: str, kwargs: dict[str, Any]) -> RecipeStep:
    """Validate ``kwargs`` against the stage's Config and return the step (ConfigError if invalid)."""
    stage = get_stage(name)
    try:
        return RecipeStep(name, stage.Config(**kwargs))
    except ValidationError as exc:
        fields = list(stage.Config.model_fields)
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            hint = did_you_mean(key, fields) if err["type"] == "extra_forbidden" else ""
            problems.append(f"'{key}': {err['msg']}.{hint}")
        raise ConfigError(
            f"bad settings for {name}: " + " ".join(problems),
            f"{name} takes: " + ", ".join(f"{k} ({f.description})" for k, f in stage.Config.model_fields.items()),
        ) from exc


def parse_recipe(text: str) -> list[RecipeStep]:
    """Parse a recipe string (or preset name) into validated steps; ConfigError on any mistake."""
    stage_names()  # import every stage module, so that their presets are known
    steps: list[RecipeStep] = []
    for part in _split(text):
        if part in PRESETS:
            steps.extend(parse_recipe(PRESETS[part]))
            continue
        try:
            node = ast.parse(part, mode="eval").body
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if node.args:
                    raise ValueError("positional arguments are not allowed; use name=value")
                kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
            else:
                name, kwargs = _dotted(node), {}
        except (SyntaxError, ValueError) as exc:
            raise ConfigError(
                f"cannot parse recipe step '{part}': {exc}",
                'write steps like prune.filter(ratio=0.5) -> quantize.int8, with literal values',
            ) from exc
        steps.append(make_step(name, kwargs))
    return steps
