"""The planner: choose the recipe that meets the budgets while losing the least accuracy.

1. **Screen** every candidate cheaply (``screen.py``, as tasks on the executor, one per family of candidates
   sharing their first structural stage): apply its structural stages without fine-tuning,
   count parameters (size = parameters x bytes per parameter of its dtype + the format's overhead) and
   predict latency for the hardware profile. Candidates that miss the size or latency budget are dropped
   before any training. If the untouched model already fits, it wins at once.
2. **Evaluate** the survivors as tasks on an executor (``executors.py``: serial by default, ``--workers N``
   local processes, ``--ray``): each task runs the full recipe with its recovery fine-tunes and measures
   validation and test metrics. When it saves enough (``halving.worth_halving``), successive halving
   (``halving.py``) gives every candidate a short fine-tune first and only the best ``1/eta`` longer ones,
   judging the accuracy budget on the last rung; ``early_stop=False`` (``--no-early-stop``) evaluates every candidate
   in full. Results are cached by content (``eval_cache.py``), so a re-run with the same inputs is fast.
3. **Rank** what meets every budget: most accurate first (validation split); ties go to the smaller,
   then the faster. The build exports the winner and re-checks the real numbers; if they miss, it
   asks for the next (``Planner.next_choice``).

``search_time_s`` is a hard bound on the whole search: no screen or evaluation starts after it, and every
fine-tune, pruning search and calibration stops at it (the deadline travels in each task); candidates whose
evaluation ran into it are marked ``cut_short``, those never reached ``not-evaluated``.

Without data the planner never guesses: it only generates candidates whose stages need no data
(``Stage.needs_data``: the untouched model, fp16, int8 calibrated from batch-norm statistics), chooses the
least invasive one that fits, reports "accuracy not measured", and when none can fit it says so at once,
before any export, naming ``--data``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgecomp.compress.base import BuildContext
from edgecomp.compress.recipe import RecipeStep
from edgecomp.errors import ConfigError, EdgecompError, InfeasibleBudgetError
from edgecomp.metrics import evaluate
from edgecomp.plan.candidate import Candidate, RungResult
from edgecomp.plan.candidates import dtype_of, generate
from edgecomp.plan.eval_cache import EvalCache, eval_key, search_digest
from edgecomp.plan.executors import Executor, SerialExecutor
from edgecomp.plan.halving import DEFAULT_ETA, keep_best, rung_budgets, straight_to_last, worth_halving
from edgecomp.plan.infeasible import REAL_EXPORT, infeasible_error, no_data_error
from edgecomp.plan.progress import SearchProgress
from edgecomp.plan.screen import SourceExport, family, measure_overhead, screen
from edgecomp.plan.tasks import EvalResult, EvalTask, Evaluated, ScreenJob, pack_payload, run_task
from edgecomp.records import ACCURACY_NOT_MEASURED
from edgecomp.targets import Budgets

__all__ = ["Candidate", "Evaluated", "Planner", "RungResult"]
logger = logging.getLogger(__name__)
NO_DATA_NOTE = ("No --data: only candidates whose error is bounded without data were considered (the untouched "
                "model, fp16 weights, int8 calibrated from batch-norm statistics); accuracy not measured. Pass "
                "--data to let the planner evaluate pruning, rewrites and clustering.")


@dataclass
class Planner:
    """Searches candidate recipes for ``ctx.target`` under ``budgets`` (see the module docstring)."""

    model: nn.Module
    ctx: BuildContext
    budgets: Budgets
    primary_format: str
    search_time_s: float = 600.0
    max_finetune_epochs: int | None = None
    cache_dir: Path | None = None
    executor: Executor | None = None
    """Where evaluations run (None: serially in this process)."""
    early_stop: bool = True
    """Successive halving when it can save work; False evaluates every candidate in full (--no-early-stop)."""
    eta: int = DEFAULT_ETA
    """Successive halving keeps the best 1/eta at each rung."""
    progress: SearchProgress | None = None
    """Where progress goes (None: log lines)."""
    export_dir: Path | None = None
    """A scratch folder where the source model's export (made for the format overhead) is kept for reuse."""
    source_export: SourceExport | None = None
    """That export, when one was made this search (the build copies it if the untouched model wins)."""
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rungs: list[dict] = field(default_factory=list)
    """One entry per rung run: its fine-tune cap, how many candidates it evaluated and which went on."""
    epochs_spent: int = 0
    """Fine-tune epochs run by the search's evaluations (cached ones count 0)."""
    screen_seconds: float = 0.0
    """Wall time of screening (structural stages applied untrained, sizes and latencies predicted)."""
    screen_task_seconds: list[float] = field(default_factory=list)
    """How long each screening task (one family of candidates) took where it ran."""
    _steps: list[list[RecipeStep]] = field(default_factory=list)
    _models: dict[int, Evaluated] = field(default_factory=dict)
    _overhead_bytes: int = 0
    _source_val: float | None = None
    _source_test: float | None = None
    _deadline: float | None = None
    _cache: EvalCache = field(default_factory=lambda: EvalCache(None))
    _search_key: str = ""
    _started: bool = False
    _threads: int = 1

    # -- public -------------------------------------------------------------------------------------------
    def search(self) -> None:
        """Screen and evaluate candidates; afterwards ``next_choice`` hands them out best first."""
        if isinstance(self.model, torch.jit.ScriptModule):
            # screening hooks every layer to predict latency and rewrites modules; a ScriptModule allows neither
            raise ConfigError("the planner cannot search a TorchScript model: its layers cannot be hooked or "
                              "rewritten", "pass --recipe (e.g. --recipe \"\" to export it as is, or "
                              "--recipe quantize.int8), or the model as a .pt2 or package.module:factory")
        start = time.monotonic()
        self._deadline = start + self.search_time_s
        data = self.ctx.data
        if data is not None:
            self._source_val = evaluate(self.model, data, "val")
            self._source_test = evaluate(self.model, data, "test")
        self._steps = generate(self.ctx.target, data_free=data is None)
        note = ACCURACY_NOT_MEASURED if data is None else None
        self.candidates = [Candidate(recipe=[s.describe() for s in steps], dtype=dtype_of(steps), accuracy_note=note)
                           for steps in self._steps]
        if data is None:
            self.notes.append(NO_DATA_NOTE)
            self._refuse_at_once_without_data()
        self._overhead_bytes, self.source_export = measure_overhead(self.model, self.ctx, self.primary_format,
                                                                    self.cache_dir, self.export_dir)
        self._screen(0, deadline=None)  # the untouched model is always screened: it may win at once
        base = self.candidates[0]
        if base.status == "feasible":
            base.val_accuracy, base.accuracy, base.accuracy_drop = self._source_val, self._source_test, 0.0
            self._models[0] = Evaluated(self.model, [], self.ctx.export)
            for c in self.candidates[1:]:
                c.status, c.reason = "not-evaluated", "the untouched model already meets every budget"
            self.notes.append("The untouched model meets every budget, so nothing was changed.")
            return
        logger.info("[plan] the untouched model misses a budget (%s); screening %d candidates",
                    base.reason, len(self.candidates) - 1)
        if data is None:  # nothing to evaluate, and data-free candidates have no structural stages: screened here
            for i in range(1, len(self.candidates)):
                self._screen(i, self._deadline)
                if self.candidates[i].status == "feasible":
                    self.candidates[i].reason = f"{ACCURACY_NOT_MEASURED} (no --data)"
            return  # next_choice builds the least invasive one that fits
        executor = self.executor or SerialExecutor()
        self._threads = executor.threads
        progress = self.progress or SearchProgress()
        try:
            screen_start = time.monotonic()
            self._screen_all(list(range(1, len(self.candidates))), executor, progress)
            self.screen_seconds = time.monotonic() - screen_start
            order = sorted((i for i, c in enumerate(self.candidates) if c.status == "feasible" and i),
                           key=lambda i: -(self.candidates[i].params or 0))
            self._evaluate_all(order, executor, progress)
        finally:
            progress.close()
            executor.close()
        self._mark_pareto()

    def next_choice(self) -> tuple[Candidate, list[RecipeStep], Evaluated] | None:
        """The best feasible candidate not yet handed out (most accurate, then smaller, then faster)."""
        ranked = self.ranking()
        if not ranked:
            return None
        best = ranked[0]
        c = self.candidates[best]
        c.status = "chosen"
        return c, self._steps[best], self._materialize(best)

    def ranking(self) -> list[int]:
        """Indices of the feasible candidates, best first: most accurate (validation), then smaller, then faster;
        without data, least invasive first (the order candidates come in)."""
        feasible = [i for i, c in enumerate(self.candidates) if c.status == "feasible"]
        if self.ctx.data is None:
            return feasible
        return sorted(feasible, key=lambda i: (-round(self.candidates[i].val_accuracy or 0.0, 2),
                                               self.candidates[i].predicted_bytes or 0,
                                               self.candidates[i].predicted_ms or 0.0))

    def summary(self) -> dict:
        """What the report says about the search besides the candidates: executor, rungs, epochs spent."""
        ex = self.executor
        return {"executor": ex.name if ex else "serial", "workers": ex.parallel if ex else 1,
                "threads_per_evaluation": ex.threads if ex else self._threads, "rungs": self.rungs,
                "epochs_spent": self.epochs_spent, "screen_seconds": round(self.screen_seconds, 2)}

    def reject_chosen(self, candidate: Candidate, missed: str) -> None:
        """Mark a chosen candidate whose real export missed a budget (``missed`` says which)."""
        candidate.status, candidate.reason = "rejected", REAL_EXPORT + missed

    def infeasible_error(self) -> InfeasibleBudgetError:
        """The error for 'nothing fits', naming the best reachable numbers and the budget to relax."""
        return infeasible_error(self)

    # -- without data -----------------------------------------------------------------------------------------
    def _refuse_at_once_without_data(self) -> None:
        """Raise before any export when no data-free candidate fits even without the format's own bytes.

        The format overhead (a real export of the source model, the slowest step for a large model) only
        adds bytes, so predictions without it are lower bounds: if every candidate misses a budget then,
        nothing data-free can fit. Statuses are reset so the full screen can follow otherwise.
        """
        for i in range(len(self.candidates)):
            self._screen(i)
        if all(c.status in ("rejected", "failed") for c in self.candidates):
            raise no_data_error(self, lower_bound=True)
        for c in self.candidates:
            c.status, c.reason, c.seconds = "pending", "", 0.0

    # -- evaluation -----------------------------------------------------------------------------------------
    def _screen(self, i: int, deadline: float | None = None) -> None:
        """Screen candidate ``i`` in this process (recipes without structural stages, and without data)."""
        c = self.candidates[i]
        screen(c, self._steps[i], self.model, self.ctx, self.budgets, self.primary_format, self._overhead_bytes,
               deadline)
        _warn_if_unscreened(c)

    def _screen_all(self, indices: list[int], executor: Executor, progress: SearchProgress) -> None:
        """Screen ``indices`` as tasks on ``executor``, one task per family (candidates sharing their first
        structural stage), the largest families first; candidates without structural stages are screened here
        (counting parameters takes no time)."""
        families: dict[str, list[int]] = {}
        for i in indices:
            families.setdefault(family(self._steps[i]), []).append(i)
        for i in families.pop("", []):
            self._screen(i, self._deadline)
        if not families:
            return
        deadline_wall = self._deadline_wall()
        tasks = [EvalTask(members[0], (), f"screen {name}" + (f" (+{len(members) - 1})" if len(members) > 1 else ""),
                          rung=-1, seed=self.ctx.seed, deadline_wall=deadline_wall, threads=executor.threads,
                          screen=ScreenJob(tuple((i, tuple(self._steps[i])) for i in members), self.budgets,
                                           self.primary_format, self._overhead_bytes))
                 for name, members in sorted(families.items(), key=lambda kv: -len(kv[1]))]
        progress.begin_screen(len(tasks))
        self._start(executor)

        by_first = {t.index: t for t in tasks}

        def take(result: EvalResult) -> None:
            task = by_first[result.index]
            by_index = dict(result.screened)
            for i, _ in task.screen.members:
                c = self.candidates[i]
                got = by_index.get(i)
                if got is None:  # the task failed or never started: every member says why
                    c.status = "failed" if result.error else "not-evaluated"
                    c.reason = result.error or f"search time of {self.search_time_s:.0f} s used up before it was screened"
                    continue
                for name in ("params", "macs", "predicted_ms", "predicted_bytes", "status", "reason"):
                    setattr(c, name, getattr(got, name))
                c.seconds += got.seconds
                _warn_if_unscreened(c)
            self.screen_task_seconds.append(result.seconds)
            progress.finished(result, task.label)

        executor.run(tasks, take, progress)

    def _deadline_wall(self) -> float:
        """The search deadline as ``time.time()`` (tasks carry wall-clock deadlines: they mean the same on
        every node)."""
        return time.time() + (self._deadline - time.monotonic())

    def _start(self, executor: Executor) -> None:
        """Start ``executor`` once per search (local workers spawn, Ray gets the payload)."""
        if not self._started:
            executor.start(self.model, self.ctx, lambda: pack_payload(self.model, self.ctx))
            self._started = True

    def _evaluate_all(self, order: list[int], executor: Executor, progress: SearchProgress) -> None:
        """Evaluate ``order`` on the executor: one rung when exhaustive, several with successive halving."""
        halving = self.early_stop and worth_halving(len(order), self.max_finetune_epochs, self.eta)
        budgets = rung_budgets(self.max_finetune_epochs, self.eta) if halving else [self.max_finetune_epochs]
        if self.cache_dir is not None:
            self._cache = EvalCache(self.cache_dir)
            self._search_key = search_digest(self.model, self.ctx.teacher, self.ctx.data)
        if halving:
            self.notes.append(f"Successive halving: {len(order)} candidates, rungs of "
                              + ", ".join(f"{b} epochs" if b is not None else "the full fine-tune" for b in budgets)
                              + f"; the best 1/{self.eta} went on at each rung (--no-early-stop evaluates all).")
        survivors, r = list(order), 0
        while True:
            cap = budgets[r]
            final = r == len(budgets) - 1
            self._run_rung(survivors, r, len(budgets), cap, final, executor, progress)
            reached = [i for i in survivors if self.candidates[i].rungs
                       and self.candidates[i].rungs[-1].rung == r and self.candidates[i].status == "feasible"]
            entry = {"rung": r, "max_epochs": cap, "evaluated": len(reached)}
            if final:
                self.rungs.append(entry)
                break
            # a recipe without a fine-tune (e.g. quantize.int8 alone) gives its final result on the first
            # rung: judged now, it neither competes for nor needs a longer budget
            done = [i for i in reached if self.candidates[i].rungs[-1].epochs == 0]
            for i in done:
                self._judge(i, note="no fine-tune in the recipe: its first rung is its full evaluation")
            reached = [i for i in reached if i not in done]
            kept = keep_best(reached, self.candidates, self.eta)
            entry["kept"] = [self.candidates[i].label for i in kept]
            self.rungs.append(entry)
            for i in reached:
                if i not in kept:
                    c = self.candidates[i]
                    c.status = "stopped"
                    c.reason = (f"stopped by successive halving after rung {r + 1} ({cap} epochs): val "
                                f"{c.val_accuracy:.2f}, not in the best 1/{self.eta}")
            survivors = kept
            if time.monotonic() > self._deadline:
                for i in survivors:  # no time for longer rungs: judged on the last one they finished
                    self.candidates[i].cut_short = True
                    self._judge(i, note=f"search time used up: judged on rung {r + 1} ({cap} epochs)")
                break
            skip, why = straight_to_last([self.candidates[i].rungs[-1] for i in reached], cap or 0, len(kept),
                                         budgets[r + 1:], self.eta)
            if skip:  # the middle rungs would cost more than the full budget for every survivor
                entry["next"] = "straight to the full budget"
                self.notes.append(f"Successive halving skipped its middle rung(s) after rung {r + 1}: {why}.")
                logger.info("[plan] the %d survivors go straight to the full budget (%s)", len(kept), why)
                budgets = [*budgets[:r + 1], budgets[-1]]
            r += 1

    def _run_rung(self, indices: list[int], rung: int, rungs: int, cap: int | None, final: bool,
                  executor: Executor, progress: SearchProgress) -> None:
        """Evaluate ``indices`` with fine-tunes capped at ``cap``: from the cache where it has them, else as
        tasks on ``executor``."""
        progress.begin(rung, rungs, len(indices), cap)
        deadline_wall = self._deadline_wall()
        tasks = []
        for i in indices:
            c = self.candidates[i]
            hit = self._cache.get(self._key(i, cap, executor.threads))
            if hit is not None:
                self._take(EvalResult(i, rung, hit["val_accuracy"], hit["accuracy"], hit.get("epochs", -1)), cap,
                           final, cached=True)
                continue
            tasks.append(EvalTask(i, tuple(self._steps[i]), c.label, rung, cap, self.ctx.seed, deadline_wall,
                                  keep_model=final, threads=executor.threads))
        if not tasks:
            return
        self._start(executor)

        def take(result: EvalResult) -> None:
            self._take(result, cap, final)
            progress.finished(result, self.candidates[result.index].label)

        executor.run(tasks, take, progress)

    def _key(self, i: int, cap: int | None, threads: int) -> str:
        return eval_key(self._search_key, self.candidates[i].recipe, self.ctx.seed, cap, threads)

    def _take(self, result: EvalResult, cap: int | None, final: bool, cached: bool = False) -> None:
        """Record one evaluation's result on its candidate (and in the cache)."""
        i = result.index
        c = self.candidates[i]
        if result.skipped:
            if c.rungs:  # measured on an earlier rung: judged on that one
                c.cut_short = True
                self._judge(i, note=f"search time used up: judged on rung {c.rungs[-1].rung + 1}")
            else:
                c.status, c.reason = "not-evaluated", f"search time of {self.search_time_s:.0f} s used up"
            return
        if result.error:
            c.status, c.reason = "failed", result.error
            return
        c.rungs.append(RungResult(rung=result.rung, max_epochs=cap, val_accuracy=result.val_accuracy,
                                  accuracy=result.accuracy, epochs=result.epochs, seconds=round(result.seconds, 3),
                                  train_seconds=round(sum(e.get("seconds", 0.0) for e in result.history), 3),
                                  cached=cached, cut_short=result.cut_short))
        c.val_accuracy, c.accuracy, c.cached = result.val_accuracy, result.accuracy, cached
        c.seconds += result.seconds
        if not cached:  # a cached rung spent no epochs now (its record keeps how many it ran: -1 if unknown)
            c.epochs += result.epochs
            self.epochs_spent += result.epochs
        c.cut_short = c.cut_short or result.cut_short
        if final and result.evaluated is not None:
            self._models[i] = result.evaluated
        if not cached and not result.cut_short:  # a deadline-cut result depends on timing: never cached
            self._cache.put(self._key(i, cap, self._threads), {"recipe": c.recipe, "max_epochs": cap, "epochs": result.epochs,
                                                "val_accuracy": c.val_accuracy, "accuracy": c.accuracy})
        if final:
            self._judge(i)
        elif c.val_accuracy is not None:
            logger.info("  %s: rung %d val %.2f%s", c.label, result.rung + 1, c.val_accuracy,
                        " [cached]" if cached else "")

    def _judge(self, i: int, note: str = "") -> None:
        """Hold the candidate's last measured metric against the accuracy budget (validation drop)."""
        c = self.candidates[i]
        c.reason = note
        if c.accuracy is None or self._source_test is None:
            c.reason = "no evaluation data: accuracy not measured"
            return
        c.accuracy_drop = self._source_test - c.accuracy
        val_drop = (self._source_val or 0.0) - (c.val_accuracy or 0.0)
        misses = self.budgets.missed(accuracy_drop=val_drop, accuracy_what="validation accuracy drop")
        if misses:
            c.status, c.reason = "rejected", "; ".join([misses[0], note] if note else [misses[0]])
        logger.info("  %s: val %.2f, test %.2f (%s)%s", c.label, c.val_accuracy, c.accuracy, c.status,
                    " [cached]" if c.cached else "")

    def _materialize(self, i: int) -> Evaluated:
        """The chosen candidate's model: kept from its evaluation, else (cached, or from a worker whose model
        does not pickle) rebuilt here with the last rung's budget and no deadline."""
        if i not in self._models:
            cap = self.rungs[-1]["max_epochs"] if self.rungs else self.max_finetune_epochs
            c = self.candidates[i]
            result = run_task(self.model, self.ctx, EvalTask(i, tuple(self._steps[i]), c.label, max_epochs=cap,
                                                             seed=self.ctx.seed, keep_model=True,
                                                             threads=self._threads))
            if result.evaluated is None:
                raise EdgecompError(f"rebuilding the chosen candidate {c.label} failed: {result.error}",
                                    "run with --fresh-search, or report it with the --debug log")
            self._models[i] = result.evaluated
        return self._models[i]

    def _mark_pareto(self) -> None:
        pts = [c for c in self.candidates if c.accuracy_drop is not None and c.predicted_bytes is not None]
        for c in pts:
            c.pareto = not any(
                o is not c and o.predicted_bytes <= c.predicted_bytes and o.predicted_ms <= c.predicted_ms
                and o.accuracy_drop <= c.accuracy_drop
                and (o.predicted_bytes, o.predicted_ms, o.accuracy_drop) != (c.predicted_bytes, c.predicted_ms,
                                                                             c.accuracy_drop)
                for o in pts)


def _warn_if_unscreened(c: Candidate) -> None:
    """Say on the console that a candidate is left out because its screen failed."""
    if c.status == "failed":
        logger.warning("[plan] %s could not be screened (%s); it is left out", c.label, c.reason)
