"""What an app needs to know about a model's input and output, independent of any runtime.

``ModelSpec`` travels with the model through the spine and into the bundle manifest
(``edgecomp.json``, see :mod:`edgecomp.bundle`). It never imports torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Normalization(BaseModel):
    """How raw pixels become model input: ``x = (raw * scale - mean[c]) / std[c]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(1.0 / 255.0, description="Multiplier applied to raw values first.")
    mean: list[float] = Field(default_factory=lambda: [0.0], description="Per-channel mean subtracted after scaling.")
    std: list[float] = Field(default_factory=lambda: [1.0], description="Per-channel divisor applied last.")


class ModelSpec(BaseModel):
    """A model's name and I/O contract: input shape and layout, normalisation, labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short name used for the bundle folder.")
    input_name: str = Field("input", description="Name of the input tensor in exported models.")
    input_shape: list[int] = Field(description="Input shape in the model's layout, batch first, e.g. [1, 1, 8, 8].")
    layout: Literal["NCHW", "NHWC", "NC"] = Field("NCHW", description="Input layout of the PyTorch model.")
    dtype: Literal["float32"] = Field("float32", description="Input dtype of the PyTorch model.")
    output_name: str = Field("logits", description="Name of the output tensor in exported models.")
    task: Literal["classification", "other"] = Field("classification", description="What the output means.")
    normalization: Normalization | None = Field(None, description="Pre-processing, if known.")
    labels: list[str] | None = Field(None, description="Class names in output order, if known.")
