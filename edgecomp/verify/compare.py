"""Compare a model's outputs on another architecture with its outputs on the host.

Float artifacts must agree within ``ATOL + RTOL * max|host output|`` (so the tolerance scales with the
outputs); quantized ones (int8, fp16, binary) may round differently on ARM kernels, so they must agree on
the top-1 class for at least ``MIN_TOP1`` of the samples and have a mean cosine similarity of at least
``MIN_COSINE``.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

ATOL = 1e-4
RTOL = 1e-3
MIN_TOP1 = 0.99
MIN_COSINE = 0.99
FLOAT_DTYPES = ("fp32",)


class OutputParity(BaseModel):
    """How one output tensor of one artifact differs between the host and the other architecture."""

    output: int = Field(description="Index of the output tensor.")
    samples: int = Field(description="Number of input samples compared.")
    max_abs_err: float = Field(description="Largest absolute difference over all elements.")
    tolerance: float | None = Field(description="Allowed max_abs_err (ATOL + RTOL * max|host|); None for quantized.")
    cosine_mean: float = Field(description="Mean over samples of the cosine similarity of the output rows.")
    cosine_min: float = Field(description="Smallest per-sample cosine similarity.")
    top1_agreement: float | None = Field(description="Share of samples with the same arg-max; None if not 2-D.")
    bit_exact: bool = Field(description="True when the outputs are identical.")
    passed: bool = Field(description="True when this output meets the rule for the artifact's dtype.")


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample (row); two all-zero rows count as identical."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))
    return cos


def compare_output(host: np.ndarray, other: np.ndarray, dtype: str, index: int = 0) -> OutputParity:
    """Compare one output (first axis = samples) of an artifact whose weights are of ``dtype``."""
    host = np.asarray(host, np.float32)
    other = np.asarray(other, np.float32)
    if host.shape != other.shape:
        raise ValueError(f"output {index}: shape {list(other.shape)} differs from the host's {list(host.shape)}")
    finite = bool(np.isfinite(other).all()) and bool(np.isfinite(host).all())
    diff = np.abs(host.astype(np.float64) - other.astype(np.float64))
    max_err = float(diff.max()) if diff.size and finite else float("inf")
    cos = _cosine_rows(host, other) if len(host) else np.ones(1)
    top1 = None
    if host.ndim == 2 and host.shape[1] > 1:
        top1 = float((host.argmax(axis=1) == other.argmax(axis=1)).mean())
    if dtype in FLOAT_DTYPES:
        tol = ATOL + RTOL * float(np.abs(host).max(initial=0.0))
        passed = finite and max_err <= tol
    else:
        tol = None
        passed = finite and float(cos.mean()) >= MIN_COSINE and (top1 is None or top1 >= MIN_TOP1)
    return OutputParity(output=index, samples=len(host), max_abs_err=max_err, tolerance=tol,
                        cosine_mean=float(np.nan_to_num(cos.mean(), nan=-1.0)),
                        cosine_min=float(np.nan_to_num(cos.min(), nan=-1.0)),
                        top1_agreement=top1, bit_exact=bool(finite and np.array_equal(host, other)),
                        passed=passed)
