"""Calibration of activation ranges and rounding of weights for int8 quantization.

Range methods work on samples of a tensor's values (collected during calibration) and return the
real interval ``[lo, hi]`` that the int8 grid should cover:

- ``minmax``: the observed extremes (no clipping).
- ``percentile``: the ``p``-th and ``(100-p)``-th percentiles (clips rare outliers).
- ``mse``: the clipping range that minimises the expected squared quantization error (clipping
  plus rounding) over a histogram of the values.
- ``entropy``: TensorRT's KL-divergence threshold on the histogram of ``|x|``.

``power_of_two`` rounds a scale up to ``2^k`` (dynamic fixed point, Qm.n) and ``stochastic_round``
rounds ``x`` up with probability equal to its fractional part (unbiased: E[SR(x)] = x).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from edgecomp.errors import ConfigError

METHODS = ("minmax", "percentile", "mse", "entropy")
QMIN, QMAX = -128, 127
_BINS = 2048


def _histogram(samples: np.ndarray, lo: float, hi: float, bins: int = _BINS) -> tuple[np.ndarray, np.ndarray]:
    counts, edges = np.histogram(samples, bins=bins, range=(lo, hi))
    return counts.astype(np.float64), (edges[:-1] + edges[1:]) / 2


def affine_error(counts: np.ndarray, centers: np.ndarray, lo: float, hi: float) -> float:
    """Expected squared error of affine int8 quantization over ``[lo, hi]`` for a histogram."""
    scale = max(hi - lo, 1e-12) / (QMAX - QMIN)
    inside = (centers >= lo) & (centers <= hi)
    clip_err = np.where(centers < lo, (centers - lo) ** 2, (centers - hi) ** 2)
    err = np.where(inside, scale * scale / 12.0, clip_err)
    return float((counts * err).sum() / max(counts.sum(), 1.0))


def _range_mse(samples: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    counts, centers = _histogram(samples, lo, hi)
    best, best_err = (lo, hi), affine_error(counts, centers, lo, hi)
    for frac in np.linspace(0.05, 1.0, 96):
        cand = (lo * frac if lo < 0 else lo, hi * frac if hi > 0 else hi)
        err = affine_error(counts, centers, *cand)
        if err < best_err:
            best, best_err = cand, err
    return best


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / max(p.sum(), 1e-12)
    q = q / max(q.sum(), 1e-12)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def _entropy_threshold(samples: np.ndarray, levels: int = 128) -> float:
    """TensorRT-style: the |x| threshold whose 128-level quantized histogram is closest in KL."""
    amax = float(np.abs(samples).max())
    if amax == 0.0:
        return 0.0
    counts, _ = np.histogram(np.abs(samples), bins=_BINS, range=(0.0, amax))
    counts = counts.astype(np.float64)
    best_t, best_kl = amax, math.inf
    for i in range(levels, _BINS + 1, 16):
        ref = counts[:i].copy()
        ref[-1] += counts[i:].sum()
        chunks = np.array_split(np.arange(i), levels)
        quant = np.zeros(i)
        for idx in chunks:
            nonzero = counts[idx] > 0
            if nonzero.any():
                quant[idx[nonzero]] = counts[idx].sum() / nonzero.sum()
        kl = _kl(ref, quant)
        if kl < best_kl:
            best_t, best_kl = amax * i / _BINS, kl
    return best_t


def compute_range(samples: np.ndarray, method: str, percentile: float = 99.99,
                  observed: tuple[float, float] | None = None) -> tuple[float, float]:
    """The real range ``[lo, hi]`` (containing 0) an int8 tensor should cover, by ``method``."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    lo, hi = observed if observed is not None else (float(samples.min()), float(samples.max()))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo == 0.0 or method == "minmax":
        return lo, hi
    if method == "percentile":
        a, b = np.percentile(samples, [100.0 - percentile, percentile])
        return min(float(a), 0.0), max(float(b), 0.0)
    if method == "mse":
        return _range_mse(samples, lo, hi)
    if method == "entropy":
        t = _entropy_threshold(samples)
        return max(lo, -t), min(hi, t)
    raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")


def affine_qparams(lo: float, hi: float, eps: float = 2**-12) -> tuple[float, int]:
    """Scale and zero point of per-tensor affine int8 covering ``[lo, hi]`` widened to contain 0.

    The grid must contain 0 (exact zero padding, ReLU outputs) and its zero point must lie in
    [-128, 127]: a range that excludes 0, such as a constant operand (``x + 3``: min = max = 3) or a
    gate in [0.2, 1], would otherwise get the zero point clamped and the grid shifted off the values
    (3.0 came out as 0.062, which collapsed hard-sigmoid gates).
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (QMAX - QMIN), eps)
    zero = round(QMIN - lo / scale)
    return scale, int(min(max(zero, QMIN), QMAX))


def power_of_two(scale: float) -> float:
    """The smallest power of two >= ``scale`` (so the range still fits): fixed-point Qm.n scale 2^-n."""
    return float(2.0 ** math.ceil(math.log2(max(scale, 1e-30))))


def parse_fixed_point(text: str) -> tuple[int, int]:
    """``"Q3.4"`` -> (3, 4): integer and fractional bits of a signed 8-bit fixed-point format."""
    body = text.strip().upper().removeprefix("Q")
    m, _, n = body.partition(".")
    if not (m.isdigit() and n.isdigit()) or int(m) + int(n) != 7:
        raise ValueError(f"fixed-point format {text!r} must be Qm.n with m + n = 7 (sign bit + 7), e.g. Q3.4")
    return int(m), int(n)


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round down or up at random with P(up) = frac(x); unbiased: E[stochastic_round(x)] = x."""
    floor = torch.floor(x)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return floor + (u < (x - floor)).to(x.dtype)


def load_calibration(path: str, input_shape: list[int], spec_norm=None, n: int = 256) -> np.ndarray:
    """Normalised float32 inputs from a .npy file or a folder of images, shaped like the model input."""
    p = Path(path)
    if p.is_file() and p.suffix == ".npy":
        try:
            x = np.load(p, allow_pickle=False).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot read calibration data {p}: {exc}", "save it with numpy.save") from exc
        if list(x.shape[1:]) != list(input_shape[1:]):
            raise ConfigError(f"calibration data {p} has shape {list(x.shape)}",
                              f"it needs N x {input_shape[1:]} (normalised like the model's input)")
        return x[:n]
    if p.is_dir():
        return _load_images(p, input_shape, spec_norm, n)
    raise ConfigError(f"calibration data not found or not .npy/folder: {p}",
                      "pass calibration_data='inputs.npy' or a folder of .png/.jpg images")


def _load_images(folder: Path, input_shape: list[int], norm, n: int) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})[:n]
    if not files or len(input_shape) != 4:
        raise ConfigError(f"no images usable as calibration data in {folder}",
                          "the folder needs .png/.jpg images and the model an NCHW image input")
    _, c, h, w = input_shape
    scale = norm.scale if norm else 1.0 / 255.0
    mean = np.array(norm.mean if norm else [0.0], np.float32).reshape(-1, 1, 1)
    std = np.array(norm.std if norm else [1.0], np.float32).reshape(-1, 1, 1)
    out = []
    for f in files:
        img = Image.open(f).convert("L" if c == 1 else "RGB").resize((w, h))
        arr = np.asarray(img, np.float32).reshape(h, w, c).transpose(2, 0, 1)
        out.append((arr * scale - mean) / std)
    return np.stack(out).astype(np.float32)
