"""Rows for the compression table: weight sharing (cluster), Deep Compression and binary weights.

``rows(models)`` builds each model once in fp32 (the reference: its .tflite size is "fp32") and once
per method, all in one run, and returns one row per file a method wrote: the dense .tflite (fp32
weights that take shared or binary values), the CoreML palettized (LUT) .mlpackage, and the bundle's
compressed form model.ecz (Huffman-coded codebook indices and sparse positions, packed binary
weights). Columns match benchmarks/quantization.py: method, artifact bytes, bytes/parameter, ratio
to fp32, accuracy, parity, host p50. ``format_table(rows)`` prints them.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

METHODS: dict[str, tuple[str | list, list[str]]] = {
    "fp32": ([], ["tflite", "onnx"]),  # an empty recipe: no stage (None would let the planner choose)
    "cluster 4-bit": ("cluster(bits=4)", ["tflite", "coreml"]),
    "deep-compression": ("deep-compression", ["tflite", "coreml"]),
    "binarize": ("binarize", ["tflite"]),
}
"""Method label -> (recipe, formats to export)."""


@dataclass
class BenchModel:
    """A model to benchmark: label, model reference for ``edgecomp.build`` and its input shape (None: zoo)."""

    label: str
    ref: str
    input_shape: list[int] | None = None
    methods: tuple[str, ...] = tuple(METHODS)


def _row(model: str, method: str, artifact, params: int, fp32_bytes: int) -> dict:
    fmt = artifact.format
    forms = artifact.details.get("bytes_by_form", {})
    ecz = "model.ecz (1-bit packed)" if "binary" in forms else (
        "model.ecz (sparse+Huffman)" if "sparse" in forms else "model.ecz (Huffman)")
    what = {"ecz": ecz, "coreml": "mlpackage (LUT)" if method != "fp32" else "mlpackage"}
    return {
        "model": model, "method": method, "artifact": what.get(fmt, f"{fmt} {artifact.dtype}"),
        "bytes": artifact.bytes, "bytes_per_param": artifact.bytes / params,
        "ratio_to_fp32": fp32_bytes / artifact.bytes,
        "accuracy": artifact.accuracy, "parity": artifact.parity.status if artifact.parity else artifact.status,
        "p50_ms": artifact.latency.p50_ms if artifact.latency else None,
    }


def rows(*models: BenchModel, runs: int = 30, threads: int = 2) -> list[dict]:
    """Build every model with every method in this run and return the table rows (see module docstring)."""
    from edgecomp.build import BuildOptions, build

    out: list[dict] = []
    for bm in models:
        fp32_bytes = None
        with tempfile.TemporaryDirectory(prefix="edgecomp-bench-") as tmp:
            for method in ("fp32", *[m for m in bm.methods if m != "fp32"]):
                recipe, formats = METHODS[method]
                logger.info("%s: %s", bm.label, method)
                report = build(bm.ref, "android-arm64", BuildOptions(
                    out=Path(tmp) / method.replace(" ", "_"), recipe=recipe, formats=formats,
                    input_shape=bm.input_shape, runs=runs, threads=threads))
                if fp32_bytes is None:
                    fp32_bytes = next(a.bytes for a in report.artifacts if a.format == "tflite")
                out += [_row(bm.label, method, a, report.model.params, fp32_bytes) for a in report.artifacts
                        if a.status == "ok"]
    return out


def format_table(table: list[dict]) -> str:
    """The rows as an aligned text table."""
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    head = ("model", "method", "artifact", "bytes", "bytes/param", "x smaller than fp32", "accuracy %", "parity",
            "host p50 ms")
    lines = [head] + [(r["model"], r["method"], r["artifact"], str(r["bytes"]), f(r["bytes_per_param"], ".3f"),
                       f(r["ratio_to_fp32"], ".1f"), f(r["accuracy"], ".2f"), r["parity"], f(r["p50_ms"], ".3f"))
                      for r in table]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
