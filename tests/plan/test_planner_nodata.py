"""The planner without data (no blind planning) and the --search-time deadline.

Without data only stages that declare ``needs_data = False`` are generated (the untouched model, fp16,
int8 calibrated from batch-norm statistics), nothing is evaluated during the search, the least invasive
candidate that fits is chosen, and an unreachable budget fails at once (before any export) naming --data.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time

import pytest
from torch import nn

from edgecomp.build import BuildOptions, build
from edgecomp.compress import datafree
from edgecomp.compress.base import REGISTRY, BuildContext, stage_names
from edgecomp.errors import InfeasibleBudgetError
from edgecomp.plan import screen as screen_mod
from edgecomp.plan import tasks as tasks_mod
from edgecomp.plan.candidates import generate
from edgecomp.plan.planner import Planner
from edgecomp.records import BuildReport, ModelRecord
from edgecomp.report.console import console_table, explain_plan
from edgecomp.spec import ModelSpec
from edgecomp.targets import Budgets, Target, load_profile, load_target
from edgecomp.zoo import load_zoo_model

TINY = '''
import torch
from torch import nn


def factory():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
'''
ALL_METHODS = ["prune.filter", "prune.magnitude", "quantize.int8", "quantize.fp16", "quantize.dynamic",
               "separable", "lowrank", "cluster", "binarize", "distill"]


def _tiny() -> nn.Module:
    namespace: dict = {}
    exec(TINY, namespace)  # noqa: S102 - the model source written above, also used as a model file
    return namespace["factory"]()


def _target(methods: list[str] = ALL_METHODS) -> Target:
    return Target(schema_version=1, name="t", description="t", runtime="litert", formats=["tflite"],
                  dtypes=["fp32", "fp16", "int8"], hardware="cortex-a76", methods=methods)


def _planner(model: nn.Module, size_mb: float, data=None, spec=None, **kw) -> Planner:
    target = _target()
    spec = spec or ModelSpec(name="tiny", input_shape=[1, 3, 16, 16])
    ctx = BuildContext(spec=spec, target=target, profile=load_profile("cortex-a76"), data=data, teacher=model)
    return Planner(model, ctx, Budgets(size_mb=size_mb), "tflite", **kw)


def test_without_data_only_stages_that_need_no_data_are_generated():
    data_free = {name for name in stage_names() if not REGISTRY[name].needs_data}
    assert data_free == {"quantize.int8", "quantize.fp16", "quantize.dynamic"}
    described = [[s.describe() for s in r] for r in generate(_target(), data_free=True)]
    assert described == [[], ["quantize.fp16"], ["quantize.int8"]]
    with_data = [[s.describe() for s in r] for r in generate(_target())]
    assert len(with_data) > 10 and any(r and r[0].startswith("prune.filter") for r in with_data)
    assert [[s.describe() for s in r] for r in generate(load_target("android-arm64"), data_free=True)] == \
        [[], ["quantize.int8"]]


def test_without_data_nothing_is_evaluated_and_the_least_invasive_fit_is_chosen(monkeypatch):
    runs = []
    real_apply = screen_mod.apply_recipe
    for module in (screen_mod, tasks_mod):  # screening and evaluation both run recipes
        monkeypatch.setattr(module, "apply_recipe", lambda model, steps, ctx: runs.append([s.name for s in steps])
                            or real_apply(model, steps, ctx))
    monkeypatch.setattr(screen_mod, "_export_overhead", lambda *args: (0, None))
    monkeypatch.setattr(datafree, "synthesize_from_batchnorm",
                        functools.partial(datafree.synthesize_from_batchnorm, steps=10))
    # fp32 22 KB and fp16 11 KB miss 0.01 MB; int8 (5.5 KB) fits
    planner = _planner(_tiny(), size_mb=0.01)
    planner.search()
    assert runs == [], "nothing runs during a data-free search"
    assert [c.recipe for c in planner.candidates] == [[], ["quantize.fp16"], ["quantize.int8"]]
    assert [c.status for c in planner.candidates] == ["rejected", "rejected", "feasible"]
    assert all(c.accuracy_note == "accuracy not measured" for c in planner.candidates)
    assert any("No --data" in n for n in planner.notes)
    candidate, _, evaluated = planner.next_choice()
    assert candidate.recipe == ["quantize.int8"] and runs == [["quantize.int8"]]
    assert "synthesised from 2 batch-norm layers" in evaluated.stages[0].metrics["calibration_source"]
    assert planner.next_choice() is None


def test_without_data_fp16_wins_over_int8_when_both_fit(monkeypatch):
    monkeypatch.setattr(screen_mod, "_export_overhead", lambda *args: (0, None))
    planner = _planner(_tiny(), size_mb=0.015)
    planner.search()
    assert planner.next_choice()[0].recipe == ["quantize.fp16"]


def test_without_data_an_unreachable_budget_fails_before_any_export(monkeypatch):
    def no_export(*args):
        raise AssertionError("the planner exported the model before refusing")

    monkeypatch.setattr(screen_mod, "_export_overhead", no_export)
    planner = _planner(_tiny(), size_mb=0.001)
    with pytest.raises(InfeasibleBudgetError) as err:
        planner.search()
    msg, hint = err.value.message, err.value.hint
    assert "without --data" in msg and "--data" in hint and "--recipe" in hint
    assert "fp32 (untouched): 0.0221 MB" in msg and "quantize.fp16: 0.0110 MB" in msg
    assert "quantize.int8: 0.0055 MB" in msg and "--max-size above 0.0055MB" in hint


def test_cli_without_data_exits_3_naming_data_and_writes_nothing(tmp_path):
    model = tmp_path / "tiny.py"
    model.write_text(TINY)
    out = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "edgecomp", "build", f"{model}:factory", "--input-shape",
                           "1,3,16,16", "--target", "android-arm64", "--max-size", "0.001", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr
    assert "without --data no candidate can meet the budgets" in proc.stderr
    assert "quantize.int8: 0.0055 MB" in proc.stderr and "hint: pass --data" in proc.stderr
    assert "[export" not in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_recipe_build_without_data_says_accuracy_not_measured(tmp_path):
    model = tmp_path / "tiny.py"
    model.write_text(TINY)
    out = tmp_path / "bundle"
    report = build(f"{model}:factory", "android-arm64",
                   BuildOptions(out=out, recipe="quantize.fp16", input_shape=[1, 3, 16, 16], formats=["onnx"],
                                runs=2, warmup=1))
    assert report.model.accuracy is None and report.model.accuracy_note == "accuracy not measured"
    assert [s.accuracy_note for s in report.stages] == ["accuracy not measured"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["model"]["accuracy_note"] == saved["stages"][0]["accuracy_note"] == "accuracy not measured"
    page = (out / "report.html").read_text()
    assert page.count("accuracy not measured") >= 3 and "n/a" not in page  # summary, source row, stage row
    assert "accuracy not measured: no --data" in console_table(report)


def test_search_deadline_cuts_fine_tunes_short_and_is_reported(tmp_path, monkeypatch):
    model, spec, data = load_zoo_model()
    monkeypatch.setattr(screen_mod, "_export_overhead", lambda *args: (0, None))
    planner = _planner(model, size_mb=0.08, data=data, spec=spec, cache_dir=tmp_path / "plans")
    planner.ctx.target = _target(["prune.filter"])
    screen_all = planner._screen_all

    def screen_then_start_the_clock(*args) -> None:
        screen_all(*args)
        planner._deadline = time.monotonic() + 0.1  # the search deadline falls 0.1 s into the first evaluation

    monkeypatch.setattr(planner, "_screen_all", screen_then_start_the_clock)
    planner.search()
    cut = [i for i, c in enumerate(planner.candidates) if c.cut_short]
    assert len(cut) == 1 and planner.candidates[cut[0]].val_accuracy is not None
    stopped = [ft["stopped"] for s in planner._models[cut[0]].stages for ft in s.metrics.get("finetune", [])]
    assert stopped and set(stopped) == {"search-deadline"}
    rest = [c for c in planner.candidates[1:] if not c.cut_short and c.status != "rejected"]
    assert rest and all(c.status == "not-evaluated" and "search time" in c.reason for c in rest)
    assert not list((tmp_path / "plans").glob("[0-9a-f]*.json")), "a cut-short result is not cached"
    report = BuildReport(edgecomp_version="0", created="", target="t", hardware="cortex-a76",
                         model=ModelRecord(name="m", source="s", params=1, macs=1),
                         planner={"candidates": planner.candidates, "notes": []})
    assert "cut short by --search-time (1; their fine-tunes stopped" in explain_plan(report)
    assert planner.candidates[cut[0]].label in explain_plan(report)
