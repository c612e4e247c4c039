"""The plan memo: an identical rebuild re-applies the kept decision; any change of an input searches again."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from edgecomp.artifact_cache import model_digest
from edgecomp.compress.base import BuildContext
from edgecomp.data.digits import digits
from edgecomp.plan import plan_memo
from edgecomp.plan.plan_memo import PlanMemo, plan_key
from edgecomp.plan.planner import Planner
from edgecomp.targets import Budgets, load_profile, load_target
from edgecomp.zoo import load_zoo_model


@pytest.fixture(scope="module")
def zoo():
    """The default model, its spec and digits data (trained once and cached)."""
    return load_zoo_model()


def _ctx(zoo, target="android-arm64", hardware=None, seed=0, data="same") -> BuildContext:
    _, spec, dataset = zoo
    tgt = load_target(target)
    return BuildContext(spec=spec, target=tgt, profile=load_profile(hardware or tgt.hardware),
                        data=dataset if data == "same" else data, seed=seed)


def _key(zoo, model=None, ctx=None, budgets=None, fmt="tflite", search_time_s=600.0,
         max_epochs=None) -> str:
    return plan_key(model if model is not None else zoo[0], ctx or _ctx(zoo), budgets or Budgets(size_mb=10), fmt, search_time_s,
                    max_epochs)


def test_key_is_stable_for_identical_input_and_changes_with_any_input(zoo, monkeypatch):
    base = _key(zoo)
    assert _key(zoo, model=copy.deepcopy(zoo[0]), ctx=_ctx(zoo)) == base  # equal copies, rebuilt context
    tweaked = copy.deepcopy(zoo[0])
    with torch.no_grad():
        tweaked.classifier.bias[0] += 1e-6
    other_metric = digits()
    other_metric.metric = type("Top5", (), {"name": "top5"})()
    others = {
        "weights": _key(zoo, model=tweaked),
        "data (another split of the digits)": _key(zoo, ctx=_ctx(zoo, data=digits(seed=1))),
        "metric": _key(zoo, ctx=_ctx(zoo, data=other_metric)),
        "no data": _key(zoo, ctx=_ctx(zoo, data=None)),
        "size budget": _key(zoo, budgets=Budgets(size_mb=9)),
        "latency budget": _key(zoo, budgets=Budgets(size_mb=10, latency_ms=5)),
        "target": _key(zoo, ctx=_ctx(zoo, target="linux-arm64")),
        "hardware profile": _key(zoo, ctx=_ctx(zoo, hardware="cortex-a55")),
        "primary format": _key(zoo, fmt="onnx"),
        "search time": _key(zoo, search_time_s=60.0),
        "fine-tune cap": _key(zoo, max_epochs=3),
        "seed": _key(zoo, ctx=_ctx(zoo, seed=1)),
    }
    monkeypatch.setattr(plan_memo, "package_versions", lambda: {"edgecomp": "9.9.9"})
    others["package versions"] = _key(zoo)
    for what, key in others.items():
        assert key != base, f"a change of {what} did not change the key"
    assert len(set(others.values())) == len(others)


def test_a_kept_plan_loads_back_and_the_report_says_it_was_reused(tmp_path):
    memo = PlanMemo(tmp_path, "k" * 64)
    assert memo.load() is None
    planner = {"candidates": [{"recipe": ["quantize.fp16"], "status": "chosen", "reason": ""}],
               "notes": ["n1"], "search_seconds": 4.2}
    assert memo.store(["quantize.fp16"], planner)
    stored = PlanMemo(tmp_path, "k" * 64).load()
    assert stored.recipe == ["quantize.fp16"] and stored.planner == planner
    record = stored.report_record()
    assert record["reused_from"] == stored.planned_at
    assert record["notes"][0].startswith(f"Plan reused from the build of {stored.planned_at}")
    assert record["notes"][1:] == ["n1"] and record["candidates"] == planner["candidates"]
    assert PlanMemo(tmp_path, "other").load() is None


def test_a_search_the_time_limit_shaped_is_not_kept_and_a_corrupt_entry_is_a_miss(tmp_path):
    memo = PlanMemo(tmp_path, "a" * 64)
    cut = {"candidates": [{"recipe": ["prune.filter"], "status": "chosen", "reason": "", "cut_short": True}]}
    assert not memo.store(["prune.filter"], cut)
    unfinished = {"candidates": [{"recipe": [], "status": "chosen", "reason": ""},
                                 {"recipe": ["x"], "status": "not-evaluated", "reason": "search time of 1 s used up"}]}
    assert not memo.store([], unfinished)
    assert memo.load() is None and not list(tmp_path.iterdir())
    memo.path.write_text("{not json")
    assert memo.load() is None
    memo.path.write_text(json.dumps({"memo_version": plan_memo.MEMO_VERSION - 1, "recipe": [], "planner": {},
                                     "planned_at": "x"}))
    assert memo.load() is None


def test_reapplying_the_kept_recipe_gives_the_model_the_planner_chose(zoo, tmp_path):
    model = zoo[0]
    ctx = _ctx(zoo, data=None)  # data-free: the planner applies fp16 or BN-calibrated int8 without searching
    planner = Planner(model, ctx, Budgets(size_mb=0.08), "onnx", cache_dir=tmp_path)
    planner.search()
    candidate, _, evaluated = planner.next_choice()
    assert candidate.recipe, "the untouched model should miss the 0.08 MB budget"
    stored = plan_memo.StoredPlan(recipe=candidate.recipe, planner={}, planned_at="then")
    again, stages, export = stored.reapply(model, ctx, None)
    assert model_digest(again) == model_digest(evaluated.model)
    assert export == evaluated.export and [s.name for s in stages] == [s.name for s in evaluated.stages]
    untouched = plan_memo.StoredPlan(recipe=[], planner={}, planned_at="then")
    assert untouched.reapply(model, dataclasses.replace(ctx), None)[0] is model


def test_an_identical_rebuild_reuses_the_plan_and_a_changed_budget_searches(tmp_path, monkeypatch):
    from edgecomp import build as build_mod
    from edgecomp.build import BuildOptions, build

    monkeypatch.delenv("EDGECOMP_NO_CACHE", raising=False)
    monkeypatch.setenv("EDGECOMP_ARTIFACT_CACHE_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setattr(build_mod, "cache_dir", lambda: tmp_path / "cache")  # plans and plots kept here

    def run(name: str, runs: int = 2, **opts):
        report = build(None, "android-arm64", BuildOptions(out=tmp_path / name, formats=["onnx"], runs=runs,
                                                           warmup=1, **opts))
        return report, [p.name for p in report.phases]

    first, phases = run("first")
    assert "plan:search" in phases and "reused_from" not in first.planner
    again, phases = run("again", runs=3)  # not the whole build again (edgecomp.build_reuse): only its plan
    assert "plan:search" not in phases and "plan:reuse" in phases
    assert again.planner["reused_from"] and again.planner["notes"][0].startswith("Plan reused from")
    assert again.recipe == first.recipe
    assert [c["status"] for c in again.planner["candidates"]] == [c.status for c in first.planner["candidates"]]
    assert "Plan reused from" in (tmp_path / "again" / "report.html").read_text()
    _, phases = run("tighter", budgets=Budgets(size_mb=9))
    assert "plan:search" in phases
    _, phases = run("fresh", reuse_plans=False)
    assert "plan:search" in phases
    _, phases = run("no-cache", cache=False)
    assert "plan:search" in phases


def test_when_the_untouched_model_wins_its_export_for_the_format_overhead_becomes_the_artifact(tmp_path, monkeypatch):
    from edgecomp import build as build_mod
    from edgecomp.build import BuildOptions, build
    from edgecomp.export.base import get_format

    monkeypatch.setattr(build_mod, "cache_dir", lambda: tmp_path / "cache")  # an empty plan folder: no overhead memo
    plugin, calls = type(get_format("onnx")), []
    real_export = plugin.export

    def counted(self, model, *args, **kwargs):
        calls.append(model)
        return real_export(self, model, *args, **kwargs)

    monkeypatch.setattr(plugin, "export", counted)
    report = build(None, "android-arm64", BuildOptions(out=tmp_path / "b", formats=["onnx"], runs=2, warmup=1,
                                                       cache=False))
    assert report.recipe == [] and len(calls) == 1, "the untouched model was exported twice"
    (onnx,) = report.artifacts
    assert onnx.parity.status == "passed" and (tmp_path / "b" / "model.onnx").is_file()
    smaller = build(None, "android-arm64", BuildOptions(out=tmp_path / "c", formats=["onnx"], runs=2, warmup=1,
                                                        cache=False, budgets=Budgets(size_mb=0.08)))
    assert smaller.recipe and len(calls) == 2, "a compressed winner is exported itself (the overhead is memoised)"
