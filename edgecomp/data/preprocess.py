"""How image files become model inputs: the recipe (``Preprocess``) and applying it to a decoded image.

The recipe has two halves, both recorded in the bundle's edgecomp.json so apps do exactly the same:
``image`` (``edgecomp.spec.ImagePreprocess``: colour order, resize, crop, layout) and ``normalization``
(``edgecomp.spec.Normalization``: ``x = (raw * scale - mean[c]) / std[c]``, raw being the 8-bit pixel value).

Applied in this order, by Pillow: convert to RGB (or L), resize, centre-crop, then as float32: reorder the
channels (BGR), normalise (mean and std are per channel of the result, so in B, G, R order for BGR), and lay out as CHW (NCHW models) or HWC (NHWC). The Android demo's
``Preprocessor.kt`` implements the same steps (its resampling mirrors Pillow's), and
``tests/data/test_preprocess_contract.py`` holds the two to the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from edgecomp.errors import ConfigError
from edgecomp.spec import ImagePreprocess, Normalization

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}
IMAGE_KEYS = ("channels", "resize", "center_crop", "interpolation", "layout")
NORMALIZATION_KEYS = ("scale", "mean", "std")
YAML_HINT = ("write the file as flat keys, e.g. 'resize: 256', 'center_crop: 224', 'mean: [0.485, 0.456, 0.406]', "
             "'std: [0.229, 0.224, 0.225]', 'scale: 0.00392156862745098', 'channels: RGB', 'layout: NCHW', "
             "'interpolation: bilinear'")


@dataclass(frozen=True)
class Preprocess:
    """An image-folder preprocessing recipe: decode/resize/crop (``image``), then normalise (``normalization``)."""

    image: ImagePreprocess
    normalization: Normalization

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the input an image of ``width`` x ``height`` pixels becomes."""
        w, h = resized_size(width, height, self.image.resize)
        crop = self.image.center_crop
        return (crop[0], crop[1]) if crop else (h, w)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """The model input (float32, CHW or HWC) for a decoded image."""
        im, norm = self.image, self.normalization
        img = img.convert("L" if im.channels == "L" else "RGB")
        if im.resize:
            size = resized_size(img.width, img.height, im.resize)
            if size != img.size:
                img = img.resize(size, RESAMPLE[im.interpolation])
        if im.center_crop:
            ch, cw = im.center_crop
            if cw > img.width or ch > img.height:
                raise ValueError(f"cannot crop {cw}x{ch} from a {img.width}x{img.height} image")
            left, top = (img.width - cw) // 2, (img.height - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        x = np.asarray(img, dtype=np.float32)
        x = x[..., None] if x.ndim == 2 else x[..., ::-1] if im.channels == "BGR" else x
        x = (x * np.float32(norm.scale) - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1) if im.layout == "NCHW" else x, dtype=np.float32)


def resized_size(width: int, height: int, resize: list[int] | None) -> tuple[int, int]:
    """(width, height) after ``resize``: [S] scales the shorter side to S (the longer side rounds down), [H, W]
    is exact, None keeps the size."""
    if not resize:
        return width, height
    if len(resize) == 2:
        return resize[1], resize[0]
    s = resize[0]
    return (s, s * height // width) if width <= height else (s * width // height, s)


def _sizes(text: str | int | list, key: str, count: int | None = None) -> list[int]:
    """'256', 256, '224,224' or [224, 224] as a list of ints (a crop of one size is square)."""
    values = text if isinstance(text, list) else str(text).replace("x", ",").split(",")
    try:
        sizes = [int(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} {text!r} is not a size like 224 or 224,224",
                          f"give {key} as one number or H,W") from exc
    return sizes * 2 if count == 2 and len(sizes) == 1 else sizes


def _floats(text: str | float | list, key: str) -> list[float]:
    """'0.485,0.456,0.406', 0.5 or a list as a list of floats."""
    values = text if isinstance(text, list) else str(text).split(",")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} {text!r} is not a list of numbers", f"give {key} like 0.485,0.456,0.406") from exc


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The keys of a preprocessing YAML file (flat: see ``YAML_HINT``), checked against the known keys."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the preprocessing file {p}: {exc.strerror or exc}",
                          "pass --preprocess with the path of a readable YAML file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}", YAML_HINT) from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{p} holds a {type(data).__name__}, not a mapping of preprocessing keys", YAML_HINT)
    unknown = sorted(set(data) - set(IMAGE_KEYS) - set(NORMALIZATION_KEYS))
    if unknown:
        raise ConfigError(f"{p}: unknown preprocessing key(s) {', '.join(map(str, unknown))}",
                          f"use only {', '.join(IMAGE_KEYS + NORMALIZATION_KEYS)}")
    return data


def make_preprocess(file: str | Path | None = None, **flags: Any) -> Preprocess | None:
    """The recipe from a YAML file and/or flags (flags win); None when neither gives anything.

    ``flags`` are the keys of ``IMAGE_KEYS`` and ``NORMALIZATION_KEYS`` as the CLI spells them: sizes and lists as
    '224,224' / '0.5,0.5,0.5' strings or as numbers and lists; None means not given. Keys not given keep
    ``ImagePreprocess``'s and ``Normalization``'s defaults (the image loader fills channels and layout from the
    model when they are not given, see ``edgecomp.data.image_folder``).
    """
    given = read_recipe_file(file) if file else {}
    given.update({k: v for k, v in flags.items() if v is not None})
    unknown = sorted(set(given) - set(IMAGE_KEYS) - set(NORMALIZATION_KEYS))
    if unknown:
        raise ValueError(f"unknown preprocessing keys: {unknown}")
    if not given:
        return None
    if "resize" in given:
        given["resize"] = _sizes(given["resize"], "resize")
    if "center_crop" in given:
        given["center_crop"] = _sizes(given["center_crop"], "center crop", count=2)
    for key in ("mean", "std"):
        if key in given:
            given[key] = _floats(given[key], key)
    for key in ("channels", "layout"):
        if key in given and isinstance(given[key], str):
            given[key] = given[key].upper()
    if "scale" in given:
        given["scale"] = _floats(given["scale"], "scale")[0]
    try:
        image = ImagePreprocess(**{k: v for k, v in given.items() if k in IMAGE_KEYS})
        norm = Normalization(**{k: v for k, v in given.items() if k in NORMALIZATION_KEYS})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad preprocessing recipe: {problems}",
                          "resize is S or H,W; center crop H,W; channels RGB, BGR or L; layout NCHW or NHWC; "
                          "interpolation bilinear, bicubic or nearest") from exc
    if any(s == 0 for s in norm.std):
        raise ConfigError(f"std {norm.std} contains 0", "every std must be non-zero (1 leaves a channel as it is)")
    return Preprocess(image, norm)


def check_channels(pre: Preprocess) -> None:
    """Raise a ConfigError when mean/std have a count other than 1 or the image's channel count."""
    channels = 1 if pre.image.channels == "L" else 3
    for key in ("mean", "std"):
        values = getattr(pre.normalization, key)
        if len(values) not in (1, channels):
            raise ConfigError(f"{key} has {len(values)} values but the images have {channels} channel(s) "
                              f"({pre.image.channels})", f"give {key} one value, or one per channel")
