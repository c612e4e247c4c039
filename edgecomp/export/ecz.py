"""The ``.ecz`` artifact of a bundle: edgecomp's compressed weights, written, decoded and checked.

The codec itself is :mod:`edgecomp.compress.ecz`; this module writes ``model.ecz`` into a bundle folder and
measures it like any other exported file (size, SHA-256, parity of the decoded model).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from edgecomp.bundle import sha256_of
from edgecomp.compress.ecz import ECZ_NAME, EczError, read_ecz, write_ecz
from edgecomp.export.parity import compare_to_reference
from edgecomp.finetune import predict_all
from edgecomp.records import ArtifactRecord

logger = logging.getLogger(__name__)


def bundle_record(model: torch.nn.Module, folder: Path, reference: np.ndarray | list[np.ndarray], x: np.ndarray,
                  artifacts: list, y: np.ndarray | None = None, names: list[str] | None = None,
                  kinds: list[str] | None = None) -> ArtifactRecord:
    """Write ``model.ecz`` into a bundle folder, prove it decodes exactly, and return its ArtifactRecord.

    The decoded weights are compared tensor by tensor with the model's (any difference is an
    EczError) and loaded into a copy of the model whose outputs on ``x`` are compared with
    ``reference`` (one array per output, named ``names``, of ``kinds``); ``details`` hold the byte breakdown and the ratio to each fp32 model file.
    """
    path = Path(folder) / ECZ_NAME
    state = model.state_dict()
    summary = write_ecz(state, path)
    decoded = read_ecz(path)
    wrong = [k for k in state if k not in decoded or not torch.equal(decoded[k], state[k].cpu())]
    if wrong or set(decoded) != set(state):
        raise EczError(f"{ECZ_NAME} does not reproduce the weights exactly ({', '.join(wrong[:3])} ...)",
                       "report this as a bug")
    clone = copy.deepcopy(model)
    clone.load_state_dict(decoded)
    details: dict = {"dense_fp32_bytes": sum(t.numel() * 4 for t in state.values() if t.is_floating_point()),
                     "bytes_by_form": summary.by_kind(),
                     "tensors": [{"name": t.name, "form": t.kind, "numel": t.numel, "bytes": t.bytes}
                                 for t in summary.tensors]}
    for a in artifacts:
        if a.bytes and a.dtype == "fp32":
            details[f"ratio_{a.format}_fp32_to_ecz"] = a.bytes / summary.bytes
    outputs = predict_all(clone, x)
    record = ArtifactRecord(
        format="ecz", path=ECZ_NAME, dtype="compressed", bytes=summary.bytes, sha256=sha256_of(path),
        parity=compare_to_reference(reference, outputs, names=names, kinds=kinds), details=details,
        accuracy=None if y is None else float((outputs[0].argmax(1) == y).mean() * 100.0),
        notes=[("edgecomp's compressed weights (codebooks + Huffman-coded indices and sparse positions, packed "
               "binary weights): not a runtime format; edgecomp.compress.ecz.read_ecz rebuilds the exact "
               "state_dict, the graph is in the bundle's model files"),
               "decoded weights equal the model's exactly; parity compares the decoded model's outputs"],
    )
    logger.info("  ecz: %d bytes (%s), decodes exactly", summary.bytes,
                ", ".join(f"{k} {v}" for k, v in summary.by_kind().items()))
    return record
