"""Loading a vetted TorchScript or ``torch.export`` (``.pt2``) file into an ``nn.Module``.

:func:`load_model_file` vets the archive first (:mod:`edgecomp.model_vetting`), so nothing in it is unpickled,
compiled or run before it has been checked. A ``.pt2`` exported with a fixed batch (torch.export's default)
is wrapped in :class:`FixedBatch`, which runs any batch in chunks of the model's own batch size.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import torch
from torch import nn

from edgecomp.errors import ModelLoadError
from edgecomp.model_vetting import check_torchscript_graphs, vet_pt2, vet_torchscript

logger = logging.getLogger(__name__)


def model_file_kind(path: Path) -> str:
    """``"pt2"`` or ``"torchscript"``; a ModelLoadError for a missing file or any other kind of file."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}", "check the path, or omit MODEL for the default")
    if path.is_dir() or not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path} is not a TorchScript or torch.export file (not a zip archive)",
            "save with torch.jit.save(torch.jit.script(model)) or torch.export.save(torch.export.export(...)), "
            "or pass package.module:factory",
        )
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    # a .pt2 archive has a top-level models/ folder; a TorchScript archive may hold code/.../models/ (e.g.
    # code/__torch__/torchvision/models/mobilenetv2.py), so only the second path component counts
    if path.suffix == ".pt2" or any(n.endswith("serialized_exported_program.json") or n.split("/")[1:2] == ["models"]
                                    for n in names):
        return "pt2"
    if any(n.endswith(("constants.pkl", "code/__torch__.py")) or "/code/" in n for n in names):
        return "torchscript"
    raise ModelLoadError(
        f"{path} looks like a pickled checkpoint or state_dict, which edgecomp will not unpickle",
        "pass the model's factory (package.module:factory or file.py:factory) with --weights FILE",
    )


class FixedBatch(nn.Module):
    """Runs a model whose graph fixes the batch size on any batch: in chunks of that size, the last one
    padded with zeros and the padding's outputs dropped."""

    def __init__(self, module: nn.Module, batch: int) -> None:
        super().__init__()
        self.module = module
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for every row of ``x``, whatever its batch size."""
        if x.shape[0] == self.batch:
            return self.module(x)
        outputs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            rows = chunk.shape[0]
            if rows < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros((self.batch - rows, *chunk.shape[1:]))])
            outputs.append(self.module(chunk)[:rows])
        return torch.cat(outputs)


def _fixed_batch(program: torch.export.ExportedProgram) -> int | None:
    """The batch size the program's first input fixes, or None when its dim 0 is symbolic."""
    user_inputs = program.graph_signature.user_inputs
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if not user_inputs or user_inputs[0] not in placeholders:
        return None
    value = placeholders[user_inputs[0]].meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return None
    batch = value.shape[0]
    return batch if isinstance(batch, int) else None


def _load_pt2(path: Path) -> tuple[nn.Module, list[int] | None]:
    vet_pt2(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot read torch.export program {path}: {exc}", "re-save it with "
                             "torch.export.save using torch 2.13") from exc
    shape = None
    example = getattr(program, "example_inputs", None)
    if example and example[0]:
        shape = list(example[0][0].shape)
    module = program.module()
    # The unlifted module refuses .eval()/.train(); its graph already fixed those semantics when it
    # was exported, so the ordinary nn.Module flags are harmless and let the spine treat it alike.
    del module.train, module.eval
    batch = _fixed_batch(program)
    if batch is not None:
        logger.info("%s was exported for batches of exactly %d; edgecomp runs larger batches in chunks "
                    "of %d (export with a dynamic batch dimension to avoid this)", path, batch, batch)
        module = FixedBatch(module, batch)
    return module, shape


def _load_torchscript(path: Path) -> nn.Module:
    vet_torchscript(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"cannot read TorchScript file {path}: {exc}", "re-save it with "
                             "torch.jit.save") from exc
    check_torchscript_graphs(path, module)
    return module


def load_model_file(path: Path) -> tuple[nn.Module, list[int] | None]:
    """Vet and load a TorchScript or ``.pt2`` file: the module and, if the file records it, its input shape."""
    if model_file_kind(path) == "pt2":
        return _load_pt2(path)
    return _load_torchscript(path), None
