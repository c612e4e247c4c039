"""``model.ecz`` as a format: edgecomp's compressed weights, written, decoded and checked.

The codec itself is :mod:`edgecomp.compress.ecz`. The file is written when a stage asks for it
(``ExportOptions.compressed_form``, set by cluster and binarize), not because a target lists it. It holds
weights, not a graph: it is measured like any other file (size, SHA-256, parity of the decoded model run by
PyTorch) but has no runtime, no latency and no manifest entry (the graph is in the bundle's model files).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecomp.compress.base import ExportOptions
from edgecomp.compress.ecz import ECZ_NAME, EczError, read_ecz, write_ecz
from edgecomp.export.base import Format
from edgecomp.export.common import ExportedArtifact
from edgecomp.finetune import predict_all
from edgecomp.records import ArtifactRecord
from edgecomp.spec import ModelSpec

logger = logging.getLogger(__name__)


class EczFormat(Format):
    """edgecomp's lossless compressed weights (codebooks + Huffman-coded indices, packed binary weights)."""

    name = "ecz"
    filename = ECZ_NAME
    dtypes = ("fp32", "fp16", "int8", "binary")
    no_runner_note = "model.ecz holds weights, not a graph: parity runs the decoded weights in PyTorch"
    predicted = False
    selectable = False
    arm64_note = "model.ecz holds weights, not a graph (not a runtime format)"

    @classmethod
    def requested_by(cls, options: ExportOptions) -> bool:
        """Written when a stage (cluster, binarize) asked for the compressed form."""
        return options.compressed_form

    def export(self, model: Any, spec: ModelSpec, options: ExportOptions, path: Path,
               calibration: np.ndarray | None = None) -> ExportedArtifact:
        """Write the model's state_dict as ``model.ecz`` and prove it decodes to exactly the same tensors."""
        state = model.state_dict()
        summary = write_ecz(state, path)
        decoded = read_ecz(path)
        wrong = [k for k in state if k not in decoded or not torch.equal(decoded[k], state[k].cpu())]
        if wrong or set(decoded) != set(state):
            raise EczError(f"{ECZ_NAME} does not reproduce the weights exactly ({', '.join(wrong[:3])} ...)",
                           "report this as a bug")
        details: dict = {"dense_fp32_bytes": sum(t.numel() * 4 for t in state.values() if t.is_floating_point()),
                         "bytes_by_form": summary.by_kind(),
                         "tensors": [{"name": t.name, "form": t.kind, "numel": t.numel, "bytes": t.bytes}
                                     for t in summary.tensors]}
        logger.info("  ecz: %d bytes (%s), decodes exactly", summary.bytes,
                    ", ".join(f"{k} {v}" for k, v in summary.by_kind().items()))
        notes = [("edgecomp's compressed weights (codebooks + Huffman-coded indices and sparse positions, packed "
                  "binary weights): not a runtime format; edgecomp.compress.ecz.read_ecz rebuilds the exact "
                  "state_dict, the graph is in the bundle's model files"),
                 "decoded weights equal the model's exactly; parity compares the decoded model's outputs"]
        return ExportedArtifact("ecz", path, "compressed", [], [], notes=notes, details=details)

    def host_outputs(self, artifact: ExportedArtifact, model: Any, x: np.ndarray,
                     input_shape: list[int], threads: int) -> list[np.ndarray]:
        """Outputs of a copy of ``model`` holding the weights decoded from the file."""
        clone = copy.deepcopy(model)
        clone.load_state_dict(read_ecz(artifact.path))
        return predict_all(clone, x)

    def manifest_entry(self, artifact: ExportedArtifact, record: ArtifactRecord) -> None:
        """Not in the manifest: the app runs the bundle's model files; model.ecz is their weights, coded."""
        return

    def finish(self, record: ArtifactRecord, others: list[ArtifactRecord]) -> None:
        """How many times smaller model.ecz is than each fp32 model file."""
        for other in others:
            if other.bytes and other.dtype == "fp32" and other.format != self.name:
                record.details[f"ratio_{other.format}_fp32_to_ecz"] = other.bytes / record.bytes
