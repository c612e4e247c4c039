"""Recipes: an ordered list of stages with their settings, parsed from a short text form.

Syntax: stages separated by ``,`` or ``->``; each is a registered method name with optional keyword
arguments whose values are Python literals, e.g.::

    prune.filter(ratio=0.5) -> quantize.int8(calibration="percentile")
    separable(rank=1), distill(epochs=10)

A preset name (see ``PRESETS``) expands to its recipe. Nothing in a recipe is evaluated as code.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edgecomp.compress.base import StageConfig, get_stage, stage_names
from edgecomp.errors import ConfigError, did_you_mean

MAX_STEP_CHARS = 1000
"""Longest text of one step (stage name and settings); real steps are well under 200."""
MAX_NESTING = 8
"""Deepest bracket nesting in a recipe (a list of tuples is 2)."""
STEP_HINT = "write steps like prune.filter(ratio=0.5) -> quantize.int8, with literal values"

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
    """Stages of a recipe: split at top-level ``,`` and ``->``; ConfigError when brackets nest too deep."""
    parts, depth, cur = [], 0, ""
    text = text.replace("->", ",")
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > MAX_NESTING:
            raise ConfigError(f"recipe nests brackets more than {MAX_NESTING} deep", STEP_HINT)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _shown(part: str, limit: int = 80) -> str:
    """The step quoted for a message, shortened when long."""
    return repr(part) if len(part) <= limit else repr(part[:limit]) + "..."


def _dotted(node: ast.AST) -> str:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise TypeError("a step is a method name like quantize.int8, optionally with (name=value, ...)")
    return ".".join([node.id, *reversed(names)])


def _parse_step(part: str) -> tuple[str, dict[str, Any]]:
    """(method name, literal keyword arguments) of one step; SyntaxError/ValueError/TypeError say what is wrong.

    Only ``ast.literal_eval`` sees the values: nothing in a recipe is evaluated as code.
    """
    with warnings.catch_warnings():  # e.g. "invalid decimal literal": the error that follows says enough
        warnings.simplefilter("ignore", SyntaxWarning)
        node = ast.parse(part, mode="eval").body
    if not isinstance(node, ast.Call):
        return _dotted(node), {}
    name = _dotted(node.func)
    if node.args:
        raise ValueError("positional arguments are not allowed; use name=value")
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("**arguments are not allowed; write each setting as name=value")
        if kw.arg in kwargs:
            raise ValueError(f"setting '{kw.arg}' is given twice")
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise ValueError(f"the value of '{kw.arg}' is not a literal (a number, string, True, False, None, "
                             "or a list, tuple or dict of them)") from None
    return name, kwargs


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
        if len(part) > MAX_STEP_CHARS:
            raise ConfigError(f"recipe step {_shown(part)} is {len(part)} characters long "
                              f"(at most {MAX_STEP_CHARS})", STEP_HINT)
        try:
            name, kwargs = _parse_step(part)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError) as exc:
            reason = "it nests too deeply" if isinstance(exc, (RecursionError, MemoryError)) else str(exc)
            raise ConfigError(f"cannot parse recipe step {_shown(part)}: {reason}", STEP_HINT) from exc
        steps.append(make_step(name, kwargs))
    return steps
