"""What an app needs to know about a model's input and output, independent of any runtime.

``ModelSpec`` travels with the model through the spine and into the bundle manifest
(``edgecomp.json``, see :mod:`edgecomp.bundle`). It never imports torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class Normalization(BaseModel):
    """How raw pixels become model input: ``x = (raw * scale - mean[c]) / std[c]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = Field(1.0 / 255.0, description="Multiplier applied to raw values first.")
    mean: list[float] = Field(default_factory=lambda: [0.0], description="Per-channel mean subtracted after scaling.")
    std: list[float] = Field(default_factory=lambda: [1.0], description="Per-channel divisor applied last.")


class ImagePreprocess(BaseModel):
    """How an image file becomes the model's input before normalisation: decode, colour order, resize, crop, layout.

    Recorded in edgecomp.json (with ``ModelSpec.normalization``) so the demo app and ``edgecomp verify`` feed the
    model exactly what calibration, fine-tuning and evaluation fed it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: Literal["RGB", "BGR", "L"] = Field("RGB", description="Channel order after decoding (L: grayscale).")
    resize: list[int] | None = Field(
        None, description="[S]: scale the shorter side to S keeping the aspect ratio (the longer side rounded down); "
                          "[H, W]: resize to exactly H x W."
    )
    center_crop: list[int] | None = Field(
        None, description="[H, W] cut from the centre after resizing (offsets rounded down).")
    interpolation: Literal["bilinear", "nearest", "bicubic"] = Field(
        "bilinear", description="Resampling filter, as Pillow applies it (antialiased when shrinking).")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Layout of the tensor handed to the model.")

    @field_validator("resize", "center_crop")
    @classmethod
    def _positive_sizes(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        """resize is [S] or [H, W], center_crop is [H, W]; every size is positive."""
        if value is None:
            return value
        counts, form = ((1, 2), "[S] or [H, W]") if info.field_name == "resize" else ((2,), "[H, W]")
        if len(value) not in counts or any(v <= 0 for v in value):
            raise ValueError(f"{info.field_name} must be {form} of positive sizes, got {value}")
        return value


class OutputSpec(BaseModel):
    """One output tensor of the PyTorch model, in the order the model returns them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Name of the output tensor in exported models (ONNX, CoreML).")
    shape: list[int] = Field(description="Shape for the spec's input shape, batch first, e.g. [1, 10].")
    kind: Literal["logits", "values"] = Field(
        "values", description="logits: class scores (argmax = class; parity also compares top-1); values: anything "
                              "else (box coordinates, embeddings), compared value by value.")


class ModelSpec(BaseModel):
    """A model's name and I/O contract: input shape and layout, normalisation, labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short name used for the bundle folder.")
    input_name: str = Field("input", description="Name of the input tensor in exported models.")
    input_shape: list[int] = Field(description="Input shape in the model's layout, batch first, e.g. [1, 1, 8, 8].")
    layout: Literal["NCHW", "NHWC", "NC"] = Field("NCHW", description="Input layout of the PyTorch model.")
    dtype: Literal["float32"] = Field("float32", description="Input dtype of the PyTorch model.")
    output_name: str = Field("logits", description="Name of the output tensor in exported models (one output).")
    outputs: list[OutputSpec] | None = Field(
        None, description="Every output tensor in order (name, shape, kind), filled in when the model is loaded; "
                          "None: one output called output_name.")
    task: Literal["classification", "other"] = Field("classification", description="What the output means.")
    normalization: Normalization | None = Field(None, description="Pre-processing, if known.")
    image_preprocess: ImagePreprocess | None = Field(
        None, description="How image files were turned into inputs (image-folder data), if known."
    )
    labels: list[str] | None = Field(None, description="Class names in output order, if known.")

    def output_names(self) -> list[str]:
        """Names of the model's outputs in order: those of ``outputs``, else ``[output_name]``."""
        return [o.name for o in self.outputs] if self.outputs else [self.output_name]

    def output_kinds(self) -> list[str] | None:
        """Kind of each output in order ('logits' or 'values'), or None when ``outputs`` is not known."""
        return [o.kind for o in self.outputs] if self.outputs else None
