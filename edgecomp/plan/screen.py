"""Screening: a candidate's size and latency predicted from its structural stages alone, without fine-tuning.

The structural stages run with fine-tunes skipped (``FinetunePolicy(skip=True)``) and the search's deadline
passed in, so a stage's own search (EPruning's differential evolution) stops at ``--search-time`` too; a
candidate whose screen ran into the deadline is left ``not-evaluated`` (its structure is not the one a full
run would give).

Screens run as tasks on the search's executor (``tasks.ScreenJob``), one task per *family*: the candidates
whose first structural stage is the same, so a shared prefix (``separable`` in ``separable``,
``separable -> quantize.int8`` and ``separable -> prune.filter``) is applied once, in one process.

A structural stage that leaves the model exactly as it was (``separable`` on a network of depthwise and
pointwise convs, ``prune.filter`` whose channel groups are all left whole) makes its candidate the same
network as the recipe without it under another name: such a candidate is rejected here, with the reason, and
never fine-tuned.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from edgecomp.artifact_cache import model_digest
from edgecomp.compress.base import BuildContext, ExportOptions
from edgecomp.compress.pipeline import apply_recipe
from edgecomp.compress.recipe import RecipeStep
from edgecomp.errors import EdgecompError
from edgecomp.export.common import ExportedArtifact
from edgecomp.finetune import FinetunePolicy
from edgecomp.fsutil import write_text_atomic
from edgecomp.model import count_macs, count_params
from edgecomp.plan.candidate import Candidate
from edgecomp.plan.candidates import bytes_per_param, is_structural
from edgecomp.profile.predict import layers_from_torch, predict_from_layers
from edgecomp.quiet import off_console
from edgecomp.targets import Budgets

logger = logging.getLogger(__name__)


StructureMemo = dict[tuple[str, ...], "nn.Module | str"]
"""Models after a prefix of structural stages, keyed by the stages' descriptions (one family's screens); a
string in place of a model says the prefix's last stage changed nothing, and why the candidate is rejected."""


class _ChangesNothing(Exception):
    """A structural stage returned the model it was given, unchanged."""


def screen(c: Candidate, steps: list[RecipeStep], model: nn.Module, ctx: BuildContext, budgets: Budgets,
           primary_format: str, overhead_bytes: int, deadline: float | None = None,
           memo: StructureMemo | None = None) -> None:
    """Predict ``c``'s parameters, MACs, size and latency and set its status (feasible, rejected, failed or,
    past ``deadline`` (a ``time.monotonic()`` value), not-evaluated).

    With a ``memo`` shared by candidates whose structural stages start alike (``separable`` and
    ``separable -> quantize.int8`` and ``separable -> prune.filter``), each structural prefix is applied once.
    """
    start = time.monotonic()
    structural = [s for s in steps if is_structural(s)]
    try:
        model = _structure(model, structural, ctx, deadline, {} if memo is None else memo)
        if model is None:
            c.status, c.reason = "not-evaluated", "search time used up while it was screened"
            return
        c.params = count_params(model)
        c.macs = count_macs(model, ctx.spec.input_shape)
        layers = layers_from_torch(model, ctx.spec.input_shape, c.dtype)
        c.predicted_ms = predict_from_layers(layers, ctx.profile, ctx.target.threads, c.dtype).ms
        c.predicted_bytes = int(overhead_bytes + c.params * bytes_per_param(steps, primary_format))
    except _ChangesNothing as exc:
        c.status, c.reason = "rejected", str(exc)
        return
    except EdgecompError as exc:
        c.status, c.reason = "failed", exc.message
        return
    except Exception as exc:  # a library failing on one candidate's structure must not sink the search
        logger.debug("screening %s failed", c.label, exc_info=True)
        c.status, c.reason = "failed", f"screening raised {type(exc).__name__}: {exc}"
        return
    finally:
        c.seconds += time.monotonic() - start
    misses = budgets.missed(c.predicted_bytes, c.predicted_ms)
    c.status, c.reason = ("rejected", "; ".join(misses)) if misses else ("feasible", "")


def _structure(model: nn.Module, structural: list[RecipeStep], ctx: BuildContext, deadline: float | None,
               memo: StructureMemo) -> nn.Module | None:
    """``model`` after the ``structural`` stages, fine-tunes skipped, reusing the longest prefix in ``memo``
    (None: the deadline passed). Each stage starts from the same seed, so a prefix gives the same model
    whichever candidate applied it first."""
    keys = [tuple(s.describe() for s in structural[:k]) for k in range(len(structural) + 1)]
    done = max(k for k in range(len(keys)) if k == 0 or keys[k] in memo)
    current = memo[keys[done]] if done else model
    if isinstance(current, str):
        raise _ChangesNothing(current)
    screen_ctx = replace(ctx, finetune_policy=FinetunePolicy(skip=True, deadline=deadline))
    for k in range(done, len(structural)):
        torch.manual_seed(ctx.seed)
        with off_console("edgecomp.compress"):  # per-layer lines of every screen would drown the search's own
            after, _, _ = apply_recipe(copy.deepcopy(current), [structural[k]], screen_ctx, measure=False)
        if deadline is not None and time.monotonic() > deadline:
            return None
        if model_digest(after) == model_digest(current):  # same structure and every state entry
            where = f" after {' -> '.join(keys[k])}" if k else ""
            memo[keys[k + 1]] = (f"{structural[k].describe()} changes nothing on this model{where}, so this is the "
                                 f"recipe without it under another name")
            raise _ChangesNothing(memo[keys[k + 1]])
        memo[keys[k + 1]] = current = after
    return current


def family(steps: list[RecipeStep]) -> str:
    """The first structural stage of a recipe ("" for none): candidates of one family share a screen task."""
    first = next((s for s in steps if is_structural(s)), None)
    return first.describe() if first is not None else ""


@dataclass
class SourceExport:
    """The source model's export in the primary format, made to measure the format's overhead; a build whose
    untouched model wins copies it instead of exporting the same model again."""

    artifact: ExportedArtifact
    options: ExportOptions
    seconds: float


def measure_overhead(model: nn.Module, ctx: BuildContext, primary_format: str, cache_dir: Path | None,
                     keep_in: Path | None = None) -> tuple[int, SourceExport | None]:
    """Bytes the primary format adds beyond the fp32 weights, from a real export of the source model.

    The export is the slowest part of a search whose candidates are all cached (the converter's import
    alone takes seconds), so with a cache folder the byte count is kept there, keyed by the model's
    weights and structure, the format and the converters' versions. With ``keep_in`` (a folder), the
    export is left there and returned, for the build to reuse if the untouched model wins.
    """
    memo = _overhead_memo(model, ctx, primary_format, cache_dir)
    if memo is not None and memo.is_file():
        try:
            return int(json.loads(memo.read_text())["overhead_bytes"]), None
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: measure again and rewrite it
    overhead, kept = _export_overhead(model, ctx, primary_format, keep_in)
    if memo is not None:
        with contextlib.suppress(OSError):
            write_text_atomic(memo, json.dumps({"overhead_bytes": overhead}))
    return overhead, kept


def _overhead_memo(model: nn.Module, ctx: BuildContext, primary_format: str, cache_dir: Path | None) -> Path | None:
    """Where the source model's format overhead is kept (None without a cache folder)."""
    if cache_dir is None:
        return None
    from edgecomp.artifact_cache import artifact_key, package_versions

    key = artifact_key(model, primary_format, {"spec": ctx.spec.model_dump(),
                                               "versions": package_versions(), "what": "overhead"})
    return cache_dir / f"overhead-{key[:32]}.json"


def _export_overhead(model: nn.Module, ctx: BuildContext, primary_format: str,
                     keep_in: Path | None) -> tuple[int, SourceExport | None]:
    import tempfile

    from edgecomp.bundle import size_of
    from edgecomp.export.base import get_format

    fmt, options = get_format(primary_format), ExportOptions()
    with contextlib.ExitStack() as stack:
        folder = keep_in if keep_in is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        start = time.monotonic()
        try:
            artifact = fmt.export(model, ctx.spec, options, folder / fmt.filename)
        except EdgecompError:
            return 0, None
        overhead = max(0, size_of(artifact.path) - 4 * count_params(model))
        kept = SourceExport(artifact, options, time.monotonic() - start) if keep_in is not None else None
        return overhead, kept
