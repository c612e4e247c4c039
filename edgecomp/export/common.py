"""What every exporter returns, and how an exporter failure is turned into a clear error."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edgecomp.bundle import TensorInfo
from edgecomp.errors import ExportError


@dataclass
class ExportedArtifact:
    """A model file written by an exporter, with its I/O tensors as the runtime sees them."""

    format: str
    path: Path
    dtype: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    runnable: bool = True
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


def unsupported_op_error(fmt: str, exc: BaseException) -> ExportError:
    """An ExportError naming the op the converter choked on (when its message names one) and the format."""
    text = str(exc)
    match = re.search(r"(aten|prims|torch\.ops\.aten)[.:]+([A-Za-z0-9_]+)", text)
    op = match.group(2) if match else None
    first_line = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    what = f"op '{op}' cannot be exported to {fmt}" if op else f"{fmt} export failed: {first_line}"
    return ExportError(
        what,
        "replace that op in the model, or build the other formats with --skip-failed-formats"
        + ("" if op else f" (converter said: {first_line})"),
    )


def layout_of(shape: list[int]) -> str:
    """Best guess of a tensor's layout from its rank (exporters keep PyTorch's NCHW)."""
    return {4: "NCHW", 2: "NC"}.get(len(shape), "other")
