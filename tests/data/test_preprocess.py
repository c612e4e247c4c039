"""edgecomp.data.preprocess: the recipe from flags and YAML, applying it, and its round trip through edgecomp.json."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecomp.bundle import Manifest
from edgecomp.data.base import Dataset
from edgecomp.data.checks import spec_with_data
from edgecomp.data.preprocess import Preprocess, make_preprocess, resized_size
from edgecomp.errors import ConfigError
from edgecomp.spec import ImagePreprocess, ModelSpec, Normalization


def _rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_nothing_given_is_none_and_flags_parse_as_the_cli_spells_them():
    assert make_preprocess() is None and make_preprocess(None, resize=None) is None
    pre = make_preprocess(resize="256", center_crop="224", mean="0.485,0.456,0.406", std="0.229,0.224,0.225",
                          channels="bgr", layout="nhwc", scale="1")
    assert pre.image.resize == [256] and pre.image.center_crop == [224, 224]
    assert pre.image.channels == "BGR" and pre.image.layout == "NHWC" and pre.image.interpolation == "bilinear"
    assert pre.normalization == Normalization(scale=1.0, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert make_preprocess(resize="240,320").image.resize == [240, 320]
    assert make_preprocess(mean="0.5").image.model_fields_set == set()  # channels/layout left to the model


def test_a_yaml_file_gives_the_recipe_and_flags_override_it(tmp_path):
    path = tmp_path / "pre.yaml"
    path.write_text("resize: 256\ncenter_crop: [224, 224]\nmean: [0.5, 0.5, 0.5]\nstd: 0.5\nchannels: BGR\n")
    pre = make_preprocess(path, channels="RGB")
    assert pre.image.resize == [256] and pre.image.center_crop == [224, 224] and pre.image.channels == "RGB"
    assert pre.normalization.mean == [0.5, 0.5, 0.5] and pre.normalization.std == [0.5]


@pytest.mark.parametrize("text, complaint", [
    ("resize: 256\nnormalise: true\n", "unknown preprocessing key(s) normalise"),
    ("- resize\n", "holds a list"),
    ("resize: [1, 2\n", "not valid YAML"),
])
def test_a_bad_yaml_file_is_named(tmp_path, text, complaint):
    path = tmp_path / "pre.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint.replace("(", r"\(").replace(")", r"\)")) as info:
        make_preprocess(path)
    assert info.value.hint


@pytest.mark.parametrize("flags, complaint", [
    ({"channels": "RGBA"}, "channels"),
    ({"layout": "CHW"}, "layout"),
    ({"resize": "1,2,3"}, r"resize must be \[S\] or \[H, W\]"),
    ({"resize": "0"}, "resize must be"),
    ({"center_crop": "a,b"}, "not a size"),
    ({"mean": "x"}, "not a list of numbers"),
    ({"std": "1,0,1"}, "contains 0"),
    ({"interpolation": "lanczos"}, "interpolation"),
])
def test_bad_flags_are_config_errors_with_a_fix(flags, complaint):
    with pytest.raises(ConfigError, match=complaint) as info:
        make_preprocess(**flags)
    assert info.value.hint


def test_a_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the preprocessing file"):
        make_preprocess(tmp_path / "nope.yaml")


@pytest.mark.parametrize("size, resize, want", [
    ((40, 30), [20], (26, 20)), ((30, 40), [20], (20, 26)), ((30, 30), [20], (20, 20)),
    ((40, 30), [10, 12], (12, 10)), ((40, 30), None, (40, 30)),
])
def test_resized_size(size, resize, want):
    assert resized_size(*size, resize) == want


def test_applying_the_recipe_matches_the_steps_done_by_hand():
    rgb = _rgb(40, 30)
    pre = Preprocess(ImagePreprocess(channels="BGR", resize=[20], center_crop=[16, 18]),
                     Normalization(mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4]))
    resized = np.asarray(Image.fromarray(rgb).resize((26, 20), Image.Resampling.BILINEAR), np.float32)
    crop = resized[2:18, 4:22][..., ::-1]  # top (20-16)//2, left (26-18)//2; BGR
    want = ((crop / 255 - [0.4, 0.5, 0.6]) / [0.2, 0.3, 0.4]).transpose(2, 0, 1)  # mean/std in BGR order
    x = pre(Image.fromarray(rgb))
    assert x.shape == (3, 16, 18) and x.dtype == np.float32 and pre.output_size(40, 30) == (16, 18)
    np.testing.assert_allclose(x, want, atol=1e-5)
    nhwc = Preprocess(pre.image.model_copy(update={"layout": "NHWC"}), pre.normalization)(Image.fromarray(rgb))
    np.testing.assert_array_equal(nhwc, x.transpose(1, 2, 0))
    gray = Preprocess(ImagePreprocess(channels="L"), Normalization())(Image.fromarray(rgb))
    np.testing.assert_allclose(gray[0], np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255)


def test_the_recipe_round_trips_through_the_manifest():
    """What the build records (spec_with_data -> edgecomp.json) reads back as a recipe making the same inputs."""
    pre = make_preprocess(resize="20", center_crop="16", mean="0.485,0.456,0.406", std="0.229,0.224,0.225",
                          channels="BGR", interpolation="bicubic")
    x = np.zeros((4, 3, 16, 16), np.float32)
    data = Dataset.from_arrays("d", x, np.zeros(4, np.int64), x, np.zeros(4, np.int64), x, np.zeros(4, np.int64),
                               preprocess=pre, labels=["a", "b"])
    spec = spec_with_data(ModelSpec(name="m", input_shape=[1, 3, 16, 16]), data)
    manifest = Manifest(schema_version=1, edgecomp_version="t", created="now", target="t", model=spec, files=[])
    back = Manifest.model_validate_json(manifest.model_dump_json()).model
    again = Preprocess(back.image_preprocess, back.normalization)
    assert again == pre and back.labels == ["a", "b"]
    img = Image.fromarray(_rgb(31, 23))
    np.testing.assert_array_equal(again(img), pre(img))
