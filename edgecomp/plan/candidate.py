"""What the planner records about each candidate recipe: predictions, measurements per rung, and its fate."""

from __future__ import annotations

from pydantic import BaseModel, Field

STATUSES = ("chosen", "feasible", "rejected", "stopped", "not-evaluated", "failed")


class RungResult(BaseModel):
    """One evaluation of a candidate at one rung of successive halving (the only rung when exhaustive)."""

    rung: int = Field(description="Rung index, 0 first; the last rung is the full fine-tune budget.")
    max_epochs: int | None = Field(None, description="Cap on each of its fine-tunes (None: each stage's own).")
    val_accuracy: float | None = Field(None, description="Validation metric after this rung's fine-tune.")
    accuracy: float | None = Field(None, description="Test metric after this rung's fine-tune.")
    epochs: int = Field(0, description="Fine-tune epochs it ran (all stages of the recipe together).")
    seconds: float = Field(0.0, description="Wall time of the evaluation (0 when cached).")
    train_seconds: float = Field(0.0, description="Of those, the time in fine-tune epochs (the rest is structural "
                                                  "stages, calibration and evaluation: the per-task fixed cost).")
    cached: bool = Field(False, description="Whether it came from the evaluation cache.")
    cut_short: bool = Field(False, description="Whether it ran into the --search-time deadline.")


class Candidate(BaseModel):
    """One recipe the planner considered, with what it predicted and measured, and its fate."""

    recipe: list[str] = Field(description="Stages in recipe syntax; empty for the untouched model.")
    dtype: str = Field("fp32", description="Weight dtype it exports with.")
    params: int | None = Field(None, description="Parameters after its structural stages.")
    macs: int | None = Field(None, description="MACs after its structural stages.")
    predicted_bytes: int | None = Field(None, description="Size predicted from parameters and dtype.")
    predicted_ms: float | None = Field(None, description="Latency predicted for the hardware profile.")
    val_accuracy: float | None = Field(None, description="Validation metric after recovery (its last rung).")
    accuracy: float | None = Field(None, description="Test metric after recovery (its last rung).")
    accuracy_drop: float | None = Field(None, description="Source test metric minus this, points.")
    real_bytes: int | None = Field(None, description="Size of the real export (chosen candidates only).")
    real_ms: float | None = Field(None, description="Latency predicted from the real export.")
    status: str = Field("pending", description="chosen, feasible, rejected, stopped (successive halving dropped "
                                               "it at a rung), not-evaluated or failed.")
    reason: str = Field("", description="Why it has that status.")
    seconds: float = Field(0.0, description="Time spent on it (screen and evaluations).")
    cached: bool = Field(False, description="Whether its last evaluation came from the cache.")
    cut_short: bool = Field(False, description="Its evaluation ran into the --search-time deadline, where every "
                                               "fine-tune stops: its accuracy may be below a full fine-tune's.")
    accuracy_note: str | None = Field(None, description="'accuracy not measured' when the build had no data.")
    pareto: bool = Field(False, description="On the size-latency-accuracy Pareto front of evaluated ones.")
    rungs: list[RungResult] = Field(default_factory=list, description="Its evaluations, one per rung reached.")
    epochs: int = Field(0, description="Fine-tune epochs spent on it over all rungs (cached ones count 0).")

    @property
    def label(self) -> str:
        """Readable recipe."""
        return " -> ".join(self.recipe) or "fp32 (untouched)"
