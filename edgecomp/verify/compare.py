"""Compare a model's outputs on another architecture with its outputs on the host.

Float artifacts must agree within ``ATOL + RTOL * max|host output|`` (so the tolerance scales with the
outputs); quantized ones (int8, fp16, binary) may round differently on ARM kernels, so they must agree on
the top-1 class for at least ``MIN_TOP1`` of the samples and have a mean cosine similarity of at least
``MIN_COSINE``.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from edgecomp.export.parity import cosine_rows

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


def compare_output(host: np.ndarray, other: np.ndarray, dtype: str, index: int = 0) -> OutputParity:
    """Compare one output (first axis = samples) of an artifact whose weights are of ``dtype``."""
    host = np.asarray(host, np.float32)
    other = np.asarray(other, np.float32)
    if host.shape != other.shape:
        raise ValueError(f"output {index}: shape {list(other.shape)} differs from the host's {list(host.shape)}")
    finite = bool(np.isfinite(other).all()) and bool(np.isfinite(host).all())
    diff = np.abs(host.astype(np.float64) - other.astype(np.float64))
    max_err = float(diff.max()) if diff.size and finite else float("inf")
    cos = cosine_rows(host, other) if len(host) else np.ones(1)
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
