"""Shared by the planner's search tests: the digits model, a small target, a planner on it."""

from __future__ import annotations

import yaml

from edgecomp.compress.base import BuildContext
from edgecomp.plan.planner import Planner
from edgecomp.targets import load_profile, load_target


def small_target(tmp_path, methods=("prune.filter", "quantize.int8"), **budgets):
    """A target like android-arm64 with ``methods`` and the given budgets (size 0.08 MB by default)."""
    base = load_target("android-arm64").model_dump()
    budgets = {"size_mb": 0.08, "latency_ms": None, "accuracy_drop_pct": 50, **budgets}
    base.update(name="search-test", methods=list(methods), hardware="cortex-a76", formats=["onnx"], budgets=budgets)
    path = tmp_path / "search-test.yaml"
    path.write_text(yaml.safe_dump(base))
    return load_target(str(path))


def planner(zoo, target, **kwargs) -> Planner:
    """A planner for the digits model on ``target`` (onnx as the primary format: the quickest overhead export)."""
    model, spec, data = zoo
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=model)
    kwargs.setdefault("max_finetune_epochs", 1)
    # an hour, not the default 10 minutes: on a loaded machine the deadline would cut candidates and tests that
    # compare searches would compare a cut one (the deadline's own tests pass theirs)
    kwargs.setdefault("search_time_s", 3600.0)
    return Planner(model, ctx, target.budgets, "onnx", **kwargs)
