"""Checks that a dataset fits the model before anything is trained or calibrated on it.

Each mismatch is a ``ConfigError`` naming what differs and how to fix it: inputs of another shape (NHWC arrays for
an NCHW model in particular), class targets beyond the model's outputs, a model that fails on a real input.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecomp.data.base import Dataset
from edgecomp.errors import ConfigError
from edgecomp.metrics import first_output
from edgecomp.spec import ModelSpec


def check_data_fits(model: nn.Module, spec: ModelSpec, data: Dataset) -> None:
    """Raise a ConfigError when ``data``'s inputs or class targets do not fit ``model`` (see module docstring)."""
    got, want = tuple(data.input_shape()), tuple(spec.input_shape[1:])
    if got != want:
        if len(got) == 3 and len(want) == 3 and (got[2], got[0], got[1]) == want:
            raise ConfigError(f"the data's inputs are {list(got)} (channels last, NHWC) but the model takes "
                              f"{list(want)} (NCHW)", "transpose the arrays: x = x.transpose(0, 3, 1, 2)")
        raise ConfigError(f"the data's inputs are {list(got)} but the model takes {list(want)} "
                          f"(input shape {spec.input_shape})",
                          "give data of the model's input shape, or pass --input-shape to match the data")
    x, _ = data.sample("train", 2)
    model.eval()
    try:
        with torch.no_grad():
            out = first_output(model(torch.as_tensor(x)))
    except Exception as exc:
        raise ConfigError(f"the model fails on the data's inputs ({type(exc).__name__}: {exc})",
                          "check that the data is preprocessed the way the model expects") from exc
    if data.metric is None or not data.metric.is_accuracy:
        return
    if out.ndim != 2:
        raise ConfigError(f"{data.metric.description} needs class logits (batch, classes) but the model's first "
                          f"output has shape {list(out.shape)}",
                          "pass --metric package.module:function for outputs that are not class scores")
    n_out = int(out.shape[1])
    for split in ("train", "val", "test"):
        t = data.class_targets(split)
        if t is None:
            continue
        if t.dtype.kind not in "iu":
            raise ConfigError(f"the {split} split's targets are {t.dtype}, not class indices",
                              "store integer labels, or pass --metric for other targets")
        if len(t) and int(t.max()) >= n_out:
            raise ConfigError(f"the {split} split has class index {int(t.max())} but the model has {n_out} outputs "
                              f"(classes 0..{n_out - 1})", "check that the data's classes are the model's classes "
                              "(an image folder's classes are its sorted folder names)")
        if len(t) and int(t.min()) < 0:
            raise ConfigError(f"the {split} split has a negative class index {int(t.min())}",
                              "labels must be 0, 1, 2, ...")
    if data.labels and len(data.labels) != n_out:
        raise ConfigError(f"the data names {len(data.labels)} classes but the model has {n_out} outputs",
                          "give the model one output per class folder (or the data the model's classes)")


def spec_with_data(spec: ModelSpec, data: Dataset) -> ModelSpec:
    """``spec`` completed from the data: class names and image preprocessing when the spec does not have them."""
    update: dict = {}
    if data.labels and not spec.labels:
        update["labels"] = list(data.labels)
    pre = getattr(data, "preprocess", None)
    if pre is not None:
        image = getattr(pre, "image", None)
        norm = getattr(pre, "normalization", None)
        if image is not None:
            update["image_preprocess"] = image
        if norm is not None:
            update["normalization"] = norm
    return spec.model_copy(update=update) if update else spec


