"""A model and a dataset factory defined in a user's own file, and an image folder, evaluated in worker
processes: the file's classes travel by value (no worker can import ``edgecomp_user_*``), folders by path."""

from __future__ import annotations

import multiprocessing

import pytest
import yaml
from PIL import Image

from edgecomp.compress.base import BuildContext
from edgecomp.data.sources import load_data
from edgecomp.metrics import load_metric
from edgecomp.model import load_model
from edgecomp.plan.executors import ProcessExecutor, SerialExecutor
from edgecomp.plan.planner import Planner
from edgecomp.plan.tasks import EvalTask, PayloadError
from edgecomp.targets import load_profile, load_target

USER_FILE = '''
import torch
from torch import nn


class UserNet(nn.Module):
    input_shape = [1, 3, 8, 8]

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x):
        return self.body(x)


class Stripes(torch.utils.data.Dataset):
    """Class 1 has a bright top row: learnable in an epoch."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, 8, 8, generator=g) * 0.5
        self.y = torch.arange(n) % 2
        self.x[self.y == 1, :, 0, :] += 1.0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def factory():
    torch.manual_seed(0)
    return UserNet()


def data():
    return {"train": Stripes(96, 1), "val": Stripes(32, 2), "test": Stripes(32, 3)}
'''


def _target(tmp_path):
    base = load_target("android-arm64").model_dump()
    base.update(name="user-code", methods=["prune.filter"], hardware="cortex-a76", formats=["onnx"],
                budgets={"size_mb": 0.019, "latency_ms": None, "accuracy_drop_pct": 100})
    path = tmp_path / "user-code.yaml"
    path.write_text(yaml.safe_dump(base))
    return load_target(str(path))


def _search(loaded, data, target, executor) -> Planner:
    data.metric = load_metric("top1")
    ctx = BuildContext(spec=loaded.spec, target=target, profile=load_profile("cortex-a76"), data=data,
                       teacher=loaded.module)
    p = Planner(loaded.module, ctx, target.budgets, "onnx", max_finetune_epochs=1, executor=executor,
                early_stop=False)
    p.search()
    return p


def test_a_user_file_model_and_dataset_factory_evaluate_in_workers_as_in_this_process(tmp_path):
    user = tmp_path / "user_net.py"
    user.write_text(USER_FILE)
    loaded = load_model(f"{user}:factory")
    data = load_data(f"{user}:data")
    target = _target(tmp_path)
    here = _search(loaded, data, target, SerialExecutor(threads=1))
    there = _search(loaded, data, target, ProcessExecutor(2, threads=1))
    evaluated = [c for c in there.candidates if c.val_accuracy is not None]
    assert evaluated and not [c for c in there.candidates if c.status == "failed"]
    assert [(c.label, c.val_accuracy, c.accuracy) for c in there.candidates] == \
        [(c.label, c.val_accuracy, c.accuracy) for c in here.candidates]
    kept = {i for i, c in enumerate(there.candidates) if c.val_accuracy is not None and c.recipe}
    assert kept and kept <= set(there._models), "the workers' compressed models came back with their results"
    _, _, chosen = there.next_choice()
    assert type(chosen.model).__name__ == "UserNet"
    assert not multiprocessing.active_children()


def test_an_image_folder_is_read_by_the_workers_from_its_path(tmp_path):
    folder = tmp_path / "images"
    for cls in ("plain", "striped"):
        (folder / cls).mkdir(parents=True)
        for i in range(20):
            img = Image.new("RGB", (8, 8), (40 + i, 40, 40))
            if cls == "striped":
                for x in range(8):
                    img.putpixel((x, 0), (255, 255, 255))
            img.save(folder / cls / f"{i}.png")
    user = tmp_path / "user_net.py"
    user.write_text(USER_FILE)
    loaded = load_model(f"{user}:factory")
    data = load_data(str(folder), spec=loaded.spec)
    p = _search(loaded, data, _target(tmp_path), ProcessExecutor(2, threads=1))
    assert [c for c in p.candidates if c.val_accuracy is not None]
    assert not [c for c in p.candidates if c.status == "failed"], [c.reason for c in p.candidates]


def test_a_model_whose_module_does_not_import_in_a_new_process_stops_the_search_with_the_cause(
        tmp_path, monkeypatch):
    # like torchvision beside this torch wheel: imports (or is stubbed) in the planner's process, fails in a fresh one
    guard = ("import multiprocessing\nif multiprocessing.parent_process() is not None:\n"
             "    raise RuntimeError('operator torchvision::nms does not exist')\n")
    (tmp_path / "fresh_process_fails.py").write_text(guard + USER_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("fresh_process_fails:factory")
    data = load_data("fresh_process_fails:data")
    with pytest.raises(PayloadError) as info:
        _search(loaded, data, _target(tmp_path), ProcessExecutor(2, threads=1))
    assert "RuntimeError: operator torchvision::nms does not exist" in info.value.message
    assert "could not load the model" in info.value.message and "drop --workers" in info.value.hint
    assert not multiprocessing.active_children()
    assert _search(loaded, data, _target(tmp_path), SerialExecutor(threads=1)).candidates[1].status != "failed"


def test_a_ray_task_that_cannot_load_the_payload_hands_the_cause_to_the_driver():
    from edgecomp.plan.ray_executor import _evaluate

    result = _evaluate(b"not a payload", EvalTask(3, (), "x"), threads=1)
    assert result.index == 3 and result.fatal and "UnpicklingError" in result.fatal
    assert "could not load the model" in result.error
