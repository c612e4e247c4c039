"""edgecomp.data.image_folder: layouts, seeded splits, lazy decoding, the recipe settled against the model, bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.data import image_folder
from edgecomp.data.checks import check_data_fits
from edgecomp.data.image_folder import load_image_folder
from edgecomp.data.preprocess import make_preprocess
from edgecomp.data.sources import load_data
from edgecomp.errors import ConfigError
from edgecomp.metrics import load_metric
from edgecomp.spec import ModelSpec
from tests.data.folder_helpers import CLASSES, image, make_folder

SPEC = ModelSpec(name="m", input_shape=[1, 3, 16, 16])


def test_class_folders_split_60_20_20_per_class_with_sorted_labels(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=10, classes=("owl", "cat", "dog"))
    data = load_data(str(root), seed=0, spec=SPEC)
    assert data.labels == ["cat", "dog", "owl"]
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        targets = data.split(split).targets
        assert [targets.count(c) for c in range(3)] == [n, n, n], split
    every = [p for s in ("train", "val", "test") for p in data.split(s).paths]
    assert len(set(every)) == 30  # no file in two splits
    x, y = data.split("train")[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 16, 16)
    assert data.labels[y] == os.path.basename(os.path.dirname(data.train.paths[0]))
    assert data.input_shape() == (3, 16, 16) and data.num_classes == 3
    assert "3 classes, 30 images" in data.source


def test_items_are_the_files_pixels_scaled_by_default(tmp_path):
    root = make_folder(tmp_path / "f", per_class=5)
    data = load_image_folder(root, None, spec=SPEC)
    x, _ = data.test[0]
    want = np.asarray(image_for(data.test.paths[0]), np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(x.numpy(), want, atol=1e-6)
    assert data.preprocess.image.resize is None  # already the model's 16x16: nothing resized


def image_for(path: str):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def test_the_split_is_seeded(tmp_path):
    root = make_folder(tmp_path / "f", per_class=10)
    first, again = (load_image_folder(root, None, seed=3, spec=SPEC) for _ in range(2))
    other = load_image_folder(root, None, seed=4, spec=SPEC)
    assert first.train.paths == again.train.paths and first.test.paths == again.test.paths
    assert first.fingerprint() == again.fingerprint()
    assert set(first.test.paths) != set(other.test.paths)


def test_split_folders_are_used_as_they_are_and_val_is_a_seeded_fifth_of_train(tmp_path):
    make_folder(tmp_path / "f" / "train", per_class=10)
    make_folder(tmp_path / "f" / "test", per_class=3, seed=1)
    data = load_image_folder(tmp_path / "f", None, seed=0, spec=SPEC)
    assert data.labels == list(CLASSES)
    assert all("/test/" in p for p in data.test.paths) and len(data.test) == 9
    assert [data.val.targets.count(c) for c in range(3)] == [2, 2, 2]
    assert not set(data.val.paths) & set(data.train.paths) and len(data.train) == 24
    make_folder(tmp_path / "f" / "val", per_class=4, seed=2)
    data = load_image_folder(tmp_path / "f", None, seed=0, spec=SPEC)
    assert len(data.train) == 30 and len(data.val) == 12 and all("/val/" in p for p in data.val.paths)


def test_loading_decodes_nothing_and_reading_decodes_only_what_is_asked(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "f", per_class=20)
    decoded = []
    real = image_folder.decode
    monkeypatch.setattr(image_folder, "decode", lambda path, pre: decoded.append(path) or real(path, pre))
    data = load_image_folder(root, None, spec=SPEC, workers=0)
    assert decoded == []
    x, _ = data.sample("train", 3, seed=1)
    assert len(decoded) == 3 and x.shape == (3, 3, 16, 16)
    data.calibration(5, seed=0)
    assert len(decoded) == 8
    first = next(iter(data.batches("train", batch_size=4, shuffle=True)))
    assert len(decoded) == 12 and tuple(first[0].shape) == (4, 3, 16, 16)


def test_worker_processes_stream_the_same_batches_in_the_same_order(tmp_path):
    root = make_folder(tmp_path / "f", per_class=6)
    data = load_image_folder(root, None, spec=SPEC)
    assert data.workers == min(2, os.cpu_count() or 1)
    serial = load_image_folder(root, None, spec=SPEC, workers=0)
    gen = lambda: torch.Generator().manual_seed(7)
    a = list(data.batches("train", 4, shuffle=True, generator=gen()))
    b = list(serial.batches("train", 4, shuffle=True, generator=gen()))
    assert len(a) == len(b) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_fingerprint_follows_the_files(tmp_path):
    root = make_folder(tmp_path / "f", per_class=5)
    before = load_image_folder(root, None, spec=SPEC).fingerprint()
    victim = min((root / "dog").iterdir())
    image(99).save(victim)
    os.utime(victim, ns=(1, 1))
    assert load_image_folder(root, None, spec=SPEC).fingerprint() != before


def test_mixed_sizes_are_resized_to_the_model_input_and_the_notes_say_so(tmp_path):
    root = make_folder(tmp_path / "f", per_class=5, size=(20, 24))
    image(5, (40, 30)).save(root / "cat" / "big.png")
    data = load_image_folder(root, None, spec=SPEC)
    assert data.preprocess.image.resize == [16, 16]
    assert any("2 size(s)" in n and "resized to 16x16" in n for n in data.notes), data.notes
    assert {tuple(data.test[i][0].shape) for i in range(len(data.test))} == {(3, 16, 16)}


def test_channels_and_layout_follow_the_model_unless_given(tmp_path):
    root = make_folder(tmp_path / "f", per_class=5)
    gray = load_image_folder(root, None, spec=ModelSpec(name="g", input_shape=[1, 1, 16, 16]))
    assert gray.preprocess.image.channels == "L" and gray.input_shape() == (1, 16, 16)
    nhwc = load_image_folder(root, None, spec=ModelSpec(name="n", input_shape=[1, 16, 16, 3], layout="NHWC"))
    assert nhwc.preprocess.image.layout == "NHWC" and nhwc.input_shape() == (16, 16, 3)
    bgr = load_image_folder(root, make_preprocess(channels="bgr", mean="0.5"), spec=SPEC)
    assert bgr.preprocess.image.channels == "BGR" and bgr.preprocess.normalization.mean == [0.5]
    rgb = load_image_folder(root, None, spec=SPEC)
    np.testing.assert_allclose(bgr.test[0][0].numpy(), rgb.test[0][0].numpy()[::-1] - 0.5, atol=1e-6)


# ------------------------------------------------------------------------------------------- bad input
def _error(root, pre=None, spec=SPEC) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_image_folder(root, pre, spec=spec)
    assert info.value.hint
    return info.value


def test_a_folder_without_images_says_where_to_put_them(tmp_path):
    (tmp_path / "f" / "cat").mkdir(parents=True)
    (tmp_path / "f" / "dog").mkdir()
    (tmp_path / "f" / "dog" / "notes.txt").write_text("not an image")
    err = _error(tmp_path / "f")
    assert "no images" in err.message and "root/<class>/" in err.hint


def test_images_lying_directly_in_the_folder_are_named(tmp_path):
    (tmp_path / "f").mkdir()
    image(1).save(tmp_path / "f" / "a.png")
    err = _error(tmp_path / "f")
    assert "no class folders" in err.message and "a.png" in err.message


def test_a_single_class_is_refused(tmp_path):
    err = _error(make_folder(tmp_path / "f", classes=("cat",)))
    assert "single class folder (cat)" in err.message and "two or more" in err.message


def test_an_empty_class_folder_is_refused(tmp_path):
    root = make_folder(tmp_path / "f", per_class=5)
    (root / "zebra").mkdir()
    assert "zebra" in _error(root).message


def test_a_few_unreadable_files_are_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "f", per_class=10)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = (root / "dog" / "000.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    data = load_image_folder(root, None, spec=SPEC)
    assert sum(data.size(s) for s in ("train", "val", "test")) == 30
    assert any("skipped 2 unreadable image file(s) of 32" in n and "broken.png" in n for n in data.notes), data.notes


def test_too_many_unreadable_files_fail_naming_the_threshold(tmp_path):
    root = make_folder(tmp_path / "f", per_class=6)
    for i in range(3):
        (root / "owl" / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    err = _error(root)
    assert "3 of 21 image files" in err.message and "10%" in err.message and "bad0.jpg" in err.message


def test_split_folders_without_test_are_refused(tmp_path):
    make_folder(tmp_path / "f" / "train", per_class=5)
    make_folder(tmp_path / "f" / "val", per_class=2)
    assert "no test/" in _error(tmp_path / "f").message


def test_a_resize_that_keeps_aspect_on_mixed_shapes_needs_a_crop(tmp_path):
    root = make_folder(tmp_path / "f", per_class=5, size=(16, 16))
    image(3, (32, 16)).save(root / "cat" / "wide.png")
    err = _error(root, make_preprocess(resize="16"))
    assert "2 sizes" in err.message and "--center-crop" in err.hint
    assert load_image_folder(root, make_preprocess(resize="16", center_crop="16"), spec=SPEC).input_shape() == (3, 16, 16)


def test_a_crop_larger_than_the_image_is_refused(tmp_path):
    err = _error(make_folder(tmp_path / "f", per_class=5), make_preprocess(center_crop="20"))
    assert "too small to crop" in err.message and "--resize" in err.hint


def test_mean_of_the_wrong_length_is_refused(tmp_path):
    err = _error(make_folder(tmp_path / "f", per_class=5), make_preprocess(mean="0.1,0.2"))
    assert "mean has 2 values" in err.message


def test_more_classes_than_the_model_has_outputs_is_caught_from_the_folders_targets(tmp_path):
    data = load_image_folder(make_folder(tmp_path / "f", per_class=5), None, spec=SPEC)
    data.metric = load_metric(None)
    two = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ConfigError, match="class index 2 but the model has 2 outputs") as info:
        check_data_fits(two, SPEC, data)
    assert "sorted folder names" in info.value.hint
    data.labels = None  # the check reads the split's .targets, not the labels
    with pytest.raises(ConfigError, match="class index 2"):
        check_data_fits(two, SPEC, data)


def test_preprocessing_flags_for_data_that_is_not_a_folder_are_refused(tmp_path):
    root = make_folder(tmp_path / "f", per_class=5)
    shutil.make_archive(str(tmp_path / "f"), "zip", root)
    with pytest.raises(ConfigError, match="image folders only"):
        load_data(str(tmp_path / "f.zip"), preprocess=make_preprocess(resize="16"))


# ------------------------------------------------------------------------------------------ the CLI
FACTORY = '''
import torch
from torch import nn


def factory():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    model.input_shape = [1, 3, 16, 16]
    return model
'''


def test_build_on_an_image_folder_records_the_recipe_in_the_bundle(tmp_path, capsys):
    import json

    from edgecomp.cli import main

    (tmp_path / "model.py").write_text(FACTORY)
    folder = make_folder(tmp_path / "pets", per_class=6, size=(24, 20))
    (tmp_path / "pre.yaml").write_text("mean: [0.5, 0.5, 0.5]\nstd: 0.25\n")
    out = tmp_path / "bundle"
    argv = ["build", f"{tmp_path / 'model.py'}:factory", "--data", str(folder), "--preprocess", str(tmp_path / "pre.yaml"),
            "--resize", "18", "--center-crop", "16", "--recipe", "", "--formats", "onnx", "--runs", "2", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    model = json.loads((out / "edgecomp.json").read_text())["model"]
    assert model["labels"] == list(CLASSES)
    assert model["image_preprocess"] == {"channels": "RGB", "resize": [18], "center_crop": [16, 16],
                                         "interpolation": "bilinear", "layout": "NCHW"}
    assert model["normalization"] == {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.25]}
    report = json.loads((out / "report.json").read_text())
    assert report["parity_inputs"] == "3 inputs of the pets test split"  # 6 per class: 4/1/1


@pytest.mark.parametrize("case, words", [
    ("single", "single class folder"),
    ("yaml", "unknown preprocessing key(s) size"),
    ("crop", "too small to crop"),
])
def test_bad_image_folder_input_exits_2_and_writes_nothing(tmp_path, capsys, case, words):
    from edgecomp.cli import main

    (tmp_path / "model.py").write_text(FACTORY)
    folder = make_folder(tmp_path / "pets", per_class=5, classes=("cat",) if case == "single" else CLASSES)
    (tmp_path / "pre.yaml").write_text("size: 16\n")
    extra = {"single": [], "yaml": ["--preprocess", str(tmp_path / "pre.yaml")], "crop": ["--center-crop", "32"]}[case]
    out = tmp_path / "bundle"
    argv = ["build", f"{tmp_path / 'model.py'}:factory", "--data", str(folder), "--recipe", "", "--formats", "onnx",
            "--runs", "2", "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "hint:" in err and "Traceback" not in err
    assert not out.exists()
