"""Running a recipe: each stage in order, measured after it (params, MACs, accuracy, seconds)."""

from __future__ import annotations

import dataclasses
import logging
import time

from torch import nn

from edgecomp.compress.base import BuildContext, ExportOptions, get_stage
from edgecomp.compress.recipe import RecipeStep
from edgecomp.dtypes import bytes_per_weight
from edgecomp.errors import ConfigError
from edgecomp.metrics import evaluate
from edgecomp.model import count_macs, count_params
from edgecomp.records import ACCURACY_NOT_MEASURED, StageRecord

logger = logging.getLogger(__name__)


def apply_recipe(model: nn.Module, steps: list[RecipeStep], ctx: BuildContext, measure: bool = True,
                 ) -> tuple[nn.Module, list[StageRecord], ExportOptions]:
    """Run each stage in order; return (final model, stage records, final export options).

    ``ctx`` is not changed: stages see a copy whose export options follow the stages run so far. With
    ``measure=False`` (the planner's screening) the records carry no accuracy or MACs: nothing is evaluated.
    """
    ctx = dataclasses.replace(ctx)
    records = []
    for i, step in enumerate(steps, 1):
        stage = get_stage(step.name)()
        if not stage.supports(ctx.target):
            raise ConfigError(f"{step.name} cannot run on target '{ctx.target.name}'",
                              f"{ctx.target.name} allows: {', '.join(ctx.target.methods) or 'no methods'}")
        logger.info("[compress %d/%d] %s", i, len(steps), step.describe())
        start = time.monotonic()
        result = stage.apply(model, step.config, ctx)
        seconds = time.monotonic() - start
        model = result.model.eval()
        if result.export is not None:
            ctx.export = result.export
        acc = evaluate(model, ctx.data, "test") if ctx.data is not None and measure else None
        params = count_params(model)
        record = StageRecord(
            name=step.name, config=step.config.model_dump(mode="json"), seconds=seconds,
            params=params, macs=count_macs(model, ctx.spec.input_shape) if measure else 0, accuracy=acc,
            accuracy_note=ACCURACY_NOT_MEASURED if ctx.data is None else None,
            weight_bytes=round(params * bytes_per_weight(ctx.export.dtype)),
            metrics=result.metrics, notes=result.notes,
        )
        logger.info("  %s: %d params, %d MACs, accuracy %s, %.1f s", step.name, record.params, record.macs,
                    "not measured" if acc is None else f"{acc:.2f}%", seconds)
        records.append(record)
    return model, records, ctx.export
