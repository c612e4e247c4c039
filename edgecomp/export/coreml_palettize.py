"""CoreML palettized (LUT) weights for clustered models, through coremltools.optimize.coreml.

The ``cluster`` stage leaves every conv/linear weight taking at most 2**bits values, so palettizing
loses nothing: coremltools' ``unique`` mode reads each weight's distinct values into a lookup table
and stores the weight as indices (``constexpr_lut_to_dense``), with the index width picked from
{1, 2, 4, 6, 8} bits. Tensors with more than 256 distinct values (layers left unclustered) stay dense.
``export_coreml`` calls ``palettize`` when the export options carry ``palettize_bits``.
"""

from __future__ import annotations

import logging

from edgecomp.compress.base import ExportOptions

logger = logging.getLogger(__name__)
MIN_WEIGHTS = 64
"""Tensors with fewer elements than this (biases, tiny layers) stay dense: a LUT would not pay off."""


def palettize(mlmodel, options: ExportOptions):
    """Return ``mlmodel`` with its shared-value weights stored as LUT + indices (model metadata records it)."""
    import coremltools.optimize.coreml as cto

    bits = int(options.palettize_bits or 8)
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="unique", weight_threshold=MIN_WEIGHTS))
    out = cto.palettize_weights(mlmodel, config)
    luts = lut_ops(out)
    out.user_defined_metadata["edgecomp.weights"] = (
        f"palettized: {len(luts)} weight tensors as lookup tables (cluster stage: <= {2**bits} values per layer)"
    )
    logger.info("  coreml: %d weight tensors palettized (LUT)", len(luts))
    return out


def lut_ops(mlmodel) -> list[str]:
    """Names of the ``constexpr_lut_to_dense`` ops (palettized weights) in an ML program."""
    program = mlmodel.get_spec().mlProgram
    names = []
    for function in program.functions.values():
        for block in function.block_specializations.values():
            names += [op.outputs[0].name for op in block.operations if op.type == "constexpr_lut_to_dense"]
    return names
