"""Dataset factories, user metrics and streaming: the parts of --data/--metric that are not files of images."""

from __future__ import annotations

import json
import textwrap
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.cli import main
from edgecomp.data import Dataset, digits
from edgecomp.data.checks import check_data_fits
from edgecomp.data.factory import load_factory
from edgecomp.errors import ConfigError
from edgecomp.finetune import FinetuneConfig, finetune
from edgecomp.metrics import evaluate, load_metric
from edgecomp.spec import ModelSpec

FACTORY = '''
import numpy as np
import torch
from torch.utils.data import TensorDataset, DataLoader
from edgecomp.data import digits

def _split(name):
    x, y = digits().arrays(name)
    return TensorDataset(torch.as_tensor(x), torch.as_tensor(y))

def splits():
    return {"train": _split("train"), "val": _split("val"), "test": DataLoader(_split("test"), batch_size=8),
            "labels": [str(i) for i in range(10)]}

def one():
    x, y = digits().arrays("train")
    return TensorDataset(torch.as_tensor(x), torch.as_tensor(y))

def raises():
    raise RuntimeError("the bucket is not mounted")

def wrong_type():
    return [1, 2, 3]

def wrong_items():
    return TensorDataset(torch.zeros(10, 1, 8, 8, dtype=torch.int64), torch.zeros(10))

def nhwc():
    x, y = digits().arrays("train")
    return TensorDataset(torch.as_tensor(x.transpose(0, 2, 3, 1)), torch.as_tensor(y))

def accuracy_over_batches(batches):
    hit = total = 0
    for out, y in batches:
        hit += int((out.argmax(1) == y).sum()); total += len(y)
    return 100.0 * hit / total

class Error:
    name = "error_rate_neg"
    def __init__(self):
        self.wrong, self.total = 0, 0
    def update(self, out, y):
        self.wrong += int((out.argmax(1) != y).sum()); self.total += len(y)
    def compute(self):
        return -self.wrong / self.total

def nan_metric(batches):
    return float("nan")

def raising_metric(batches):
    raise ZeroDivisionError("no boxes")

class Model(torch.nn.Module):
    input_shape = [1, 1, 8, 8]
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                        torch.nn.Linear(32, 10))
    def forward(self, x):
        return self.body(x)

def model():
    torch.manual_seed(0)
    return Model()
'''


@pytest.fixture(scope="module")
def user_py(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "user_data.py"
    path.write_text(textwrap.dedent(FACTORY))
    return path


@pytest.fixture(scope="module")
def trained(user_py, tmp_path_factory):
    """The factory's MLP trained a little on digits (outputs O(1), accuracy well above chance), and its weights."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_data_trained", user_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.model()
    finetune(model, digits(), FinetuneConfig(epochs=8, lr=3e-3))
    weights = tmp_path_factory.mktemp("w") / "mlp.pt"
    torch.save(model.state_dict(), weights)
    return model, weights


def test_factory_with_split_dict_keeps_its_splits_and_labels(user_py):
    data = load_factory(f"{user_py}:splits")
    ref = digits()
    assert [data.size(s) for s in ("train", "val", "test")] == [ref.size(s) for s in ("train", "val", "test")]
    assert data.labels == [str(i) for i in range(10)]
    assert np.array_equal(data.arrays("test")[0], ref.arrays("test")[0])  # the DataLoader's dataset was used


def test_factory_with_one_dataset_is_split_60_20_20_with_the_seed(user_py):
    a, b = load_factory(f"{user_py}:one", seed=3), load_factory(f"{user_py}:one", seed=3)
    n = digits().size("train")
    assert [a.size(s) for s in ("train", "val", "test")] == [int(0.6 * n), int(0.2 * n), n - int(0.6 * n) - int(0.2 * n)]
    assert np.array_equal(a.arrays("val")[0], b.arrays("val")[0])
    assert not np.array_equal(a.arrays("val")[0], load_factory(f"{user_py}:one", seed=4).arrays("val")[0])


@pytest.mark.parametrize("attr, needle", [
    ("raises", "raised RuntimeError: the bucket is not mounted"),
    ("wrong_type", "not a map-style torch Dataset"),
    ("wrong_items", "not float tensors"),
    ("missing", "'missing' is not defined"),
])
def test_a_broken_factory_is_a_config_error_naming_it(user_py, attr, needle):
    with pytest.raises(ConfigError) as err:
        load_factory(f"{user_py}:{attr}")
    assert needle in str(err.value) and err.value.hint


def test_nhwc_arrays_for_an_nchw_model_are_refused_with_the_transpose(user_py):
    data = load_factory(f"{user_py}:nhwc")
    spec = ModelSpec(name="m", input_shape=[1, 1, 8, 8])
    with pytest.raises(ConfigError) as err:
        check_data_fits(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), spec, data)
    assert "NHWC" in str(err.value) and "transpose(0, 3, 1, 2)" in err.value.hint


def test_class_targets_beyond_the_models_outputs_are_refused():
    data = digits()
    data.metric = load_metric("top1")
    spec = ModelSpec(name="m", input_shape=[1, 1, 8, 8])
    with pytest.raises(ConfigError, match="class index 9 but the model has 5 outputs"):
        check_data_fits(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), spec, data)


def test_custom_metrics_function_and_class_agree_with_top1(user_py, trained):
    model, _ = trained
    data = digits()
    top1 = evaluate(model, data, "test", load_metric("top1"))
    assert 60 < top1 < 100
    assert evaluate(model, data, "test", load_metric(f"{user_py}:accuracy_over_batches")) == pytest.approx(top1)
    error = load_metric(f"{user_py}:Error")
    assert error.name == "error_rate_neg" and not error.is_accuracy
    assert evaluate(model, data, "test", error) == pytest.approx(top1 / 100 - 1)
    assert evaluate(model, data, "test", load_metric("top5")) >= top1


@pytest.mark.parametrize("attr, needle", [("nan_metric", "returned NaN"), ("raising_metric", "ZeroDivisionError")])
def test_a_metric_that_fails_is_a_config_error(user_py, trained, attr, needle):
    with pytest.raises(ConfigError, match=needle):
        evaluate(trained[0], digits(), "val", load_metric(f"{user_py}:{attr}"))


def test_unknown_metric_name_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        load_metric("f1score")
    assert "top1, top5" in err.value.hint


class _NoHoarding(torch.utils.data.Dataset):
    """Generated digits-like samples that raise if more than ``limit`` of them are alive at once (materialised)."""

    def __init__(self, n: int, limit: int) -> None:
        self.n, self.limit, self.alive, self.reads = n, limit, 0, 0
        self.targets = [i % 10 for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def _gone(self) -> None:
        self.alive -= 1

    def __getitem__(self, i: int):
        if self.alive >= self.limit:
            raise MemoryError(f"{self.alive} samples held at once: the dataset is being materialised")
        g = torch.Generator().manual_seed(int(i))
        x = torch.randn(1, 8, 8, generator=g) + (i % 10) / 5
        self.alive += 1
        self.reads += 1
        weakref.finalize(x, self._gone)
        return x, self.targets[i]


def test_finetune_calibration_and_evaluation_stream_without_materialising():
    train, val, test = _NoHoarding(3000, 300), _NoHoarding(600, 300), _NoHoarding(600, 300)
    data = Dataset("stream", train, val, test, metric=load_metric("top1"))
    with pytest.raises(MemoryError):  # the guard is real: holding the split trips it
        _ = [train[i] for i in range(len(train))]
    train.alive = 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    finetune(model, data, FinetuneConfig(epochs=1, patience=1))
    assert train.reads >= 3000
    assert data.calibration(256).shape == (256, 1, 8, 8)
    assert 0 <= evaluate(model, data, "test") <= 100


def test_cli_build_with_factory_data_and_custom_metric(user_py, trained, tmp_path, capsys):
    out = tmp_path / "bundle"
    code = main(["build", f"{user_py}:model", "--weights", str(trained[1]), "--data", f"{user_py}:splits",
                 "--metric", f"{user_py}:Error", "--recipe", "", "--formats", "onnx", "--out", str(out),
                 "--runs", "3"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["metric"] == "error_rate_neg"
    assert -0.4 < report["model"]["accuracy"] < 0  # the user's metric, not top-1
    manifest = json.loads((out / "edgecomp.json").read_text())
    assert manifest["model"]["labels"] == [str(i) for i in range(10)]


def test_cli_build_with_a_raising_factory_exits_2_and_writes_nothing(user_py, tmp_path, capsys):
    out = tmp_path / "bundle"
    code = main(["build", f"{user_py}:model", "--data", f"{user_py}:raises", "--recipe", "", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "the bucket is not mounted" in capsys.readouterr().err
