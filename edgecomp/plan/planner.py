"""The planner: choose the recipe that meets the budgets while losing the least accuracy.

1. **Screen** every candidate cheaply: apply its structural stages without fine-tuning, count
   parameters (size = parameters x bytes per parameter of its dtype + the format's overhead) and
   predict latency for the hardware profile from the layer list. Candidates that miss the size or
   latency budget are dropped before any training. If the untouched model already fits, it wins at once.
2. **Evaluate** the survivors, least invasive first, within the search time: run the full recipe
   (with its recovery fine-tune) and measure validation and test accuracy. Results are cached by
   content hash (model weights, recipe, data, seed), so a re-run with the same inputs is fast.
3. **Rank** what meets every budget: most accurate first (validation split); ties go to the smaller,
   then the faster. The build exports the winner and re-checks the real numbers; if they miss, it
   asks for the next (``Planner.next_choice``).

``search_time_s`` bounds the whole search: no evaluation starts after it, and every recovery fine-tune
stops at it (``FinetunePolicy.deadline``); candidates whose evaluation ran into it are marked ``cut_short``.

Without data the planner never guesses: it only generates candidates whose stages need no data
(``Stage.needs_data``: the untouched model, fp16, int8 calibrated from batch-norm statistics), chooses the
least invasive one that fits, reports "accuracy not measured", and when none can fit it says so at once,
before any export, naming ``--data``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from torch import nn

from edgecomp import __version__
from edgecomp.compress.base import BuildContext, ExportOptions
from edgecomp.compress.pipeline import apply_recipe
from edgecomp.compress.recipe import RecipeStep
from edgecomp.errors import ConfigError, EdgecompError, InfeasibleBudgetError
from edgecomp.finetune import FinetunePolicy
from edgecomp.metrics import evaluate
from edgecomp.model import count_macs, count_params
from edgecomp.plan.candidates import bytes_per_param, dtype_of, generate, is_structural
from edgecomp.profile.predict import layers_from_torch, predict_from_layers
from edgecomp.records import ACCURACY_NOT_MEASURED, StageRecord
from edgecomp.targets import Budgets

logger = logging.getLogger(__name__)
REAL_EXPORT = "real export: "  # how a chosen candidate's reason starts when its real export missed
MB = 1e6
NO_DATA_NOTE = ("No --data: only candidates whose error is bounded without data were considered (the untouched "
                "model, fp16 weights, int8 calibrated from batch-norm statistics); accuracy not measured. Pass "
                "--data to let the planner evaluate pruning, rewrites and clustering.")


class Candidate(BaseModel):
    """One recipe the planner considered, with what it predicted and measured, and its fate."""

    recipe: list[str] = Field(description="Stages in recipe syntax; empty for the untouched model.")
    dtype: str = Field("fp32", description="Weight dtype it exports with.")
    params: int | None = Field(None, description="Parameters after its structural stages.")
    macs: int | None = Field(None, description="MACs after its structural stages.")
    predicted_bytes: int | None = Field(None, description="Size predicted from parameters and dtype.")
    predicted_ms: float | None = Field(None, description="Latency predicted for the hardware profile.")
    val_accuracy: float | None = Field(None, description="Validation top-1 after recovery, percent.")
    accuracy: float | None = Field(None, description="Test top-1 after recovery, percent.")
    accuracy_drop: float | None = Field(None, description="Source test top-1 minus this, points.")
    real_bytes: int | None = Field(None, description="Size of the real export (chosen candidates only).")
    real_ms: float | None = Field(None, description="Latency predicted from the real export.")
    status: str = Field("pending", description="chosen, feasible, rejected, not-evaluated or failed.")
    reason: str = Field("", description="Why it has that status.")
    seconds: float = Field(0.0, description="Time spent on it (screen and evaluation).")
    cached: bool = Field(False, description="Whether its evaluation came from the cache.")
    cut_short: bool = Field(False, description="Its evaluation ran into the --search-time deadline, where every "
                                               "fine-tune stops: its accuracy may be below a full fine-tune's.")
    accuracy_note: str | None = Field(None, description="'accuracy not measured' when the build had no data.")
    pareto: bool = Field(False, description="On the size-latency-accuracy Pareto front of evaluated ones.")

    @property
    def label(self) -> str:
        """Readable recipe."""
        return " -> ".join(self.recipe) or "fp32 (untouched)"


@dataclass
class _Evaluated:
    model: nn.Module
    stages: list[StageRecord]
    export: ExportOptions


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
    candidates: list[Candidate] = field(default_factory=list)
    _steps: list[list[RecipeStep]] = field(default_factory=list)
    _models: dict[int, _Evaluated] = field(default_factory=dict)
    _overhead_bytes: int = 0
    _source_val: float | None = None
    _source_test: float | None = None
    _deadline: float | None = None
    notes: list[str] = field(default_factory=list)

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
        self._overhead_bytes = self._measure_overhead()
        self._screen(0)
        base = self.candidates[0]
        if base.status == "feasible":
            base.val_accuracy, base.accuracy, base.accuracy_drop = self._source_val, self._source_test, 0.0
            self._models[0] = _Evaluated(self.model, [], self.ctx.export)
            for c in self.candidates[1:]:
                c.status, c.reason = "not-evaluated", "the untouched model already meets every budget"
            self.notes.append("The untouched model meets every budget, so nothing was changed.")
            return
        logger.info("[plan] the untouched model misses a budget (%s); screening %d candidates",
                    base.reason, len(self.candidates) - 1)
        for i in range(1, len(self.candidates)):
            self._screen(i)
        if data is None:  # nothing to evaluate: next_choice builds the least invasive one that fits
            for c in self.candidates[1:]:
                if c.status == "feasible":
                    c.reason = f"{ACCURACY_NOT_MEASURED} (no --data)"
            return
        order = sorted((i for i, c in enumerate(self.candidates) if c.status == "feasible" and i),
                       key=lambda i: -(self.candidates[i].params or 0))
        for n, i in enumerate(order, 1):
            c = self.candidates[i]
            if time.monotonic() > self._deadline:
                c.status, c.reason = "not-evaluated", f"search time of {self.search_time_s:.0f} s used up"
                continue
            logger.info("[plan %d/%d] evaluating %s", n, len(order), c.label)
            self._evaluate(i)
        self._mark_pareto()

    def next_choice(self) -> tuple[Candidate, list[RecipeStep], _Evaluated] | None:
        """The best feasible candidate not yet handed out (most accurate, then smaller, then faster)."""
        feasible = [i for i, c in enumerate(self.candidates) if c.status == "feasible"]
        if not feasible:
            return None
        if self.ctx.data is None:  # accuracy unknown: the least invasive that fits (candidates come in that order)
            best = feasible[0]
        else:
            best = min(feasible, key=lambda i: (-round(self.candidates[i].val_accuracy or 0.0, 2),
                                                self.candidates[i].predicted_bytes or 0,
                                                self.candidates[i].predicted_ms or 0.0))
        c = self.candidates[best]
        c.status = "chosen"
        return c, self._steps[best], self._materialize(best)

    def reject_chosen(self, candidate: Candidate, missed: str) -> None:
        """Mark a chosen candidate whose real export missed a budget (``missed`` says which)."""
        candidate.status, candidate.reason = "rejected", REAL_EXPORT + missed

    def infeasible_error(self) -> InfeasibleBudgetError:
        """The error for 'nothing fits', naming the best reachable numbers and the budget to relax."""
        if self.ctx.data is None:
            return self._no_data_error(lower_bound=False)
        screened = [c for c in self.candidates if c.predicted_bytes is not None]
        # evaluated candidates all met the predicted size and latency (those whose real export then missed a
        # budget are left out); accuracy is judged on validation
        missed = [c for c in self.candidates if c.reason.startswith(REAL_EXPORT)]
        evaluated = [c for c in self.candidates if c.recipe and c.val_accuracy is not None
                     and not c.reason.startswith(REAL_EXPORT)] if self._source_val is not None else []
        best_size = min(screened, key=lambda c: c.predicted_bytes, default=None)
        best_lat = min(screened, key=lambda c: c.predicted_ms, default=None)
        best_acc = min(evaluated, key=lambda c: self._source_val - c.val_accuracy, default=None)
        b = self.budgets
        parts, relax = [], []
        if best_size:
            parts.append(f"smallest {best_size.predicted_bytes / MB:.4f} MB ({best_size.label})")
            if b.size_mb is not None and best_size.predicted_bytes > b.size_mb * MB:
                relax.append(f"--max-size {best_size.predicted_bytes / MB * 1.05:.4f}MB")
        if best_lat:
            parts.append(f"fastest {best_lat.predicted_ms:.4f} ms on {self.ctx.profile.name} ({best_lat.label})")
            if b.latency_ms is not None and best_lat.predicted_ms > b.latency_ms:
                relax.append(f"--max-latency {best_lat.predicted_ms * 1.05:.4f}ms")
        if best_acc:
            val_drop = self._source_val - best_acc.val_accuracy
            test = f", {best_acc.accuracy_drop:.2f} pt on test" if best_acc.accuracy_drop is not None else ""
            parts.append(f"least accuracy drop within the size and latency budgets {val_drop:.2f} pt on validation"
                         f"{test} ({best_acc.label})")
            if not relax and b.accuracy_drop_pct is not None:
                relax.append(f"--max-accuracy-drop {math.ceil(val_drop * 10) / 10 + 0.1:.1f}")
        if missed:
            parts.append(f"{len(missed)} candidate(s) met every budget as predicted but not on the real export ("
                         + "; ".join(f"{c.label}: {c.reason.removeprefix(REAL_EXPORT)}" for c in missed[:2]) + ")")
        if not relax and any(c.status == "not-evaluated" for c in self.candidates):
            relax.append("a longer --search-time")
        return InfeasibleBudgetError(
            f"no candidate meets the budgets ({self._budget_text()}); best reachable: " + "; ".join(parts),
            "relax " + (" or ".join(relax) if relax else "the budgets") + ", or allow more methods in the target",
        )

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
            raise self._no_data_error(lower_bound=True)
        for c in self.candidates:
            c.status, c.reason, c.seconds = "pending", "", 0.0

    def _no_data_error(self, lower_bound: bool) -> InfeasibleBudgetError:
        """'Nothing data-free fits': what each data-free option reaches, and --data as the way forward."""
        reach = "; ".join(
            f"{c.label}: {c.predicted_bytes / MB:.4f} MB, {c.predicted_ms:.3f} ms on {self.ctx.profile.name}"
            + (f" ({c.reason})" if c.reason.startswith(REAL_EXPORT) else "")
            for c in self.candidates if c.predicted_bytes is not None and c.predicted_ms is not None)
        if lower_bound:
            reach += f" (weights only: the {self.primary_format} file adds its own bytes)"
        b = self.budgets
        relax = []
        smallest = min((c.predicted_bytes for c in self.candidates if c.predicted_bytes is not None), default=None)
        fastest = min((c.predicted_ms for c in self.candidates if c.predicted_ms is not None), default=None)
        if b.size_mb is not None and smallest is not None and smallest > b.size_mb * MB:
            relax.append(f"--max-size above {smallest / MB:.4f}MB")
        if b.latency_ms is not None and fastest is not None and fastest > b.latency_ms:
            relax.append(f"--max-latency above {fastest:.3f}ms")
        return InfeasibleBudgetError(
            f"without --data no candidate can meet the budgets ({self._budget_text()}): the planner only tries "
            f"what it can bound without data, and that reaches {reach or 'nothing (every candidate failed)'}",
            "pass --data (an image folder, a .npz or package.module:factory) so the planner can evaluate "
            "pruning, low-rank and separable rewrites and clustering"
            + (f"; or relax {' or '.join(relax)}" if relax else "") + "; or run a recipe of your own with --recipe",
        )

    # -- steps ----------------------------------------------------------------------------------------------
    def _budget_text(self) -> str:
        b = self.budgets
        return ", ".join(x for x in (
            f"size <= {b.size_mb} MB" if b.size_mb is not None else "",
            f"latency <= {b.latency_ms} ms" if b.latency_ms is not None else "",
            f"accuracy drop <= {b.accuracy_drop_pct} pt" if b.accuracy_drop_pct is not None else "") if x)

    def _measure_overhead(self) -> int:
        """Bytes the primary format adds beyond the fp32 weights, from a real export of the source model.

        The export is the slowest part of a search whose candidates are all cached (the converter's import
        alone takes seconds), so with a cache folder the byte count is kept there, keyed by the model's
        weights and structure, the format and the converters' versions.
        """
        memo = self._overhead_memo()
        if memo is not None and memo.is_file():
            try:
                return int(json.loads(memo.read_text())["overhead_bytes"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: measure again and rewrite it
        overhead = self._export_overhead()
        if memo is not None:
            with contextlib.suppress(OSError):
                memo.parent.mkdir(parents=True, exist_ok=True)
                tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
                tmp.write_text(json.dumps({"overhead_bytes": overhead}))
                os.replace(tmp, memo)
        return overhead

    def _overhead_memo(self) -> Path | None:
        """Where the source model's format overhead is kept (None without a cache folder)."""
        if self.cache_dir is None:
            return None
        from edgecomp.artifact_cache import artifact_key, package_versions

        key = artifact_key(self.model, self.primary_format, {"spec": self.ctx.spec.model_dump(),
                                                             "versions": package_versions(), "what": "overhead"})
        return self.cache_dir / f"overhead-{key[:32]}.json"

    def _export_overhead(self) -> int:
        import tempfile

        from edgecomp.bundle import size_of
        from edgecomp.export.base import get_format

        fmt = get_format(self.primary_format)
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            path = Path(tmp) / fmt.filename
            try:
                fmt.export(self.model, self.ctx.spec, ExportOptions(), path)
            except EdgecompError:
                return 0
            return max(0, size_of(path) - 4 * count_params(self.model))

    def _screen(self, i: int) -> None:
        c, steps = self.candidates[i], self._steps[i]
        start = time.monotonic()
        structural = [s for s in steps if is_structural(s)]
        try:
            model = copy.deepcopy(self.model)
            if structural:
                torch.manual_seed(self.ctx.seed)
                screen_ctx = replace(self.ctx, finetune_policy=FinetunePolicy(skip=True))
                model, _, _ = apply_recipe(model, structural, screen_ctx)
            c.params = count_params(model)
            c.macs = count_macs(model, self.ctx.spec.input_shape)
            layers = layers_from_torch(model, self.ctx.spec.input_shape, c.dtype)
            c.predicted_ms = predict_from_layers(layers, self.ctx.profile, self.ctx.target.threads, c.dtype).ms
            c.predicted_bytes = int(self._overhead_bytes + c.params * bytes_per_param(steps, self.primary_format))
        except EdgecompError as exc:
            c.status, c.reason = "failed", exc.message
            return
        except Exception as exc:  # a library failing on one candidate's structure must not sink the search
            logger.warning("[plan] %s could not be screened (%s: %s); it is left out", c.label,
                           type(exc).__name__, exc)
            logger.debug("screening %s failed", c.label, exc_info=True)
            c.status, c.reason = "failed", f"screening raised {type(exc).__name__}: {exc}"
            return
        finally:
            c.seconds += time.monotonic() - start
        misses = self.budgets.missed(c.predicted_bytes, c.predicted_ms)
        c.status, c.reason = ("rejected", "; ".join(misses)) if misses else ("feasible", "")

    def _cache_key(self, steps: list[RecipeStep]) -> str:
        digest = hashlib.sha256()
        buf = io.BytesIO()
        torch.save({k: v.contiguous() for k, v in self.model.state_dict().items()}, buf)
        digest.update(buf.getvalue())
        data = self.ctx.data
        if data is not None:
            digest.update(data.fingerprint().encode())  # every split, in full
            digest.update((data.metric.name if data.metric else "top1").encode())
        digest.update(json.dumps([s.describe() for s in steps] + [self.ctx.seed, self.max_finetune_epochs,
                                                                  __version__]).encode())
        return digest.hexdigest()[:24]

    def _evaluate(self, i: int) -> None:
        c, steps = self.candidates[i], self._steps[i]
        data = self.ctx.data
        key = self._cache_key(steps)
        cache_file = self.cache_dir / f"{key}.json" if self.cache_dir else None
        if cache_file is not None and cache_file.is_file():
            cached = json.loads(cache_file.read_text())
            c.val_accuracy, c.accuracy, c.cached = cached["val_accuracy"], cached["accuracy"], True
        else:
            start = time.monotonic()
            try:
                evaluated = self._run(steps, self._deadline)
            except EdgecompError as exc:
                c.status, c.reason = "failed", exc.message
                return
            c.seconds += time.monotonic() - start
            # a fine-tune running at the deadline stopped there: the result depends on timing, so it is not cached
            c.cut_short = self._deadline is not None and time.monotonic() > self._deadline
            self._models[i] = evaluated
            if data is not None:
                c.val_accuracy = evaluate(evaluated.model, data, "val")
                c.accuracy = evaluate(evaluated.model, data, "test")
            if cache_file is not None and not c.cut_short:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                cache_file.write_text(json.dumps({"recipe": c.recipe, "val_accuracy": c.val_accuracy,
                                                  "accuracy": c.accuracy}))
        if c.accuracy is None or self._source_test is None:
            c.reason = "no evaluation data: accuracy not measured"
            return
        c.accuracy_drop = self._source_test - c.accuracy
        val_drop = (self._source_val or 0.0) - (c.val_accuracy or 0.0)
        misses = self.budgets.missed(accuracy_drop=val_drop, accuracy_what="validation accuracy drop")
        if misses:
            c.status, c.reason = "rejected", misses[0]
        logger.info("  %s: val %.2f%%, test %.2f%% (%s)%s", c.label, c.val_accuracy, c.accuracy,
                    c.status, " [cached]" if c.cached else "")

    def _run(self, steps: list[RecipeStep], deadline: float | None = None) -> _Evaluated:
        torch.manual_seed(self.ctx.seed)
        policy = FinetunePolicy(max_epochs=self.max_finetune_epochs, deadline=deadline)
        ctx = replace(self.ctx, finetune_policy=policy)
        model, stages, export = apply_recipe(copy.deepcopy(self.model), steps, ctx)
        return _Evaluated(model, stages, export)

    def _materialize(self, i: int) -> _Evaluated:
        if i not in self._models:  # from the cache (a full run: no deadline) or, without data, not yet run
            self._models[i] = self._run(self._steps[i])
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
