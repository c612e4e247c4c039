"""Run a bundle's model files on one input array and save the outputs; a standalone script.

This file must run unchanged in two places: in edgecomp's own Python on the host, and in the emulated
ARM64 Python of the userland (see :mod:`edgecomp.verify.userland`), where only numpy, ai_edge_litert and
onnxruntime are installed. So it imports nothing from edgecomp and nothing else beyond the standard library.

Usage: ``python worker.py REQUEST.json`` where the request holds::

    {"site": "/path/to/site-packages or null", "inputs": "x.npy", "out": "outputs.npz",
     "meta": "meta.json", "threads": 1,
     "models": [{"path": "model.tflite", "format": "tflite"}, {"path": "model.onnx", "format": "onnx"}]}

It writes ``out`` (arrays ``m{i}_o{j}``: output ``j`` of model ``i``, one row per input sample) and ``meta``
(runtime versions, machine, CPU features, and per model its input details or the error it raised).
No timings are written: under emulation they would mean nothing.
"""

from __future__ import annotations

import json
import platform
import struct
import sys
import traceback

# AT_HWCAP / AT_HWCAP2 bits of arm64 Linux (arch/arm64/include/uapi/asm/hwcap.h) worth naming: the ones
# that select different int8/fp32 kernels in XNNPACK and MLAS.
_HWCAP = {1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme", 37: "sme2"}


def cpu_features() -> list[str]:
    """Names of the notable arm64 CPU features the process sees (empty on other machines)."""
    if platform.machine() not in ("aarch64", "arm64"):
        return []
    try:
        with open("/proc/self/auxv", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    found: list[str] = []
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack("<QQ", raw[i:i + 16])
        table = _HWCAP if key == 16 else _HWCAP2 if key == 26 else None
        if table:
            found += [name for bit, name in table.items() if value >> bit & 1]
    return found


def _adapt_layout(x, shape):
    """Return ``x`` in the layout the model expects: as is, or NCHW -> NHWC when only that matches."""
    want = tuple(int(d) for d in shape[1:])
    if tuple(x.shape[1:]) == want or any(d <= 0 for d in want):
        return x
    if x.ndim == 4 and (x.shape[2], x.shape[3], x.shape[1]) == want:
        return x.transpose(0, 2, 3, 1).copy()
    raise ValueError(f"inputs of shape {list(x.shape[1:])} (batch dropped) do not fit the model input {list(want)}")


def _chunks(n: int, batch: int):
    """Start/stop pairs covering ``n`` samples in steps of ``batch``."""
    return [(s, min(s + batch, n)) for s in range(0, n, batch)]


def _pad(x, batch: int):
    """Pad the first axis of ``x`` with zeros up to ``batch`` rows."""
    import numpy as np

    if len(x) == batch:
        return x
    return np.concatenate([x, np.zeros((batch - len(x),) + x.shape[1:], x.dtype)])


def _quantize(x, dtype, quant):
    """Float -> int8/uint8 with the tensor's ``(scale, zero_point)``, rounding half to even and clipping."""
    import numpy as np

    scale, zero = quant
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def run_tflite(path: str, x, threads: int):
    """Run a .tflite file with LiteRT (XNNPACK); return ``(outputs, input_info)``."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    inputs = interp.get_input_details()
    if len(inputs) != 1:
        raise ValueError(f"{len(inputs)} inputs; only single-input models can be verified")
    inp = inputs[0]
    x = _adapt_layout(x, inp["shape"])
    signature = inp.get("shape_signature", inp["shape"])
    batch = len(x) if int(signature[0]) == -1 else int(inp["shape"][0])
    if int(signature[0]) == -1:
        interp.resize_tensor_input(inp["index"], [batch, *x.shape[1:]])
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs_detail = interp.get_output_details()
    quantized_in = inp["dtype"] in (np.int8, np.uint8)
    results: list[list] = [[] for _ in outs_detail]
    for start, stop in _chunks(len(x), batch):
        chunk = _pad(x[start:stop], batch)
        feed = _quantize(chunk, inp["dtype"], inp["quantization"]) if quantized_in else chunk.astype(inp["dtype"])
        interp.set_tensor(inp["index"], feed)
        interp.invoke()
        for j, od in enumerate(outs_detail):
            y = interp.get_tensor(od["index"])[: stop - start]
            if od["dtype"] in (np.int8, np.uint8):
                scale, zero = od["quantization"]
                y = (y.astype(np.float32) - zero) * np.float32(scale)
            results[j].append(np.asarray(y, np.float32))
    info = {"shape": [int(d) for d in inp["shape"]], "dtype": np.dtype(inp["dtype"]).name,
            "quantization": [float(q) for q in inp["quantization"]] if quantized_in else None,
            "batch": batch, "outputs": [np.dtype(od["dtype"]).name for od in outs_detail]}
    return [np.concatenate(r) for r in results], info


def run_onnx(path: str, x, threads: int):
    """Run an .onnx file with onnxruntime's CPU provider; return ``(outputs, input_info)``."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # as edgecomp's runner: exact S8S8 int8 kernels (x86 without VNNI otherwise saturates in U8S8 sums)
    opts.add_session_config_entry("session.qdqisint8allowed", "1")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{len(inputs)} inputs; only single-input models can be verified")
    shape = [d if isinstance(d, int) else -1 for d in inputs[0].shape]
    x = _adapt_layout(x, shape)
    batch = len(x) if shape[0] == -1 else shape[0]
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inputs[0].type)
    if dtype is None:
        raise ValueError(f"input type {inputs[0].type} is not supported; expected float or float16")
    results: list[list] = []
    for start, stop in _chunks(len(x), batch):
        outs = sess.run(None, {inputs[0].name: _pad(x[start:stop], batch).astype(dtype)})
        results = results or [[] for _ in outs]
        for j, y in enumerate(outs):
            results[j].append(np.asarray(y[: stop - start], np.float32))
    info = {"shape": shape, "dtype": np.dtype(dtype).name, "quantization": None, "batch": batch,
            "outputs": [o.type for o in sess.get_outputs()]}
    return [np.concatenate(r) for r in results], info


def versions() -> dict:
    """Versions of the Python and runtimes this process uses."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "machine": platform.machine(), "cpu_features": cpu_features()}
    for name in ("numpy", "ai-edge-litert", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_request(request: dict) -> dict:
    """Run every model of ``request`` on its inputs; write the outputs and return the meta record."""
    import numpy as np

    x = np.load(request["inputs"]).astype(np.float32)
    threads = int(request.get("threads", 1))
    arrays: dict = {}
    models = []
    for i, model in enumerate(request["models"]):
        runner = {"tflite": run_tflite, "onnx": run_onnx}[model["format"]]
        try:
            outs, info = runner(model["path"], x, threads)
            arrays.update({f"m{i}_o{j}": y for j, y in enumerate(outs)})
            models.append({"path": model["path"], "ok": True, "n_outputs": len(outs), "input": info})
        except Exception as exc:  # noqa: BLE001 - one failing file must not hide the others
            models.append({"path": model["path"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc(limit=3)})
    np.savez(request["out"], **arrays)
    meta = {"versions": versions(), "models": models}
    with open(request["meta"], "w") as fh:
        json.dump(meta, fh, indent=2)
    return meta


def main(argv: list[str]) -> int:
    """Entry point: ``worker.py REQUEST.json``."""
    with open(argv[1]) as fh:
        request = json.load(fh)
    if request.get("site"):
        sys.path.insert(0, request["site"])
    run_request(request)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
