"""The planner's decision, kept for an identical rebuild: the candidate table and the chosen recipe.

A search repeats work whose outcome is fixed by its inputs: evaluating the source model, screening every
candidate, reading the evaluation cache. ``plan_key`` names those inputs (the model's weights and structure,
the data's full content and metric, the target, hardware profile, budgets and primary format, the search
options, the seed and the package versions); a build whose key was planned before re-applies the chosen recipe
with the same seed and fine-tune policy the planner used, and reports the stored candidate table with a note
saying when it was planned. Any change of an input is a miss, and a search that the time limit cut short is
never kept (its outcome depends on timing). Entries are small JSON files written atomically.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecomp.artifact_cache import model_digest, package_versions
from edgecomp.bundle import now_iso
from edgecomp.compress.base import BuildContext
from edgecomp.compress.pipeline import apply_recipe
from edgecomp.compress.recipe import parse_recipe
from edgecomp.finetune import FinetunePolicy
from edgecomp.fsutil import write_text_atomic
from edgecomp.targets import Budgets

logger = logging.getLogger(__name__)
MEMO_VERSION = 2  # bump when the key, the stored layout or the planner's choices change (2: no-op stages rejected)
REUSED_NOTE = ("Plan reused from the build of {date}: the model, data, target, budgets and search options are "
               "identical, so the search was not repeated (the table is that search's; --fresh-search repeats it).")


def plan_key(model, ctx: BuildContext, budgets: Budgets, primary_format: str, search_time_s: float,
             max_finetune_epochs: int | None, search_options: dict[str, Any] | None = None) -> str:
    """SHA-256 of everything a search's outcome depends on (see the module docstring)."""
    data = ctx.data
    payload = {
        "memo_version": MEMO_VERSION, "model": model_digest(model), "spec": ctx.spec.model_dump(mode="json"),
        "data": None if data is None else data.fingerprint(),
        "metric": None if data is None else (data.metric.name if data.metric else "top1"),
        "target": ctx.target.model_dump(mode="json"), "profile": ctx.profile.model_dump(mode="json"),
        "budgets": budgets.model_dump(mode="json"), "format": primary_format, "threads": ctx.threads,
        "search_time_s": search_time_s, "max_finetune_epochs": max_finetune_epochs, "seed": ctx.seed,
        "versions": package_versions(),
        "search_options": search_options or {},  # halving on/off and threads per evaluation change the numbers
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StoredPlan:
    """A kept decision: the chosen recipe, the planner's record as the report showed it, and when."""

    recipe: list[str]
    planner: dict[str, Any]
    planned_at: str

    def report_record(self) -> dict[str, Any]:
        """The report's ``planner`` entry for a build that reused this plan (the table, plus a note saying so)."""
        record = copy.deepcopy(self.planner)
        record["notes"] = [REUSED_NOTE.format(date=self.planned_at), *record.get("notes", [])]
        record["reused_from"] = self.planned_at
        return record

    def reapply(self, model, ctx: BuildContext, max_finetune_epochs: int | None):
        """The chosen recipe applied to a copy of ``model`` as the planner applies it: (model, stages, export).

        Same seed, same fine-tune policy (no deadline: a kept search was never cut short), so the result is
        the model the planner chose.
        """
        if not self.recipe:
            return model, [], ctx.export
        steps = [step for text in self.recipe for step in parse_recipe(text)]  # each is one step's describe()
        import torch

        torch.manual_seed(ctx.seed)
        policy = FinetunePolicy(max_epochs=max_finetune_epochs)
        return apply_recipe(copy.deepcopy(model), steps, replace(ctx, finetune_policy=policy))


class PlanMemo:
    """Kept plans in ``folder`` as ``memo-<key>.json``."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = Path(folder) / f"memo-{key}.json"

    def load(self) -> StoredPlan | None:
        """The plan kept under this key, or None (missing, unreadable or of another layout: a miss)."""
        try:
            entry = json.loads(self.path.read_text())
            if entry.get("memo_version") != MEMO_VERSION:
                return None
            return StoredPlan(recipe=list(entry["recipe"]), planner=dict(entry["planner"]),
                              planned_at=str(entry["planned_at"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not isinstance(exc, FileNotFoundError):
                logger.debug("plan memo %s unusable (%s)", self.path.name, exc)
            return None

    def store(self, recipe: list[str], planner: dict[str, Any]) -> bool:
        """Keep a finished search's decision; False (and nothing kept) when the time limit shaped it."""
        candidates = [c.model_dump(mode="json") if hasattr(c, "model_dump") else dict(c)
                      for c in planner.get("candidates", [])]
        if any(c.get("cut_short") or c.get("status") == "not-evaluated" and "search time" in c.get("reason", "")
               for c in candidates):
            logger.debug("plan not kept: the search time limit cut it short")
            return False
        record = {**planner, "candidates": candidates}
        record.pop("reused_from", None)
        entry = {"memo_version": MEMO_VERSION, "planned_at": now_iso(), "recipe": recipe, "planner": record}
        try:
            write_text_atomic(self.path, json.dumps(entry, indent=1, default=str))
        except OSError as exc:
            logger.warning("  plan not kept: %s is not writable (%s)", self.path.parent, exc.strerror)
            return False
        return True
