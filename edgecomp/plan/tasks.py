"""A candidate evaluation as a task: what goes to an executor, what comes back, and the function that runs it.

An ``EvalTask`` is small (the recipe, the seed, the fine-tune budget, the deadline); the model and the build
context travel once per search as a *payload*: ``pack_payload`` pickles ``(model, ctx)`` with cloudpickle,
so every executor gets the same bytes (Ray puts them in its object store once; local worker processes get
them at start). Models and dataset factories defined in a user's file (``file.py:factory``, imported as an
``edgecomp_user_*`` module that no worker could import by name) are pickled *by value*, so workers need no
copy of those files; ``package.module:factory`` code must be importable on the workers (it is locally).
Image folders travel as their file lists and are read by the workers from the same paths; in-memory arrays
travel inside the payload.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from edgecomp.compress.base import BuildContext, ExportOptions
from edgecomp.compress.pipeline import apply_recipe
from edgecomp.compress.recipe import RecipeStep
from edgecomp.errors import EdgecompError
from edgecomp.finetune import FinetunePolicy
from edgecomp.metrics import evaluate
from edgecomp.plan.candidate import Candidate
from edgecomp.records import StageRecord
from edgecomp.targets import Budgets

logger = logging.getLogger(__name__)
USER_MODULE_PREFIX = "edgecomp_user_"  # how edgecomp.user_code names modules imported from a user's file


@dataclass(frozen=True)
class ScreenJob:
    """What a screening task needs besides the payload: the family's candidates and how to judge them."""

    members: tuple[tuple[int, tuple[RecipeStep, ...]], ...]
    """(candidate index, recipe) of every candidate in the family."""
    budgets: Budgets
    primary_format: str
    overhead_bytes: int


@dataclass(frozen=True)
class EvalTask:
    """One evaluation: candidate ``index``'s recipe at ``rung`` with fine-tunes capped at ``max_epochs``."""

    index: int
    steps: tuple[RecipeStep, ...]
    label: str
    rung: int = 0
    max_epochs: int | None = None
    """Cap on every fine-tune of the recipe (None: each stage's own setting)."""
    seed: int = 0
    deadline_wall: float | None = None
    """``time.time()`` at which fine-tunes stop (wall clock, so it means the same on every node)."""
    keep_model: bool = False
    """Return the compressed model with the result (final rung: the build may export it)."""
    threads: int | None = None
    """Torch threads for the evaluation (None: leave as is). Part of the result: float reductions split
    differently across threads, which can flip an int8 rounding, so equal numbers need equal threads."""
    screen: ScreenJob | None = None
    """Set for a screening task: predict the members' size and latency instead of evaluating ``steps``."""

    def expired(self) -> bool:
        """Whether the search's deadline has passed (a task is never started after it)."""
        return self.deadline_wall is not None and time.time() > self.deadline_wall


@dataclass
class Evaluated:
    """A compressed model with its stage records and export options (what the build exports)."""

    model: nn.Module
    stages: list[StageRecord]
    export: ExportOptions


@dataclass
class EvalResult:
    """What an evaluation measured; ``error`` set means it failed, ``skipped`` that it never started."""

    index: int
    rung: int
    val_accuracy: float | None = None
    accuracy: float | None = None
    epochs: int = 0
    history: list[dict] = field(default_factory=list)
    """Every fine-tune epoch's entry (epoch, val_metric, seconds, ...), all stages of the recipe together."""
    seconds: float = 0.0
    cut_short: bool = False
    error: str | None = None
    skipped: str | None = None
    evaluated: Evaluated | None = None
    """The model itself: always from the serial executor, from workers when ``keep_model`` and it pickles."""
    screened: list[tuple[int, Candidate]] = field(default_factory=list)
    """A screening task's result: (index, the candidate with its predictions and status) per member."""
    fatal: str | None = None
    """Set when the worker could not load the search's payload (what it raised): executors stop the search."""


EpochCallback = Callable[[int, dict], None]
"""``(candidate index, epoch entry)``: a fine-tune finished an epoch (entry has epoch, epochs, val_metric)."""


def monotonic_deadline(deadline_wall: float | None) -> float | None:
    """The ``time.monotonic()`` value of a wall-clock deadline on this machine."""
    return None if deadline_wall is None else time.monotonic() + (deadline_wall - time.time())


def skipped(task: EvalTask) -> EvalResult:
    """The result of a task the deadline kept from starting."""
    return EvalResult(task.index, task.rung, skipped="search time used up")


def run_task(model: nn.Module, ctx: BuildContext, task: EvalTask, on_epoch: EpochCallback | None = None,
             ) -> EvalResult:
    """Run ``task``'s recipe on a copy of ``model`` (seeded), then measure validation and test metrics.

    Every executor calls this, so a candidate gives the same numbers wherever it runs. Failures come back
    as ``EvalResult.error`` (a library failing on one candidate must not sink the search).
    """
    start = time.monotonic()
    if task.expired():
        return skipped(task)
    if task.screen is not None:
        return run_screen(model, ctx, task)
    deadline = monotonic_deadline(task.deadline_wall)
    history: list[dict] = []

    def epoch_done(entry: dict) -> None:
        history.append(entry)
        if on_epoch is not None:
            on_epoch(task.index, entry)

    torch.manual_seed(task.seed)
    policy = FinetunePolicy(max_epochs=task.max_epochs, deadline=deadline, on_epoch=epoch_done)
    with torch_threads(task.threads):
        try:
            out, stages, export = apply_recipe(copy.deepcopy(model), list(task.steps),
                                               replace(ctx, finetune_policy=policy))
            cut_short = deadline is not None and time.monotonic() > deadline
            data = ctx.data
            val = evaluate(out, data, "val") if data is not None else None
            test = evaluate(out, data, "test") if data is not None else None
        except EdgecompError as exc:
            return EvalResult(task.index, task.rung, error=exc.message, seconds=time.monotonic() - start)
        except Exception as exc:  # one candidate's library failure is that candidate's result
            logger.debug("evaluating %s failed", task.label, exc_info=True)
            return EvalResult(task.index, task.rung, error=f"evaluation raised {type(exc).__name__}: {exc}",
                              seconds=time.monotonic() - start)
        return EvalResult(task.index, task.rung, val, test, epochs=len(history), history=history,
                          seconds=time.monotonic() - start, cut_short=cut_short,
                          evaluated=Evaluated(out, stages, export))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: as they are), restoring the count afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_screen(model: nn.Module, ctx: BuildContext, task: EvalTask) -> EvalResult:
    """Screen every member of ``task.screen`` (one family, sharing its structural prefixes); members the
    deadline reaches first come back ``not-evaluated``."""
    from edgecomp.plan.candidates import dtype_of
    from edgecomp.plan.screen import screen

    job = task.screen
    assert job is not None
    start = time.monotonic()
    deadline = monotonic_deadline(task.deadline_wall)
    memo: dict = {}
    screened = []
    with torch_threads(task.threads):
        for index, steps in job.members:
            c = Candidate(recipe=[s.describe() for s in steps], dtype=dtype_of(list(steps)))
            if deadline is not None and time.monotonic() > deadline:
                c.status, c.reason = "not-evaluated", "search time used up before it was screened"
            else:
                screen(c, list(steps), model, ctx, job.budgets, job.primary_format, job.overhead_bytes,
                       deadline, memo)
            screened.append((index, c))
    return EvalResult(task.index, task.rung, seconds=time.monotonic() - start, screened=screened)


# -- payload: the model and context, once per search -----------------------------------------------------------
def pack_payload(model: nn.Module, ctx: BuildContext) -> bytes:
    """``(model, ctx)`` as bytes every worker can load (user-file modules pickled by value)."""
    import cloudpickle

    for name, module in list(sys.modules.items()):
        if name.startswith(USER_MODULE_PREFIX) and module is not None:
            cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps((model, replace(ctx, finetune_policy=FinetunePolicy())))


class PayloadError(EdgecompError):
    """A search worker could not load the model and data it was sent: every task would fail the same way."""

    def __init__(self, cause: str) -> None:
        super().__init__(
            f"the search's worker processes could not load the model and data ({cause}); every candidate "
            "would fail the same way, so the search stopped",
            "search in this process (drop --workers/--ray), or make every module the model's classes come from "
            "importable in a new Python process (installed, or on PYTHONPATH) on every node")
        self.cause = cause
        """What unpickling raised, as ``Type: message``."""


def unpack_payload(payload: bytes) -> tuple[nn.Module, BuildContext]:
    """The ``(model, ctx)`` of ``pack_payload``, for a search worker.

    A worker reads its data in its own process: the executor's workers are the parallelism, and DataLoader
    worker processes spawned inside each of them (at every pass over a split) would cost more than they save.
    Raises ``PayloadError`` naming the cause when the payload does not load there (typically a module the
    model's classes come from that imports in the planner's process but not in a new one).
    """
    import pickle

    try:
        model, ctx = pickle.loads(payload)
    except Exception as exc:  # whatever unpickling raised, this worker cannot run the search's tasks
        raise PayloadError(f"{type(exc).__name__}: {exc}") from exc
    if ctx.data is not None:
        ctx.data.workers = 0
    return model, ctx


def pack_result(result: EvalResult, keep_model: bool) -> EvalResult:
    """``result`` ready to leave a worker: the model is kept only if asked for and it pickles."""
    import cloudpickle

    if result.evaluated is not None and keep_model:
        try:
            cloudpickle.dumps(result.evaluated)
            return result
        except Exception as exc:  # noqa: BLE001 -- e.g. a quantized graph that does not pickle: rebuilt if chosen
            logger.debug("the model of candidate %d does not pickle (%s); the build reruns it if chosen",
                         result.index, exc)
    result.evaluated = None
    return result


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads per worker so that ``workers`` x threads stays within the machine's cores."""
    import os

    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, workers))
