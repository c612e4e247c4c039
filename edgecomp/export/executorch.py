"""ExecuTorch (.pte) with the XNNPACK delegate: PyTorch's own on-device runtime (Android, iOS, Linux ARM).

torch.export -> ``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` -> ``to_executorch()``
-> ``model.pte``. fp32 exports the float model. int8 exports the fake-quant reference of ``quantize.int8``
(PT2E with edgecomp's quantizer, the XNNPACK quantizer's scheme: symmetric per-channel int8 weights, affine
per-tensor int8 activations), so the .pte, .tflite and .onnx of one recipe share one calibration and the same
scales; XNNPACK lowers its quantize/dequantize pairs into integer kernels.

Ops XNNPACK cannot take stay on ExecuTorch's portable kernels (plain C++ loops, typically several times
slower): the export still succeeds, and ``details`` names every such op with its count and the share of the
graph delegated; the build logs a warning. Needs the optional extra: ``pip install 'edgecomp[executorch]'``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecomp.errors import ExportError
from edgecomp.export.base import Format
from edgecomp.export.common import ExportedArtifact, layout_of, unsupported_op_error
from edgecomp.quiet import quiet

if TYPE_CHECKING:
    from edgecomp.bundle import TensorInfo
    from edgecomp.compress.base import ExportOptions
    from edgecomp.spec import ModelSpec

logger = logging.getLogger(__name__)
INSTALL = "pip install 'edgecomp[executorch]'"
IGNORED_OPS = {"getitem", "Total"}  # tuple unpacking and the dataframe's sum row: not kernels


def _is_kernel(op: str) -> bool:
    """Whether a DelegationInfo op type is a kernel (not tuple unpacking or symbolic-shape bookkeeping)."""
    return op not in IGNORED_OPS and "_" in op and not op.startswith(("_assert", "sym_"))
_DTYPES = {6: "float32", 5: "float16", 1: "int8", 0: "uint8", 3: "int32", 4: "int64"}  # c10::ScalarType codes


class ExecuTorchFormat(Format):
    """ExecuTorch program (.pte) lowered to the XNNPACK delegate; run on the host by executorch.runtime."""

    name = "pte"
    filename = "model.pte"
    dtypes = ("fp32", "int8")
    runner = "edgecomp.export.executorch:ExecuTorchRunner"
    arm64_note = ("no aarch64 Linux wheel of executorch on the package index (checked for 1.5.1), so the "
                  "emulated ARM64 check cannot run it; check it on a device")
    requires = ("executorch",)
    install = INSTALL

    def export(self, model: Any, spec: ModelSpec, options: ExportOptions, path: Path,
               calibration: np.ndarray | None = None) -> ExportedArtifact:
        """Write ``model`` as ``model.pte`` lowered to XNNPACK; see :func:`export_pte`."""
        return export_pte(model, spec, options, path)


@quiet("executorch export")
def export_pte(model: Any, spec: ModelSpec, options: ExportOptions, path: Path) -> ExportedArtifact:
    """torch.export ``model`` (fp32) or its int8 reference graph, lower to XNNPACK, write the .pte.

    The input shape is static (the spec's); a model that torch.export cannot capture is an ExportError naming
    the op. The share of the graph delegated and the ops left on portable kernels go into ``details``.
    """
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    graph, notes = _graph_to_export(model, options)
    example = (torch.zeros(spec.input_shape),)
    try:
        program = torch.export.export(graph, example)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        info = get_delegation_info(edge.exported_program().graph_module)
        buffer = edge.to_executorch().buffer
    except Exception as exc:
        raise unsupported_op_error("pte", exc) from exc
    path.write_bytes(buffer)
    details = delegation_details(info)
    if details["portable_ops"]:
        ops = ", ".join(f"{op} x{n}" for op, n in details["portable_ops"].items())
        notes.append(f"{details['delegated_share']:.0%} of the graph's ops run on XNNPACK; left on ExecuTorch's "
                     f"portable kernels (plain C++, typically several times slower than XNNPACK's): {ops}")
        logger.warning("  pte: ops not delegated to XNNPACK, left on the slower portable kernels: %s", ops)
    inputs, outputs = pte_io(path)
    return ExportedArtifact("pte", path, options.dtype, inputs, outputs, notes=notes, details=details)


def _graph_to_export(model: Any, options: ExportOptions) -> tuple[Any, list[str]]:
    """The module to torch.export: the float model, or the int8 reference graph of quantize.int8."""
    from edgecomp.compress.pt2e import QuantizedModel

    if options.dtype == "fp32":
        return (model.float_model if isinstance(model, QuantizedModel) else model).eval(), []
    if not isinstance(model, QuantizedModel) or (options.int8 and options.int8.mode != "static"):
        raise ExportError("int8 .pte export needs the model returned by quantize.int8 (static int8)",
                          "put quantize.int8 last in the recipe (quantize.dynamic is not exported to .pte)")
    note = ("int8: the quantize.int8 reference graph (same calibration and scales as the .tflite/.onnx), "
            "lowered to XNNPACK's integer kernels")
    return model.reference, [note]


def delegation_details(info: Any) -> dict:
    """Delegated vs portable op counts from ExecuTorch's DelegationInfo, ops left on portable kernels named."""
    table = info.get_operator_delegation_dataframe()
    portable = {str(r.op_type): int(r.occurrences_in_non_delegated_graphs) for r in table.itertuples()
                if _is_kernel(str(r.op_type)) and int(r.occurrences_in_non_delegated_graphs) > 0}
    delegated = sum(int(r.occurrences_in_delegated_graphs) for r in table.itertuples()
                    if _is_kernel(str(r.op_type)))
    total = delegated + sum(portable.values())
    return {"delegated_ops": delegated, "portable_ops": portable, "delegated_share": delegated / total if total else 0.0,
            "delegated_subgraphs": int(info.num_delegated_subgraphs), "backend": "XnnpackBackend"}


def pte_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Input and output tensors of the .pte's ``forward`` method, from its metadata."""
    from edgecomp.bundle import TensorInfo

    meta = _load_method(path).metadata

    def info(kind: str, i: int) -> TensorInfo:
        t = getattr(meta, f"{kind}_tensor_meta")(i)
        shape = [int(s) for s in t.sizes()]
        return TensorInfo(name=f"{kind}_{i}", shape=shape, dtype=_DTYPES.get(int(t.dtype()), "float32"),
                          layout=layout_of(shape))

    return ([info("input", i) for i in range(meta.num_inputs())],
            [info("output", i) for i in range(meta.num_outputs())])


def _load_method(path: str | Path):
    from executorch.runtime import Runtime

    return Runtime.get().load_program(Path(path)).load_method("forward")


class ExecuTorchRunner:
    """A loaded .pte ``forward`` method on the host (executorch.runtime, XNNPACK's x86 kernels)."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(int(threads))  # XNNPACK's thread pool (the only knob exposed)
        self.method = _load_method(path)
        meta = self.method.metadata.input_tensor_meta(0)
        self.input_shape = [int(s) for s in meta.sizes()]

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output for one input of ``input_shape``."""
        import torch

        outs = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return [o.detach().numpy().astype(np.float32) for o in outs]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The first output for one input of ``input_shape``."""
        return self.run_all(x)[0]
