"""Bytes per stored element of each export dtype: the one table the pipeline, planner and predictor use.

Binary weights export as dense fp32 values (the bundle's model.ecz packs them to bits; see
``compress/binarize.py``), so ``binary`` counts 4 bytes like ``fp32``.
"""

from __future__ import annotations

BYTES_PER_WEIGHT: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "binary": 4.0}


def bytes_per_weight(dtype: str) -> float:
    """Stored bytes of one element of ``dtype`` (4, as fp32, for a dtype the table does not know)."""
    return BYTES_PER_WEIGHT.get(dtype, 4.0)
