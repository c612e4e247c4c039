"""The planner on the real default model (digits CNN): what it chooses under loose, tight and impossible budgets.

Targets are written per test with a short method list so a search evaluates a handful of candidates;
recovery fine-tunes are capped at eight epochs (``max_finetune_epochs``) to keep the suite fast.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from edgecomp.build import BuildOptions, build
from edgecomp.compress.base import BuildContext
from edgecomp.errors import InfeasibleBudgetError
from edgecomp.plan.planner import Planner
from edgecomp.profile.predict import layers_from_torch, predict_from_layers
from edgecomp.report.console import plan_candidates
from edgecomp.targets import load_profile, load_target
from edgecomp.zoo import load_zoo_model


@pytest.fixture(scope="module")
def zoo():
    """The default model, its spec and digits data (trained once and cached)."""
    return load_zoo_model()


def _target(tmp_path, methods, hardware="cortex-a76", formats=("tflite",), **budgets):
    """A target YAML like android-arm64 with the given methods, hardware and budgets; returns its path."""
    base = load_target("android-arm64").model_dump()
    base.update(name="plan-test", methods=list(methods), hardware=hardware, formats=list(formats),
                budgets={"size_mb": None, "latency_ms": None, "accuracy_drop_pct": None, **budgets})
    path = tmp_path / "plan-test.yaml"
    path.write_text(yaml.safe_dump(base))
    return str(path)


def _build(tmp_path, target, **opts):
    return build(None, target, BuildOptions(out=tmp_path / "bundle", runs=2, warmup=1, max_finetune_epochs=8,
                                            **opts))


def _source_ms(zoo, profile: str, dtype: str = "fp32") -> float:
    model, spec, _ = zoo
    layers = layers_from_torch(model, spec.input_shape, dtype)
    return predict_from_layers(layers, load_profile(profile), 4, dtype).ms


def test_loose_budgets_leave_the_model_untouched(tmp_path):
    target = _target(tmp_path, ["quantize.int8", "prune.filter"], size_mb=10, latency_ms=30, accuracy_drop_pct=1)
    report = _build(tmp_path, target)
    assert report.recipe == []
    cands = plan_candidates(report)
    assert cands[0]["status"] == "chosen" and cands[0]["recipe"] == []
    assert all(c["status"] == "not-evaluated" for c in cands[1:])
    assert (tmp_path / "bundle" / "model.tflite").is_file()


def test_tight_size_budget_picks_the_most_accurate_candidate_that_fits(tmp_path):
    target = _target(tmp_path, ["quantize.int8", "prune.filter"], size_mb=0.05, accuracy_drop_pct=3)
    report = _build(tmp_path, target)
    tflite = next(a for a in report.artifacts if a.format == "tflite")
    assert tflite.bytes <= 50_000, "the real export must meet the size budget"
    assert report.recipe, "the untouched 0.1 MB model cannot meet 0.05 MB"
    cands = plan_candidates(report)
    chosen = next(c for c in cands if c["status"] == "chosen")
    assert cands[0]["status"] == "rejected" and "size" in cands[0]["reason"]
    others = [c for c in cands if c["status"] == "feasible"]
    assert all(c["val_accuracy"] <= chosen["val_accuracy"] + 1e-9 for c in others)
    assert report.model.accuracy - tflite.accuracy <= 3.0


def test_tight_latency_budget_on_a_little_core_thins_the_network(tmp_path, zoo):
    source_ms = _source_ms(zoo, "cortex-a55")
    budget = round(source_ms * 0.7, 4)
    target = _target(tmp_path, ["separable", "prune.filter"], hardware="cortex-a55", latency_ms=budget,
                     accuracy_drop_pct=15)
    report = _build(tmp_path, target)
    assert any(step.startswith(("prune.filter", "separable")) for step in report.recipe)
    assert report.stages[-1].macs < report.model.macs
    tflite = next(a for a in report.artifacts if a.format == "tflite")
    assert tflite.predicted_latency is not None and tflite.predicted_latency.p50_ms <= budget
    assert "cortex-a55" in tflite.predicted_latency.source or report.hardware == "cortex-a55"


def test_impossible_budget_exits_3_and_names_the_best_reachable_numbers(tmp_path):
    target = _target(tmp_path, ["quantize.int8", "prune.filter"], size_mb=0.001)
    out = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "edgecomp", "build", "--target", target, "--out", str(out),
                           "--max-finetune-epochs", "8"], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr
    assert "no candidate meets the budgets" in proc.stderr
    assert "smallest" in proc.stderr and "--max-size" in proc.stderr
    assert not out.exists(), "an infeasible build must not leave a bundle"


def test_infeasible_error_suggests_a_size_that_the_smallest_candidate_meets(tmp_path, zoo):
    model, spec, data = zoo
    target = load_target(_target(tmp_path, ["quantize.int8"], size_mb=0.001))
    ctx = BuildContext(spec=spec, target=target, profile=load_profile("cortex-a76"), data=data, teacher=model)
    planner = Planner(model, ctx, target.budgets, "tflite", max_finetune_epochs=8)
    planner.search()
    assert planner.next_choice() is None
    err = planner.infeasible_error()
    assert isinstance(err, InfeasibleBudgetError)
    smallest = min(c.predicted_bytes for c in planner.candidates)
    suggested = float(err.hint.split("--max-size ")[1].split("MB")[0])
    assert suggested * 1e6 >= smallest


def test_infeasible_accuracy_suggests_a_drop_that_the_best_fitting_candidate_meets(tmp_path, zoo):
    model, spec, data = zoo
    target = load_target(_target(tmp_path, ["prune.filter"], size_mb=0.05, accuracy_drop_pct=0.0))
    ctx = BuildContext(spec=spec, target=target, profile=load_profile("cortex-a76"), data=data, teacher=model)
    planner = Planner(model, ctx, target.budgets, "tflite", max_finetune_epochs=1)
    planner.search()
    assert planner.next_choice() is None
    err = planner.infeasible_error()
    drops = [planner._source_val - c.val_accuracy for c in planner.candidates if c.recipe and c.val_accuracy is not None]
    assert drops and "on validation" in err.message
    suggested = float(err.hint.split("--max-accuracy-drop ")[1].split()[0].rstrip(","))
    assert min(drops) <= suggested <= min(drops) + 0.25


def test_infeasible_error_counts_failed_candidates_and_names_the_first_reason(tmp_path, zoo, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a library failed on this candidate")

    monkeypatch.setattr("edgecomp.plan.tasks.apply_recipe", broken)
    model, spec, data = zoo
    target = load_target(_target(tmp_path, ["prune.filter"], size_mb=0.05))
    ctx = BuildContext(spec=spec, target=target, profile=load_profile("cortex-a76"), data=data, teacher=model)
    planner = Planner(model, ctx, target.budgets, "tflite", max_finetune_epochs=1)
    planner.search()
    failed = [c for c in planner.candidates if c.status == "failed"]
    assert failed and planner.next_choice() is None
    err = planner.infeasible_error()
    assert f"{len(failed)} candidate(s) failed" in err.message
    assert "a library failed on this candidate" in err.message and "--debug" in err.hint


def _search(zoo, target_path, cache_dir=None):
    model, spec, data = zoo
    target = load_target(target_path)
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data,
                       teacher=model)
    planner = Planner(model, ctx, target.budgets, "tflite", max_finetune_epochs=8, cache_dir=cache_dir)
    planner.search()
    return planner


def test_same_seed_gives_the_same_plan_and_the_cache_reproduces_it(tmp_path, zoo):
    target = _target(tmp_path, ["prune.filter"], size_mb=0.08, accuracy_drop_pct=50)
    first = _search(zoo, target)
    second = _search(zoo, target)
    timeless = {"seconds": True, "rungs": {"__all__": {"seconds", "train_seconds"}}}
    assert [c.model_dump(exclude=timeless) for c in first.candidates] == \
           [c.model_dump(exclude=timeless) for c in second.candidates]
    assert first.next_choice()[0].recipe == second.next_choice()[0].recipe
    cached_run = _search(zoo, target, cache_dir=tmp_path / "plans")
    again = _search(zoo, target, cache_dir=tmp_path / "plans")
    evaluated = [c for c in again.candidates if c.val_accuracy is not None]
    assert evaluated and all(c.cached for c in evaluated)
    assert [c.val_accuracy for c in again.candidates] == [c.val_accuracy for c in cached_run.candidates]
    assert [c.val_accuracy for c in again.candidates] == [c.val_accuracy for c in first.candidates]


def test_report_html_explains_the_plan(tmp_path):
    target = _target(tmp_path, ["quantize.int8"], size_mb=0.05, accuracy_drop_pct=3)
    report = _build(tmp_path, target)
    html = (tmp_path / "bundle" / "report.html").read_text()
    assert "Planner" in html and "quantize.int8" in html
    assert "data:image/png;base64," in html
    from edgecomp.report.console import explain_plan

    text = explain_plan(report)
    assert "chosen" in text and "quantize.int8" in text
