"""The error a planner raises when nothing fits: the best reachable numbers and which budget to relax."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from edgecomp.errors import InfeasibleBudgetError
from edgecomp.targets import Budgets

if TYPE_CHECKING:
    from edgecomp.plan.planner import Planner

REAL_EXPORT = "real export: "  # how a chosen candidate's reason starts when its real export missed
MB = 1e6


def infeasible_error(planner: Planner) -> InfeasibleBudgetError:
    """The error for 'nothing fits', naming the best reachable numbers and the budget to relax."""
    if planner.ctx.data is None:
        return no_data_error(planner, lower_bound=False)
    screened = [c for c in planner.candidates if c.predicted_bytes is not None]
    # evaluated candidates all met the predicted size and latency (those whose real export then missed a
    # budget are left out); accuracy is judged on validation
    missed = [c for c in planner.candidates if c.reason.startswith(REAL_EXPORT)]
    evaluated = [c for c in planner.candidates if c.recipe and c.val_accuracy is not None
                 and not c.reason.startswith(REAL_EXPORT)] if planner._source_val is not None else []
    best_size = min(screened, key=lambda c: c.predicted_bytes, default=None)
    best_lat = min(screened, key=lambda c: c.predicted_ms, default=None)
    best_acc = min(evaluated, key=lambda c: planner._source_val - c.val_accuracy, default=None)
    b = planner.budgets
    parts, relax = [], []
    if best_size:
        parts.append(f"smallest {best_size.predicted_bytes / MB:.4f} MB ({best_size.label})")
        if b.size_mb is not None and best_size.predicted_bytes > b.size_mb * MB:
            relax.append(f"--max-size {best_size.predicted_bytes / MB * 1.05:.4f}MB")
    if best_lat:
        parts.append(f"fastest {best_lat.predicted_ms:.4f} ms on {planner.ctx.profile.name} ({best_lat.label})")
        if b.latency_ms is not None and best_lat.predicted_ms > b.latency_ms:
            relax.append(f"--max-latency {best_lat.predicted_ms * 1.05:.4f}ms")
    if best_acc:
        val_drop = planner._source_val - best_acc.val_accuracy
        test = f", {best_acc.accuracy_drop:.2f} pt on test" if best_acc.accuracy_drop is not None else ""
        parts.append(f"least accuracy drop within the size and latency budgets {val_drop:.2f} pt on validation"
                     f"{test} ({best_acc.label})")
        if not relax and b.accuracy_drop_pct is not None:
            relax.append(f"--max-accuracy-drop {math.ceil(val_drop * 10) / 10 + 0.1:.1f}")
    if missed:
        parts.append(f"{len(missed)} candidate(s) met every budget as predicted but not on the real export ("
                     + "; ".join(f"{c.label}: {c.reason.removeprefix(REAL_EXPORT)}" for c in missed[:2]) + ")")
    failed = [c for c in planner.candidates if c.status == "failed"]
    if failed:
        parts.append(f"{len(failed)} candidate(s) failed, so were never judged (first: {failed[0].label}: "
                     f"{failed[0].reason})")
    if not relax and any(c.status == "not-evaluated" for c in planner.candidates):
        relax.append("a longer --search-time")
    if not relax and any(c.status == "stopped" for c in planner.candidates):
        relax.append("--no-early-stop (successive halving stopped some candidates after short fine-tunes)")
    hint = "relax " + (" or ".join(relax) if relax else "the budgets") + ", or allow more methods in the target"
    if failed:
        hint = f"see why each failed candidate failed in report.json or with --debug; {hint}"
    return InfeasibleBudgetError(
        f"no candidate meets the budgets ({budget_text(planner.budgets)}); best reachable: " + "; ".join(parts), hint)


def no_data_error(planner: Planner, lower_bound: bool) -> InfeasibleBudgetError:
    """'Nothing data-free fits': what each data-free option reaches, and --data as the way forward."""
    reach = "; ".join(
        f"{c.label}: {c.predicted_bytes / MB:.4f} MB, {c.predicted_ms:.3f} ms on {planner.ctx.profile.name}"
        + (f" ({c.reason})" if c.reason.startswith(REAL_EXPORT) else "")
        for c in planner.candidates if c.predicted_bytes is not None and c.predicted_ms is not None)
    if lower_bound:
        reach += f" (weights only: the {planner.primary_format} file adds its own bytes)"
    b = planner.budgets
    relax = []
    smallest = min((c.predicted_bytes for c in planner.candidates if c.predicted_bytes is not None), default=None)
    fastest = min((c.predicted_ms for c in planner.candidates if c.predicted_ms is not None), default=None)
    if b.size_mb is not None and smallest is not None and smallest > b.size_mb * MB:
        relax.append(f"--max-size above {smallest / MB:.4f}MB")
    if b.latency_ms is not None and fastest is not None and fastest > b.latency_ms:
        relax.append(f"--max-latency above {fastest:.3f}ms")
    return InfeasibleBudgetError(
        f"without --data no candidate can meet the budgets ({budget_text(planner.budgets)}): the planner only tries "
        f"what it can bound without data, and that reaches {reach or 'nothing (every candidate failed)'}",
        "pass --data (an image folder, a .npz or package.module:factory) so the planner can evaluate "
        "pruning, low-rank and separable rewrites and clustering"
        + (f"; or relax {' or '.join(relax)}" if relax else "") + "; or run a recipe of your own with --recipe",
    )


def budget_text(b: Budgets) -> str:
    """The budgets in words, e.g. 'size <= 0.05 MB, accuracy drop <= 1.0 pt'."""
    return ", ".join(x for x in (
        f"size <= {b.size_mb} MB" if b.size_mb is not None else "",
        f"latency <= {b.latency_ms} ms" if b.latency_ms is not None else "",
        f"accuracy drop <= {b.accuracy_drop_pct} pt" if b.accuracy_drop_pct is not None else "") if x)
