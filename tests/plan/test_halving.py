"""Successive halving: rung budgets, who goes on, and a halving search against the exhaustive one on digits."""

from __future__ import annotations

import pytest

from edgecomp.plan.candidate import Candidate, RungResult
from edgecomp.plan.executors import SerialExecutor
from edgecomp.plan.halving import keep_best, planned_epochs, rung_budgets, straight_to_last, worth_halving
from edgecomp.records import BuildReport, ModelRecord
from edgecomp.report.console import explain_plan
from edgecomp.report.html import planner_section
from edgecomp.zoo import load_zoo_model
from tests.plan.search_helpers import planner, small_target


def test_rung_budgets_grow_by_eta_and_end_with_the_full_budget():
    assert rung_budgets(20) == [1, 3, 9, 20]
    assert rung_budgets(9) == [1, 3, 9]
    assert rung_budgets(8) == [1, 3, 8]
    assert rung_budgets(1) == [1]
    assert rung_budgets(None) == [1, 3, 9, None]  # None: each stage's own epochs on the last rung
    assert rung_budgets(30, eta=2) == [1, 2, 4, 8, 16, 30]



def test_halving_runs_only_when_it_plans_at_most_half_the_exhaustive_epochs():
    assert planned_epochs(4, [1, 3], eta=3) == 4 * 1 + 2 * 3  # 10 of 12: the reruns would eat the saving
    assert not worth_halving(4, 3)
    assert not worth_halving(6, 3)  # 6 + 2 * 3 = 12 of 18
    assert planned_epochs(5, [1, 3, 9]) == 5 + 2 * 3 + 1 * 9 and worth_halving(5, 9)  # 20 of 45
    assert not worth_halving(3, 9)  # eta or fewer: every candidate would reach the last rung
    assert not worth_halving(4, 9) and worth_halving(4, None)  # 19 of 36; 39 of 80 with 20-epoch fine-tunes
    assert not worth_halving(10, 1)  # one rung only


def _cands(vals):
    return [Candidate(recipe=[f"r{i}"], val_accuracy=v, predicted_bytes=100 - i, predicted_ms=1.0)
            for i, v in enumerate(vals)]


def test_keep_best_keeps_the_top_third_in_order_and_never_a_failed_one():
    cands = _cands([90.0, 95.0, None, 80.0, 97.0, 95.0, 10.0])
    assert keep_best(range(7), cands) == [1, 4, 5]  # ceil(7/3) = 3 by val; ties to the smaller (5 < 1)
    assert keep_best([3, 6], cands) == [3]
    assert keep_best([2], cands) == []


@pytest.fixture(scope="module")
def zoo():
    """The default model, its spec and digits data (trained once and cached)."""
    return load_zoo_model()


def _measured(seconds, train_seconds, n=3, cached=False):
    return [RungResult(rung=0, max_epochs=1, val_accuracy=90.0, epochs=1, seconds=seconds, train_seconds=train_seconds,
                       cached=cached) for _ in range(n)]


def test_survivors_skip_the_middle_rungs_when_the_measured_fixed_cost_makes_them_dearer():
    # stop 26's ResNet workload: ~8 epochs' worth of fixed cost per task, cap 6: rungs 3 and 6 for 3 survivors
    # cost 3 x (8 + 3) + 1 x (8 + 6) = 47 epoch-units, the full budget for all 3 costs 3 x (8 + 6) = 42
    skip, why = straight_to_last(_measured(9.0, 1.0), cap=1, survivors=3, later=[3, 6])
    assert skip and "8.0 s fixed" in why and "~47 s" in why and "~42 s" in why
    # epochs dominate (a large dataset): 5 x 3.5 + 2 x 9.5 + 1 x 20.5 = 57 against 5 x 20.5 = 102: keep halving
    skip, why = straight_to_last(_measured(1.5, 1.0), cap=1, survivors=5, later=[3, 9, 20])
    assert not skip and "~57 s" in why and "~102 s" in why
    assert straight_to_last(_measured(9.0, 1.0, cached=True), 1, 3, [3, 6]) == (False, ""), "nothing measured"
    assert straight_to_last(_measured(9.0, 1.0), 1, 3, [6]) == (False, ""), "no middle rung left"


def test_survivors_sent_straight_to_the_full_budget_get_it_and_the_report_says_why(tmp_path, zoo, monkeypatch):
    monkeypatch.setattr("edgecomp.plan.planner.straight_to_last", lambda *a, **k: (True, "the sums"))
    target = small_target(tmp_path)
    p = planner(zoo, target, max_finetune_epochs=9, executor=SerialExecutor(threads=1))
    p.search()
    assert [r["max_epochs"] for r in p.rungs] == [1, 9]
    assert p.rungs[0]["next"] == "straight to the full budget"
    kept = p.rungs[0]["kept"]
    assert kept and all([r.max_epochs for r in c.rungs] == [1, 9] for c in p.candidates if c.label in kept)
    assert any("skipped its middle rung(s) after rung 1: the sums" in n for n in p.notes)


def test_halving_stops_most_candidates_early_and_its_last_rung_matches_the_exhaustive_search(tmp_path, zoo,
                                                                                             monkeypatch):
    # the rung mechanics with every rung run (whether middle rungs pay is timed, so decided by the test here)
    monkeypatch.setattr("edgecomp.plan.planner.straight_to_last", lambda *a, **k: (False, ""))
    target = small_target(tmp_path)
    halving = planner(zoo, target, max_finetune_epochs=9, executor=SerialExecutor(threads=1))
    halving.search()
    exhaustive = planner(zoo, target, max_finetune_epochs=9, executor=SerialExecutor(threads=1), early_stop=False)
    exhaustive.search()
    evaluated = [i for i, c in enumerate(exhaustive.candidates) if c.val_accuracy is not None]
    assert len(evaluated) >= 5
    assert [r["max_epochs"] for r in halving.rungs][:2] == [1, 3] and halving.rungs[-1]["max_epochs"] == 9
    kept = halving.rungs[0]["kept"]
    # recipes without a fine-tune are complete after the first rung: judged there, not halved
    done = [halving.candidates[i].label for i in evaluated if halving.candidates[i].rungs[0].epochs == 0]
    assert done, "the small target has an int8-only candidate"
    assert len(kept) == -(-(len(evaluated) - len(done)) // 3)
    last = [halving.candidates[i].label for i in evaluated if halving.candidates[i].rungs[-1].max_epochs == 9]
    assert last, "someone reached the last rung"
    for i in evaluated:
        h, e = halving.candidates[i], exhaustive.candidates[i]
        if h.label in done:
            assert len(h.rungs) == 1 and "no fine-tune in the recipe" in h.reason and h.status != "stopped"
            assert (h.val_accuracy, h.accuracy) == (e.val_accuracy, e.accuracy)
        elif h.label in last:
            assert [r.max_epochs for r in h.rungs] == [1, 3, 9]
            assert (h.val_accuracy, h.accuracy) == (e.val_accuracy, e.accuracy), "rerun, not resumed: same result"
        elif h.label in kept:
            assert h.status == "stopped" and "after rung 2 (3 epochs)" in h.reason
        else:
            assert h.status == "stopped" and "after rung 1 (1 epochs)" in h.reason and len(h.rungs) == 1
            assert h.rungs[0].val_accuracy <= min(halving.candidates[j].rungs[0].val_accuracy
                                                  for j in evaluated if halving.candidates[j].label in kept)
    assert halving.epochs_spent < exhaustive.epochs_spent
    assert exhaustive.rungs == [{"rung": 0, "max_epochs": 9, "evaluated": len(evaluated)}]
    chosen = halving.next_choice()[0]
    best = exhaustive.next_choice()[0]
    assert chosen.status == best.status == "chosen"
    report = BuildReport(edgecomp_version="0", created="", target="t", hardware="cortex-a76",
                         model=ModelRecord(name="m", source="s", params=1, macs=1),
                         planner={"candidates": halving.candidates, "notes": halving.notes, **halving.summary()})
    text = explain_plan(report)
    assert "rung 1   1 epochs:" in text and f"kept {len(kept)}" in text and "stopped" in text
    assert f"{halving.epochs_spent} fine-tune epochs" in text
    html = planner_section(report)
    assert "val per rung" in html and "r1 " in html and "r2 " in html and "r3 " in html


def test_halving_and_exhaustive_share_the_cache_and_fresh_search_bypasses_it(tmp_path, zoo):
    target = small_target(tmp_path, methods=["prune.filter"])
    cache = tmp_path / "plans"
    first = planner(zoo, target, cache_dir=cache, early_stop=False, executor=SerialExecutor(threads=1))
    first.search()
    again = planner(zoo, target, cache_dir=cache, early_stop=False, executor=SerialExecutor(threads=1))
    again.search()
    measured = [c for c in again.candidates if c.val_accuracy is not None]
    assert measured and all(c.cached and c.epochs == 0 for c in measured) and again.epochs_spent == 0
    assert [c.val_accuracy for c in again.candidates] == [c.val_accuracy for c in first.candidates]
    fresh = planner(zoo, target, cache_dir=None, early_stop=False, executor=SerialExecutor(threads=1))
    fresh.search()  # --fresh-search: the build passes no cache folder
    assert not any(c.cached for c in fresh.candidates) and fresh.epochs_spent > 0
