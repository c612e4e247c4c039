"""Numerical parity of an exported artifact against PyTorch, on real evaluation inputs.

fp32 artifacts must match elementwise within ``atol + rtol * |reference|`` (1e-4, 1e-3), like
``numpy.allclose``; quantized artifacts are judged by top-1 agreement and cosine similarity against
their own fake-quant reference (two all-zero output rows count as identical, cosine 1). Outputs holding
NaN or Inf always fail, with a note. The result always says what was compared, never a made-up pass.
"""

from __future__ import annotations

import numpy as np

from edgecomp.records import Parity

FP32_ATOL = 1e-4
FP32_RTOL = 1e-3
QUANT_MIN_TOP1 = 99.0
QUANT_MIN_COSINE = 0.99


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample (row, in float64); two all-zero rows count as identical (1.0).

    One all-zero row against a non-zero one scores 0; a row holding NaN or Inf scores NaN, so callers must
    check finiteness first. Shared by this check and :mod:`edgecomp.verify.compare`.
    """
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))


def _non_finite(name: str, values: np.ndarray) -> str:
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    return f"{name} hold {bad} NaN/Inf value(s) of {values.size}" if bad else ""


def compare(reference: np.ndarray, outputs: np.ndarray, quantized: bool = False) -> Parity:
    """Compare outputs with the reference: allclose for float artifacts, top-1 and cosine for quantized.

    Outputs or a reference holding NaN/Inf, and empty outputs, fail with a note saying so.
    """
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    if quantized:
        criterion = f"top1 >= {QUANT_MIN_TOP1}% and cosine >= {QUANT_MIN_COSINE}"
    else:
        criterion = f"allclose(atol={FP32_ATOL}, rtol={FP32_RTOL})"
    if ref.shape != out.shape:
        return Parity(status="failed", samples=len(ref), criterion=criterion,
                      note=f"shape {out.shape} != reference {ref.shape}")
    if ref.size == 0:
        return Parity(status="failed", samples=len(ref), criterion=criterion, note="no outputs to compare")
    bad = "; ".join(n for n in (_non_finite("the artifact's outputs", out),
                                _non_finite("the PyTorch reference outputs", ref)) if n)
    if bad:
        return Parity(status="failed", samples=len(ref), criterion=criterion, note=bad)
    err = np.abs(out - ref)
    max_abs = float(err.max())
    scale = float(np.abs(ref).max()) or 1.0
    top1 = float((out.argmax(1) == ref.argmax(1)).mean() * 100.0)
    cosine = float(cosine_rows(out, ref).min())
    if quantized:
        ok = top1 >= QUANT_MIN_TOP1 and cosine >= QUANT_MIN_COSINE
    else:
        ok = bool(np.all(err <= FP32_ATOL + FP32_RTOL * np.abs(ref)))
    return Parity(
        status="passed" if ok else "failed", max_abs_err=max_abs, max_rel_err=max_abs / scale,
        top1_agreement=top1, cosine=cosine, samples=len(ref), criterion=criterion,
    )


def not_run(note: str) -> Parity:
    """A parity record for an artifact that cannot run here (e.g. CoreML on Linux)."""
    return Parity(status="not-run", note=note)
