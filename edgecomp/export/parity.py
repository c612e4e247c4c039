"""Numerical parity: the one module holding both of edgecomp's output-comparison rules.

There are two rules because they answer two questions, and their thresholds differ on purpose:

* :func:`compare_to_reference` (build, ``export/ecz``): does an exported artifact compute what the PyTorch
  model computes, on real evaluation inputs? fp32 artifacts must match elementwise within
  ``ATOL + RTOL * |reference|`` like ``numpy.allclose``; quantized artifacts are judged against their own
  fake-quant reference by top-1 agreement (percent) and the *smallest* per-sample cosine similarity.
  An int8 artifact whose float model is known (``float_reference``) is judged instead by
  :func:`edgecomp.export.parity_int8.int8_parity`: its distance to the float model relative to the
  reference's own, with an absolute guard on the reference. A model with several outputs has each output judged on its own: class logits by that rule, other values
  (box coordinates, embeddings) by allclose in fp32 and, quantized, by the smallest cosine and a largest
  error of ``MAX_QUANT_VALUE_ERR`` times that output's largest magnitude (its own scale: boxes in [0, 1] and
  logits in the tens are not held to one absolute number).
* :func:`compare_across_machines` (``verify``): does the same artifact give the same outputs on another
  architecture as on the host? Float artifacts must agree within ``ATOL + RTOL * max|host output|`` (the
  tolerance scales with the outputs); quantized ones (int8, fp16, binary) may round differently on ARM
  kernels, so they need top-1 agreement (a fraction) and a *mean* cosine similarity.

Both share the constants below, the per-row cosine and the NaN/Inf handling: outputs holding NaN or Inf
always fail. Two all-zero output rows count as identical (cosine 1). A result always says what was
compared, never a made-up pass.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from edgecomp.export.parity_int8 import int8_parity
from edgecomp.records import OutputCheck, Parity

ATOL = 1e-4
RTOL = 1e-3
MIN_TOP1_PERCENT = 99.0
MIN_COSINE = 0.99
FLOAT_DTYPES = ("fp32",)
MAX_QUANT_VALUE_ERR = 0.05
"""Quantized 'values' outputs: largest |artifact - reference| allowed, as a fraction of max |reference| of that
output (int8 rounds each output to 1/255 of its range; a few such steps pass, a wrong head does not)."""


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample (row, in float64); two all-zero rows count as identical (1.0).

    One all-zero row against a non-zero one scores 0; a row holding NaN or Inf scores NaN, so callers must
    check finiteness first.
    """
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share (0..1) of samples whose arg-max over the last axis of 2-D outputs ``a`` and ``b`` is the same."""
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def _non_finite(name: str, values: np.ndarray) -> str:
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    return f"{name} hold {bad} NaN/Inf value(s) of {values.size}" if bad else ""


# -- build: an artifact against its PyTorch reference ---------------------------------------------------------
def compare_to_reference(reference: np.ndarray | list[np.ndarray], outputs: np.ndarray | list[np.ndarray],
                         quantized: bool = False, names: list[str] | None = None,
                         kinds: list[str] | None = None,
                         float_reference: np.ndarray | list[np.ndarray] | None = None) -> Parity:
    """Compare an artifact's outputs with the PyTorch reference (one array, or a list with one per output).

    One output: allclose for float artifacts, top-1 and minimum cosine for quantized. Several: each output under
    its own rule (see the module docstring; ``kinds[j]`` 'logits' or 'values', by default the first output is
    logits), recorded in ``Parity.outputs``; the worst output decides the status. Outputs or a reference holding
    NaN/Inf, empty outputs, and a different number of outputs fail with a note saying so. With
    ``float_reference`` (the float model's outputs; for int8 artifacts), quantized logits are judged by the int8
    rule (:func:`edgecomp.export.parity_int8.int8_parity`) instead of agreement with the reference.
    """
    refs = reference if isinstance(reference, (list, tuple)) else [reference]
    outs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    floats = (float_reference if isinstance(float_reference, (list, tuple)) else [float_reference]) \
        if float_reference is not None and quantized else [None] * len(refs)
    if len(refs) == 1 and len(outs) == 1:
        if floats[0] is not None:
            return int8_parity(floats[0], refs[0], outs[0])
        return _compare_one(refs[0], outs[0], quantized)
    names = names or [f"output_{j}" for j in range(len(refs))]
    kinds = kinds or ["logits" if j == 0 else "values" for j in range(len(refs))]
    if len(outs) != len(refs):
        return Parity(status="failed", samples=len(refs[0]), criterion="one result per output",
                      note=f"the artifact has {len(outs)} output(s), the PyTorch model {len(refs)} ({', '.join(names)})")
    checks = [_check_output(name, kind, ref, out, quantized, flt)
              for name, kind, ref, out, flt in zip(names, kinds, refs, outs, floats, strict=True)]
    failed = [c.name for c in checks if c.status == "failed"]

    def worst(values: list[float | None], pick) -> float | None:
        known = [v for v in values if v is not None]
        return pick(known) if known else None

    return Parity(
        status="failed" if failed else "passed", samples=len(refs[0]), outputs=checks,
        max_abs_err=worst([c.max_abs_err for c in checks], max), max_rel_err=worst([c.max_rel_err for c in checks], max),
        top1_agreement=worst([c.top1_agreement for c in checks], min), cosine=worst([c.cosine for c in checks], min),
        criterion="each output by its own rule (see outputs)",
        note=f"output(s) failed: {', '.join(failed)}" if failed else "",
    )


def _check_output(name: str, kind: str, reference: np.ndarray, outputs: np.ndarray, quantized: bool,
                  float_out: np.ndarray | None = None) -> OutputCheck:
    """One output of a model with several outputs, under the rule for its kind (int8 logits: the int8 rule)."""
    logits = kind == "logits"
    if not quantized:
        p = _compare_one(reference, outputs, False)
    elif logits and float_out is not None:
        p = int8_parity(float_out, reference, outputs)
        p.note = "; ".join(t for t in (p.int8["measured"] if p.int8 else "", p.note) if t)
    elif logits:
        p = _compare_one(reference, outputs, True)
    else:
        p = _compare_one(reference, outputs, True, value_tolerance=MAX_QUANT_VALUE_ERR)
    return OutputCheck(name=name, kind="logits" if logits else "values", status="passed" if p.status == "passed"
                       else "failed", shape=list(np.shape(outputs)), max_abs_err=p.max_abs_err,
                       max_rel_err=p.max_rel_err, top1_agreement=p.top1_agreement if logits else None,
                       cosine=p.cosine, criterion=p.criterion, note=p.note)


def _compare_one(reference: np.ndarray, outputs: np.ndarray, quantized: bool,
                 value_tolerance: float | None = None) -> Parity:
    """One output against its reference: allclose; quantized, top-1 and cosine (logits) or cosine and a largest
    error of ``value_tolerance`` x max|reference| (values)."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    if not quantized:
        criterion = f"allclose(atol={ATOL}, rtol={RTOL})"
    elif value_tolerance is None:
        criterion = f"top1 >= {MIN_TOP1_PERCENT}% and cosine >= {MIN_COSINE}"
    else:
        criterion = f"max abs err <= {value_tolerance:g} * max|reference| and cosine >= {MIN_COSINE}"
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
    top1 = top1_agreement(out, ref) * 100.0
    cosine = float(cosine_rows(out, ref).min())
    if not quantized:
        ok = bool(np.all(err <= ATOL + RTOL * np.abs(ref)))
    elif value_tolerance is None:
        ok = top1 >= MIN_TOP1_PERCENT and cosine >= MIN_COSINE
    else:
        ok = cosine >= MIN_COSINE and max_abs <= value_tolerance * scale
    return Parity(
        status="passed" if ok else "failed", max_abs_err=max_abs, max_rel_err=max_abs / scale,
        top1_agreement=top1, cosine=cosine, samples=len(ref), criterion=criterion,
    )


def not_run(note: str) -> Parity:
    """A parity record for an artifact that cannot run here (e.g. CoreML on Linux)."""
    return Parity(status="not-run", note=note)


# -- verify: one artifact on the host against another architecture --------------------------------------------
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


def cross_machine_criterion(dtype: str) -> str:
    """The rule :func:`compare_across_machines` applies to artifacts of ``dtype``, in words."""
    if dtype in FLOAT_DTYPES:
        return f"max|arm64-host| <= {ATOL:g} + {RTOL:g}*max|host|"
    return f"top-1 agreement >= {MIN_TOP1_PERCENT / 100:.0%} and mean cosine >= {MIN_COSINE}"


def compare_across_machines(host: np.ndarray, other: np.ndarray, dtype: str, index: int = 0,
                            logits: bool | None = None) -> OutputParity:
    """Compare one output (first axis = samples) of an artifact whose weights are of ``dtype``.

    Top-1 agreement is measured for class logits: outputs the manifest marks ``logits`` (``logits=True``), or,
    when the manifest does not say (``logits=None``), any 2-D output with more than one column.
    """
    host = np.asarray(host, np.float32)
    other = np.asarray(other, np.float32)
    if host.shape != other.shape:
        raise ValueError(f"output {index}: shape {list(other.shape)} differs from the host's {list(host.shape)}")
    finite = bool(np.isfinite(other).all()) and bool(np.isfinite(host).all())
    diff = np.abs(host.astype(np.float64) - other.astype(np.float64))
    max_err = float(diff.max()) if diff.size and finite else float("inf")
    cos = cosine_rows(host, other) if len(host) else np.ones(1)
    is_logits = host.ndim == 2 and host.shape[1] > 1 if logits is None else logits and host.ndim == 2
    top1 = top1_agreement(host, other) if is_logits else None
    if dtype in FLOAT_DTYPES:
        tol = ATOL + RTOL * float(np.abs(host).max(initial=0.0))
        passed = finite and max_err <= tol
    else:
        tol = None
        passed = finite and float(cos.mean()) >= MIN_COSINE and (top1 is None or top1 >= MIN_TOP1_PERCENT / 100)
    return OutputParity(output=index, samples=len(host), max_abs_err=max_err, tolerance=tol,
                        cosine_mean=float(np.nan_to_num(cos.mean(), nan=-1.0)),
                        cosine_min=float(np.nan_to_num(cos.min(), nan=-1.0)),
                        top1_agreement=top1, bit_exact=bool(finite and np.array_equal(host, other)),
                        passed=passed)
