"""Bad inputs end with exit code 2, a message naming the cause and the fix, and no bundle."""

import pickle

import pytest
import torch

from edgecomp.cli import main

MODEL_PY = """
import torch
from torch import nn

class Det(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
    def forward(self, x):
        return torch.linalg.det(self.conv(x)[:, 0]).unsqueeze(1) * 3

def det_model():
    return Det()

def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
"""


def run(capsys, *args):
    code = main(["build", *args])
    return code, capsys.readouterr().err


@pytest.fixture
def model_py(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODEL_PY)
    return path


def test_missing_model_file(tmp_path, capsys):
    code, err = run(capsys, str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b"))
    assert code == 2 and "not found" in err and "hint" in err
    assert not (tmp_path / "b").exists()


def test_garbage_model_file(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model at all" * 10)
    code, err = run(capsys, str(garbage), "--input-shape", "1,1,4,4", "--out", str(tmp_path / "b"))
    assert code == 2 and "not a TorchScript or torch.export file" in err
    assert not (tmp_path / "b").exists()


def test_pickled_checkpoint_is_refused_not_unpickled(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"weight": torch.zeros(2)}, ckpt)
    code, err = run(capsys, str(ckpt), "--input-shape", "1,2", "--out", str(tmp_path / "b"))
    assert code == 2 and "will not unpickle" in err and "--weights" in err


def test_unsafe_weights_file_is_refused(tmp_path, model_py, capsys):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(print))
    code, err = run(capsys, f"{model_py}:tiny", "--input-shape", "1,1,4,4", "--weights", str(evil),
                    "--out", str(tmp_path / "b"))
    assert code == 2 and "safely" in err


def test_unknown_target_suggests_the_closest(tmp_path, capsys):
    code, err = run(capsys, "--target", "andriod-arm64", "--out", str(tmp_path / "b"))
    assert code == 2 and "unknown target 'andriod-arm64'" in err and "Did you mean 'android-arm64'" in err


def test_malformed_target_yaml_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: bad\ndescription: x\nruntime: litert\nformats: [tflite]\n"
                   "dtypes: [fp32]\nhardware: cortex-a76\nthreads: many\ncolour: red\n")
    code, err = run(capsys, "--target", str(bad), "--out", str(tmp_path / "b"))
    assert code == 2 and "bad.yaml" in err and "'threads'" in err and "'colour'" in err


def test_unsupported_op_fails_the_build_and_leaves_nothing(tmp_path, model_py, capsys):
    out = tmp_path / "b"
    code, err = run(capsys, f"{model_py}:det_model", "--input-shape", "1,1,3,3", "--out", str(out))
    assert code == 2 and "'_linalg_det' cannot be exported to tflite" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]  # no staging left behind


def test_skip_failed_formats_builds_the_rest(tmp_path, model_py, capsys):
    import json

    out = tmp_path / "b"
    code, _ = run(capsys, f"{model_py}:det_model", "--input-shape", "1,1,3,3", "--out", str(out),
                  "--skip-failed-formats", "--runs", "3")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    status = {a["format"]: a["status"] for a in report["artifacts"]}
    assert status == {"tflite": "failed", "onnx": "ok"}
    assert (out / "model.onnx").is_file() and not (out / "model.tflite").exists()


def test_factory_without_input_shape_asks_for_it(tmp_path, model_py, capsys):
    code, err = run(capsys, f"{model_py}:tiny", "--out", str(tmp_path / "b"))
    assert code == 2 and "--input-shape" in err


def test_bad_recipe_is_a_clear_error(tmp_path, capsys):
    code, err = run(capsys, "--recipe", "quantise.int8", "--out", str(tmp_path / "b"))
    assert code == 2 and "unknown compression method 'quantise.int8'" in err
