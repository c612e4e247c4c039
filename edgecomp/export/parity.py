"""Numerical parity of an exported artifact against PyTorch, on real evaluation inputs.

fp32 artifacts must match elementwise within ``atol + rtol * |reference|`` (1e-4, 1e-3), like
``numpy.allclose``; quantized artifacts are judged by top-1 agreement and cosine similarity against
their own fake-quant reference. The result always says what was compared, never a made-up pass.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

FP32_ATOL = 1e-4
FP32_RTOL = 1e-3
QUANT_MIN_TOP1 = 99.0
QUANT_MIN_COSINE = 0.99


class Parity(BaseModel):
    """Result of comparing an artifact's outputs with PyTorch's on the same inputs."""

    status: Literal["passed", "failed", "not-run"] = Field(description="Outcome of the check.")
    max_abs_err: float | None = Field(None, description="Largest elementwise |artifact - torch|.")
    max_rel_err: float | None = Field(None, description="max_abs_err divided by max |torch output|.")
    top1_agreement: float | None = Field(None, description="Percent of inputs whose argmax agrees.")
    cosine: float | None = Field(None, description="Smallest per-sample cosine similarity of outputs.")
    samples: int = Field(0, description="Number of inputs compared.")
    criterion: str = Field("", description="The rule applied, e.g. 'allclose(atol=1e-4, rtol=1e-3)'.")
    note: str = Field("", description="Why the check was not run, or what failed.")


def compare(reference: np.ndarray, outputs: np.ndarray, quantized: bool = False) -> Parity:
    """Compare outputs with the reference: allclose for float artifacts, top-1 and cosine for quantized."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    if ref.shape != out.shape:
        return Parity(status="failed", samples=len(ref), note=f"shape {out.shape} != reference {ref.shape}")
    err = np.abs(out - ref)
    max_abs = float(err.max())
    scale = float(np.abs(ref).max()) or 1.0
    top1 = float((out.argmax(1) == ref.argmax(1)).mean() * 100.0)
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    cosine = float(np.min(np.sum(out * ref, axis=1) / np.maximum(norms, 1e-12)))
    if quantized:
        ok = top1 >= QUANT_MIN_TOP1 and cosine >= QUANT_MIN_COSINE
        criterion = f"top1 >= {QUANT_MIN_TOP1}% and cosine >= {QUANT_MIN_COSINE}"
    else:
        ok = bool(np.all(err <= FP32_ATOL + FP32_RTOL * np.abs(ref)))
        criterion = f"allclose(atol={FP32_ATOL}, rtol={FP32_RTOL})"
    return Parity(
        status="passed" if ok else "failed", max_abs_err=max_abs, max_rel_err=max_abs / scale,
        top1_agreement=top1, cosine=cosine, samples=len(ref), criterion=criterion,
    )


def not_run(note: str) -> Parity:
    """A parity record for an artifact that cannot run here (e.g. CoreML on Linux)."""
    return Parity(status="not-run", note=note)
