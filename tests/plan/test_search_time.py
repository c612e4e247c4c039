"""--search-time is a hard bound: screening, evaluations, EPruning's search and int8 calibration stop at it.

The clock is never asserted: the deadline is moved into the past at a chosen point and the statuses say
what happened after it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from edgecomp.compress.base import BuildContext
from edgecomp.compress.epruning import EPruning
from edgecomp.compress.quantize import _calibrate
from edgecomp.compress.recipe import parse_recipe
from edgecomp.finetune import FinetunePolicy
from edgecomp.plan import planner as planner_module
from edgecomp.plan.tasks import EvalTask, run_task
from edgecomp.targets import load_profile, load_target
from edgecomp.zoo import load_zoo_model
from tests.plan.search_helpers import planner, small_target


@pytest.fixture(scope="module")
def zoo():
    """The default model, its spec and digits data (trained once and cached)."""
    return load_zoo_model()


def test_no_screen_or_evaluation_starts_after_the_deadline(tmp_path, zoo, monkeypatch):
    p = planner(zoo, small_target(tmp_path))
    real_screen, screened = planner_module.screen, []

    def screen_then_run_out_of_time(c, *args, **kwargs):
        real_screen(c, *args, **kwargs)
        screened.append(c.label)
        if len(screened) == 3:  # the untouched model and two candidates: then the search time is up
            p._deadline = time.monotonic() - 1.0

    monkeypatch.setattr(planner_module, "screen", screen_then_run_out_of_time)
    p.search()
    cands = p.candidates
    assert len(cands) > 4
    assert [c.status for c in cands[1:3]] == ["not-evaluated", "not-evaluated"]  # screened, never evaluated
    assert all(c.reason.startswith("search time of") for c in cands[1:3])
    assert all(c.val_accuracy is None and c.predicted_bytes is not None for c in cands[1:3])
    rest = cands[3:]
    assert all(c.status == "not-evaluated" and "before it was screened" in c.reason for c in rest)
    assert all(c.predicted_bytes is None for c in rest)
    assert p.next_choice() is None and "--search-time" in p.infeasible_error().hint


def test_a_task_past_its_deadline_does_not_start(zoo):
    model, spec, data = zoo
    ctx = BuildContext(spec=spec, target=load_target("android-arm64"),
                       profile=load_profile("cortex-a76"), data=data, teacher=model)
    task = EvalTask(3, tuple(parse_recipe("prune.filter")), "prune.filter", max_epochs=1,
                    deadline_wall=time.time() - 1)
    result = run_task(model, ctx, task)
    assert result.skipped == "search time used up" and result.val_accuracy is None and result.epochs == 0


def test_epruning_search_stops_at_the_deadline(zoo):
    model, spec, data = zoo
    ctx = BuildContext(spec=spec, target=load_target("android-arm64"), profile=load_profile("cortex-a76"),
                       data=data, teacher=model, finetune_policy=FinetunePolicy(skip=True, deadline=time.monotonic()))
    cfg = EPruning.Config(max_epochs=5, population=4)
    result = EPruning().apply(model, cfg, ctx)
    assert result.metrics["stopped"] == "search-deadline"
    assert result.metrics["epochs_searched"] == 1
    free = replace(ctx, finetune_policy=FinetunePolicy(skip=True))
    assert EPruning().apply(model, cfg.model_copy(update={"max_epochs": 2}), free).metrics["stopped"] != \
        "search-deadline"


class _Counter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_int8_calibration_stops_at_the_deadline():
    x = np.zeros((10, 3), np.float32)
    counted = _Counter()
    _calibrate(counted, x, batch=2, deadline=time.monotonic() - 1)
    assert counted.calls == 1  # one batch, then the deadline
    full = _Counter()
    _calibrate(full, x, batch=2, deadline=None)
    assert full.calls == 5


def test_no_executor_starts_a_task_after_the_deadline():
    from edgecomp.plan.executors import ProcessExecutor, SerialExecutor
    from edgecomp.plan.progress import SearchProgress

    late = [EvalTask(i, (), f"c{i}", deadline_wall=time.time() - 1) for i in range(3)]
    for executor in (SerialExecutor(), ProcessExecutor(2)):
        results = []
        executor.run(late, results.append, SearchProgress())
        executor.close()
        assert [r.skipped for r in results] == ["search time used up"] * 3
        assert all(w is None for w in getattr(executor, "_workers", [])), "no worker was started for them"
