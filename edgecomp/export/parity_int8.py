"""A parity rule for int8 artifacts that tells converter bugs from rounding noise.

Two int8 simulations of one float network (edgecomp's fake-quant reference and the .tflite's integer
kernels) round differently in every layer; over 50 layers their outputs can drift as far apart from each
other as each is from the float model, without either being wrong. So the artifact is judged by its
distance to the FLOAT model, relative to the reference's own distance to the float model:

* ``noise`` = the reference's relative error to float, ``||ref - float|| / ||float||`` over all samples;
* the artifact passes when its relative error to float is at most ``RATIO x noise + FLOOR``: it may be
  somewhat further from float than the reference (another rounding), not a lot further (a bug: a bias
  with the wrong scale, a wrong layout, a dropped op add error far above int8's rounding noise);
* top-1 counts only where it means something: on samples whose float top-1 margin (best minus second
  logit) exceeds ``MARGIN x`` that sample's reference error (RMS per logit), the artifact must keep the
  float top-1 as often as the reference does, less ``TOP1_SLACK`` percent. Near-ties may flip either way;
* an absolute guard on the reference itself: when its mean per-sample cosine to the float outputs is below
  ``REFERENCE_MIN_COSINE``, the quantization (not the converter) lost the network, and an artifact that
  merely agrees with such a reference must not pass. int8's own rounding stays far above the floor (0.98
  on the issue's 50-layer random MobileNetV2; >= 0.998 on the trained peers models); the SE gate bug that
  collapsed MobileNetV3 to 7 % gave -0.005.

:func:`int8_parity` turns the verdict into the build's ``Parity`` record (``Parity.int8`` holds the numbers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgecomp.records import Parity

RATIO = 1.5  # the artifact may be 1.5x as far from float as the reference is
FLOOR = 0.01  # ...plus 1 % of the float outputs' norm (a near-exact reference has noise ~0)
MARGIN = 3.0  # a top-1 is meaningful when the margin exceeds 3x the reference's RMS error on that sample
TOP1_SLACK = 2.0  # percent of the meaningful samples
REFERENCE_MIN_COSINE = 0.9  # mean cosine of the int8 reference to float below this: the quantization is broken
BROKEN_REFERENCE = "the int8 reference itself is far from the float model"  # the guard's note starts so
QUANT_REPORT_HINT = ("run `edgecomp quant-report MODEL --data DATA` to see which layers lose it, then keep them "
                     "float with quantize.int8(skip=[...]) or max_drop=PTS")


@dataclass
class Int8Verdict:
    """The rule's answer with the numbers it used."""

    status: str  # "passed" or "failed"
    artifact_error: float  # ||artifact - float|| / ||float||
    reference_error: float  # ||reference - float|| / ||float|| (int8's own noise)
    allowed_error: float
    meaningful_samples: int  # samples whose float top-1 margin is above MARGIN x the noise
    top1_artifact: float | None  # % of those where the artifact keeps the float top-1
    top1_reference: float | None
    artifact_vs_reference_cosine: float  # mean per-sample cosine (reported, not judged)
    reference_vs_float_cosine: float  # mean per-sample cosine of the reference to float (the absolute guard)
    criterion: str
    note: str = ""

    def measured(self) -> str:
        """What the rule measured, in one line (the build's console and error messages)."""
        text = (f"error to float {self.artifact_error:.4f} vs the reference's {self.reference_error:.4f} "
                f"(allowed {self.allowed_error:.4f}), reference-float cosine {self.reference_vs_float_cosine:.4f}")
        if self.top1_artifact is not None:
            text += (f", float top-1 kept on {self.top1_artifact:.1f}% of {self.meaningful_samples} clear samples "
                     f"(reference {self.top1_reference:.1f}%)")
        return text

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / norm if norm > 0 else float(np.linalg.norm(a - b))


def judge_int8(float_out: np.ndarray, reference_out: np.ndarray, artifact_out: np.ndarray) -> Int8Verdict:
    """Judge ``artifact_out`` (an int8 file's outputs) by its distance to ``float_out`` relative to
    ``reference_out``'s (edgecomp's int8 fake-quant reference), on the same inputs, first output each."""
    f, r, a = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (float_out, reference_out, artifact_out))
    criterion = (f"|art-float|/|float| <= {RATIO} x |ref-float|/|float| + {FLOOR}; top-1 kept on samples with "
                 f"margin > {MARGIN} x ref noise, within {TOP1_SLACK} pt of the reference; reference-float mean "
                 f"cosine >= {REFERENCE_MIN_COSINE}")
    if not (f.shape == r.shape == a.shape) or f.size == 0:
        return Int8Verdict("failed", float("nan"), float("nan"), 0.0, 0, None, None, 0.0, 0.0, criterion,
                           note=f"shapes differ or empty: float {f.shape}, reference {r.shape}, artifact {a.shape}")
    if not (np.isfinite(a).all() and np.isfinite(r).all() and np.isfinite(f).all()):
        return Int8Verdict("failed", float("nan"), float("nan"), 0.0, 0, None, None, 0.0, 0.0, criterion,
                           note="NaN/Inf in the outputs")
    ref_err, art_err = _rel(r, f), _rel(a, f)
    allowed = RATIO * ref_err + FLOOR
    cos, ref_cos = _mean_cosine(a, r), _mean_cosine(r, f)
    top_a = top_r = None
    meaningful = 0
    ok = art_err <= allowed
    note = "" if ok else f"artifact is {art_err / max(ref_err, 1e-12):.1f}x as far from float as the reference"
    if ref_cos < REFERENCE_MIN_COSINE:
        ok = False
        note = (note + "; " if note else "") + (
            f"{BROKEN_REFERENCE} (mean cosine {ref_cos:.3f} < {REFERENCE_MIN_COSINE}): the quantization, not "
            "the converter, lost the network; see `edgecomp quant-report`")
    if f.shape[1] > 1:
        part = np.sort(f, axis=1)
        margin = part[:, -1] - part[:, -2]
        noise = np.sqrt(((r - f) ** 2).mean(1))
        keep = margin > MARGIN * np.maximum(noise, 1e-12)
        meaningful = int(keep.sum())
        if meaningful:
            best = f.argmax(1)[keep]
            top_a = 100.0 * float((a.argmax(1)[keep] == best).mean())
            top_r = 100.0 * float((r.argmax(1)[keep] == best).mean())
            if top_a < top_r - TOP1_SLACK:
                ok = False
                note = (note + "; " if note else "") + (f"top-1 kept on {top_a:.1f}% of {meaningful} clear "
                                                        f"samples vs {top_r:.1f}% for the reference")
    return Int8Verdict("passed" if ok else "failed", art_err, ref_err, allowed, meaningful, top_a, top_r, cos,
                       ref_cos, criterion, note)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-row cosine of 2-D float64 arrays; two all-zero rows count as identical."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return float(np.mean(np.where((na == 0) & (nb == 0), 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-300))))


def int8_parity(float_out: np.ndarray, reference_out: np.ndarray, artifact_out: np.ndarray) -> Parity:
    """The build's parity record of one int8 output under :func:`judge_int8`.

    Status, criterion and note are the verdict's; ``Parity.int8`` holds every number the rule measured. The
    artifact-to-reference numbers (largest error, top-1 agreement, smallest cosine) are reported beside them,
    not judged: two int8 simulations may disagree with each other as much as each does with float.
    """
    v = judge_int8(float_out, reference_out, artifact_out)
    r, a = (np.asarray(o, np.float64).reshape(len(o), -1) for o in (reference_out, artifact_out))
    measured = {}
    if r.shape == a.shape and r.size and np.isfinite(r).all() and np.isfinite(a).all():
        err = np.abs(a - r)
        scale = float(np.abs(r).max()) or 1.0
        na, nr = np.linalg.norm(a, axis=1), np.linalg.norm(r, axis=1)
        rows = np.where((na == 0) & (nr == 0), 1.0, (a * r).sum(1) / np.maximum(na * nr, 1e-300))
        measured = {"max_abs_err": float(err.max()), "max_rel_err": float(err.max()) / scale,
                    "cosine": float(rows.min())}
        if a.shape[1] > 1:
            measured["top1_agreement"] = 100.0 * float((a.argmax(1) == r.argmax(1)).mean())
    return Parity(status=v.status, samples=len(a), criterion=f"int8 rule: {v.criterion}", note=v.note,
                  int8={**v.as_dict(), "measured": v.measured()}, **measured)

