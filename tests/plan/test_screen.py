"""Screening by family: a structural prefix shared by several candidates is applied once, with the same
predictions as screening each candidate on its own."""

from __future__ import annotations

import io
import logging

import pytest

import edgecomp.plan.screen as screen_module
from edgecomp.compress.base import BuildContext
from edgecomp.compress.recipe import parse_recipe
from edgecomp.plan.candidate import Candidate
from edgecomp.plan.candidates import dtype_of
from edgecomp.plan.screen import family, screen
from edgecomp.plan.tasks import EvalTask, ScreenJob, run_task
from edgecomp.targets import Budgets, load_profile, load_target
from edgecomp.zoo import load_zoo_model

RECIPES = ["separable", "separable -> quantize.int8", "separable -> prune.filter", "prune.filter"]


@pytest.fixture(scope="module")
def setup():
    model, spec, data = load_zoo_model()
    target = load_target("android-arm64")
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=model)
    return model, ctx, Budgets(size_mb=0.05)


def _predictions(c: Candidate):
    return c.status, c.reason, c.params, c.macs, c.predicted_bytes, c.predicted_ms


def test_a_family_applies_its_shared_prefix_once_and_predicts_as_each_alone(setup, monkeypatch):
    model, ctx, budgets = setup
    steps = [parse_recipe(r) for r in RECIPES]
    assert [family(s) for s in steps] == ["separable", "separable", "separable", "prune.filter"]
    alone = []
    for s in steps:
        c = Candidate(recipe=[x.describe() for x in s], dtype=dtype_of(s))
        screen(c, s, model, ctx, budgets, "tflite", 1000)
        alone.append(c)
    assert len({c.params for c in alone}) >= 3, "the recipes give different structures"

    applied: list[str] = []
    real = screen_module.apply_recipe

    def counting(m, stage_steps, c, measure=True):
        applied.extend(x.name for x in stage_steps)
        return real(m, stage_steps, c, measure=measure)

    monkeypatch.setattr(screen_module, "apply_recipe", counting)
    job = ScreenJob(tuple((i, tuple(s)) for i, s in enumerate(steps[:3])), budgets, "tflite", 1000)
    result = run_task(model, ctx, EvalTask(0, (), "screen separable", rung=-1, seed=ctx.seed, screen=job))
    assert applied == ["separable", "prune.filter"], "separable once for three candidates, then prune.filter"
    assert [i for i, _ in result.screened] == [0, 1, 2]
    assert [_predictions(c) for _, c in result.screened] == [_predictions(c) for c in alone[:3]]


def test_screening_keeps_the_stages_own_info_lines_off_the_console_but_in_the_debug_log(setup):
    model, ctx, budgets = setup
    console, debug_log = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(console), logging.StreamHandler(debug_log)]
    handlers[0].setLevel(logging.INFO)
    handlers[1].setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    try:
        steps = parse_recipe("separable")
        screen(Candidate(recipe=["separable"], dtype="fp32"), steps, model, ctx, budgets, "tflite", 1000)
        logging.getLogger("edgecomp.compress.pipeline").info("[compress] outside a screen")
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(level)
    assert "[compress 1/1] separable" in debug_log.getvalue()
    assert "[compress 1/1]" not in console.getvalue()
    assert "[compress] outside a screen" in console.getvalue(), "the console is quiet only while screening"


def test_a_stage_that_changes_nothing_rejects_its_candidate_with_the_reason():
    """separable on a MobileNetV2-style net rewrites nothing: 'separable -> quantize.int8' would be quantize.int8
    under another name, so screening rejects it (never fine-tuned), while quantize.int8 itself stays feasible."""
    from tests.compress.test_separable import _depthwise_net
    from tests.rewrite_helpers import context, teacher_dataset

    net = _depthwise_net()
    ctx = context([1, 1, 8, 8], teacher_dataset(net, (1, 8, 8), n=200), net)
    budgets = Budgets(size_mb=1.0)
    results = {}
    memo: dict = {}
    for recipe in ("separable", "separable -> quantize.int8", "prune.filter -> separable", "quantize.int8"):
        s = parse_recipe(recipe)
        c = Candidate(recipe=[x.describe() for x in s], dtype=dtype_of(s))
        screen(c, s, net, ctx, budgets, "tflite", 1000, memo=memo if recipe.startswith("separable") else None)
        results[recipe] = c
    for recipe in ("separable", "separable -> quantize.int8"):
        assert results[recipe].status == "rejected"
        assert "separable changes nothing on this model" in results[recipe].reason
        assert results[recipe].predicted_bytes is None
    assert "after prune.filter" in results["prune.filter -> separable"].reason
    assert results["quantize.int8"].status == "feasible"
