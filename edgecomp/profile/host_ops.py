"""Per-op time of an ONNX model on this machine, from onnxruntime's built-in profiler.

LiteRT's Python interpreter has no op profiler; for .tflite files the per-op view comes from the
latency predictor (labelled ``predicted:<profile>``) or from a device run (``benchmark_model
--enable_op_profiling``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def onnx_op_profile(path: str | Path, threads: int = 1, runs: int = 10) -> list[dict[str, Any]]:
    """Average time per node (ms) over ``runs`` inferences, slowest first, from onnxruntime's profiler."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = {}
        for inp in sess.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in inp.shape]
            dtype = np.float32 if "float" in inp.type else np.int64
            feeds[inp.name] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        row = per_node.setdefault(name, {"name": name, "node_type": ev.get("args", {}).get("op_name", "?"),
                                         "total_us": 0.0, "calls": 0})
        row["total_us"] += float(ev.get("dur", 0))
        row["calls"] += 1
    rows = [{"name": r["name"], "node_type": r["node_type"], "avg_ms": r["total_us"] / 1000.0 / max(runs, 1)}
            for r in per_node.values()]
    total = sum(r["avg_ms"] for r in rows) or 1.0
    for r in rows:
        r["percent"] = 100.0 * r["avg_ms"] / total
    return sorted(rows, key=lambda r: -r["avg_ms"])
