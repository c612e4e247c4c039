"""Successive halving (the synchronous form of ASHA): short fine-tunes for all, longer ones for the best.

Rung budgets grow by ``eta`` from one epoch (1, 3, 9, ...) and end with the full budget (``--max-finetune-
epochs``, or each stage's own epochs when that is not given). After each rung below the last only the best
``ceil(n / eta)`` candidates by validation metric continue (ties: smaller, then faster); the accuracy budget
is judged on the last rung only.

Each rung **reruns the recipe** with the longer budget rather than resuming the previous rung's weights: a
recipe is several stages (e.g. a pruning search, its fine-tune, then int8 calibration after it), each
fine-tune keeps its best epoch and stops early, so "the weights after rung k" are not a point a longer
fine-tune passes through. Rerunning makes the last rung's result identical to the exhaustive search's for
that candidate (same task, same seed, same cache key), which is what makes the two comparable and lets them
share the evaluation cache; the price is the lower rungs' epochs, at most ``1/eta + 1/eta^2 + ...`` of the
full budget per surviving candidate.

That price includes each task's **fixed cost** (structural stages, calibration, evaluation), paid again at
every rung. The first rung measures it (``RungResult.seconds`` minus ``train_seconds``); when running the
remaining middle rungs would cost more than sending the survivors straight to the last rung
(``straight_to_last``), the middle rungs are skipped: as many or more candidates get the full budget, for less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgecomp.plan.candidate import Candidate, RungResult

DEFAULT_ETA = 3
HALVING_PAYS = 0.5  # halving runs only when it plans at most half the exhaustive epochs
FULL_EPOCHS = 20  # FinetuneConfig's default epochs: the full budget when --max-finetune-epochs is not given


def rung_budgets(max_epochs: int | None, eta: int = DEFAULT_ETA) -> list[int | None]:
    """Fine-tune caps per rung: 1, eta, eta^2, ... below the full budget, then the full budget itself.

    The last entry is ``max_epochs`` unchanged (None: each stage's own epochs), so the last rung runs
    exactly what an exhaustive search runs.
    """
    full = max_epochs if max_epochs is not None else FULL_EPOCHS
    budgets: list[int | None] = []
    epochs = 1
    while epochs < full:
        budgets.append(epochs)
        epochs *= eta
    return [*budgets, max_epochs]


def planned_epochs(n_candidates: int, budgets: list[int | None], eta: int = DEFAULT_ETA) -> int:
    """Fine-tune epochs halving plans for ``n_candidates`` over rungs ``budgets`` (each rung keeps 1/eta)."""
    total, alive = 0, n_candidates
    for cap in budgets:
        total += alive * (cap if cap is not None else FULL_EPOCHS)
        alive = max(1, math.ceil(alive / eta))
    return total


def worth_halving(n_candidates: int, max_epochs: int | None, eta: int = DEFAULT_ETA) -> bool:
    """Whether halving saves enough to pay for itself: it must plan at most ``HALVING_PAYS`` of the exhaustive
    search's epochs.

    Every rung reruns each survivor's recipe (structural stages, calibration, evaluation: measured at four
    to eight epochs' worth per task on the real-data ResNet), so a small saving is eaten by the reruns; and a
    short first rung ranks candidates less reliably than the full budget does. With 4 candidates and a cap
    of 3 epochs halving planned 10 of 12 epochs and was slower than exhaustive; with the default 20-epoch
    budget it pays from 4 candidates on.
    """
    budgets = rung_budgets(max_epochs, eta)
    if n_candidates <= eta or len(budgets) < 2:
        return False
    full = max_epochs if max_epochs is not None else FULL_EPOCHS
    return planned_epochs(n_candidates, budgets, eta) <= HALVING_PAYS * n_candidates * full


def keep_best(indices: Sequence[int], candidates: Sequence[Candidate], eta: int = DEFAULT_ETA) -> list[int]:
    """The best ``ceil(n / eta)`` of ``indices`` by validation metric (ties: smaller, then faster), in the
    order they came; candidates without a metric (failed) are never kept."""
    measured = [i for i in indices if candidates[i].val_accuracy is not None]
    n_keep = max(1, math.ceil(len(indices) / eta)) if measured else 0
    ranked = sorted(measured, key=lambda i: (-round(candidates[i].val_accuracy or 0.0, 2),
                                             candidates[i].predicted_bytes or 0, candidates[i].predicted_ms or 0.0))
    kept = set(ranked[:n_keep])
    return [i for i in indices if i in kept]


def straight_to_last(measured: Sequence[RungResult], cap: int, survivors: int, later: Sequence[int | None],
                     eta: int = DEFAULT_ETA) -> tuple[bool, str]:
    """Whether ``survivors`` should skip the middle rungs of ``later`` (the rest of the plan, last = full budget),
    judged from the rung just ``measured`` at fine-tunes capped at ``cap`` epochs; and the sums, in words.

    Per task, cost(c) = fixed + per_cap x c, with fixed the mean of (seconds - train_seconds) and per_cap the
    mean train_seconds / cap (all of a recipe's fine-tunes scale with the cap) over the measured rung.
    Halving's rest is the sum over the later rungs of alive x cost(rung cap), alive shrinking by ``eta``;
    going straight costs survivors x cost(full). Without measurements (all cached) the plan stands.
    """
    fresh = [r for r in measured if not r.cached and r.seconds > 0 and r.epochs > 0]
    if len(later) < 2 or not fresh or cap <= 0:
        return False, ""
    fixed = sum(max(0.0, r.seconds - r.train_seconds) for r in fresh) / len(fresh)
    per_cap = sum(r.train_seconds for r in fresh) / len(fresh) / cap

    def cost(c: int | None) -> float:
        return fixed + per_cap * (c if c is not None else FULL_EPOCHS)

    rest, alive = 0.0, survivors
    for c in later:
        rest += alive * cost(c)
        alive = max(1, math.ceil(alive / eta))
    direct = survivors * cost(later[-1])
    why = (f"per task {fixed:.1f} s fixed (stages, calibration, evaluation) + {per_cap:.1f} s per epoch of cap, "
           f"measured at {cap} epoch(s); the remaining rungs for {survivors} candidates ~{rest:.0f} s, the full "
           f"budget for all {survivors} ~{direct:.0f} s")
    return direct <= rest, why
