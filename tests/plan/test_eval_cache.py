"""The evaluation cache: keys see every split in full, entries are atomic under concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from edgecomp.data import Dataset
from edgecomp.plan.eval_cache import EvalCache, data_digest, eval_key, search_digest
from tests.conftest import REPO

MIB = 1 << 20


def _arrays(n_val: int = 300_000):
    rng = np.random.default_rng(0)
    x_tr, y = rng.standard_normal((8, 4)).astype(np.float32), np.arange(8) % 2
    x_va = rng.standard_normal((n_val, 1)).astype(np.float32)  # 1.2 MB: past the first MiB
    return [x_tr, y, x_va, np.zeros(n_val, np.int64), x_tr.copy(), y.copy()]


def test_a_change_past_the_first_mib_of_any_split_changes_the_key():
    base = _arrays()
    assert base[2].nbytes > MIB
    keys = {data_digest(Dataset.from_arrays("d", *base))}
    changed_val = [a.copy() for a in base]
    changed_val[2][-1, 0] += 1.0  # the last value of the validation inputs
    keys.add(data_digest(Dataset.from_arrays("d", *changed_val)))
    changed_labels = [a.copy() for a in base]
    changed_labels[3][-1] = 1
    keys.add(data_digest(Dataset.from_arrays("d", *changed_labels)))
    changed_test = [a.copy() for a in base]
    changed_test[4][3, 2] += 1.0
    keys.add(data_digest(Dataset.from_arrays("d", *changed_test)))
    assert len(keys) == 4
    assert data_digest(Dataset.from_arrays("d", *[a.copy() for a in base])) in keys  # same data, same key


class _Items(TorchDataset):
    """A plain torch Dataset (no fingerprint of its own): the cache must read every item."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int):
        return torch.full((2,), self.values[i]), i % 2


def test_a_plain_torch_dataset_is_hashed_item_by_item():
    def digest(values):
        split = _Items(values)
        return data_digest(Dataset("f", split, _Items([0.0, 1.0]), _Items([0.0, 1.0])))

    values = [float(i) for i in range(50)]
    middle = list(values)
    middle[25] = -1.0  # neither the first nor the last item
    assert digest(values) == digest(list(values))
    assert digest(middle) != digest(values)


def test_an_image_folder_key_follows_file_sizes_and_mtimes(tmp_path):
    from edgecomp.data.image_folder import load_image_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.new("RGB", (8, 8), (i * 40, 0, 0) if cls == "a" else (0, i * 40, 0)).save(tmp_path / cls / f"{i}.png")
    first = data_digest(load_image_folder(tmp_path, None, seed=0))
    assert data_digest(load_image_folder(tmp_path, None, seed=0)) == first
    path = tmp_path / "b" / "3.png"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    touched = data_digest(load_image_folder(tmp_path, None, seed=0))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "a" / "6.png")
    grown = data_digest(load_image_folder(tmp_path, None, seed=0))
    assert len({first, touched, grown}) == 3


def test_the_key_covers_metric_seed_budget_threads_and_weights():
    data = Dataset.from_arrays("d", *_arrays(10))
    model = torch.nn.Linear(4, 2)
    search = search_digest(model, model, data)
    key = eval_key(search, ["prune.filter"], 0, 3, 1)
    assert len({key, eval_key(search, ["prune.filter"], 1, 3, 1), eval_key(search, ["prune.filter"], 0, 9, 1),
                eval_key(search, ["prune.filter"], 0, 3, 2), eval_key(search, ["quantize.int8"], 0, 3, 1)}) == 5
    from edgecomp.metrics import load_metric

    data.metric = load_metric("top5")
    assert search_digest(model, model, data) != search
    data.metric = None
    with torch.no_grad():
        model.weight[1, 3] += 1.0
    assert search_digest(model, model, data) != search


WRITER = """
import sys
from pathlib import Path
from edgecomp.plan.eval_cache import EvalCache
cache, me = EvalCache(Path(sys.argv[1])), int(sys.argv[2])
for i in range(200):
    cache.put(f"shared{i % 5}", {"val_accuracy": float(me), "accuracy": float(i), "pad": "x" * 20000})
    cache.put(f"own{me}-{i}", {"val_accuracy": float(me), "accuracy": float(i)})
    got = cache.get(f"shared{(i + 2) % 5}")
    assert got is None or (got["pad"] == "x" * 20000 and got["val_accuracy"] in range(4)), got
"""


def test_concurrent_writers_to_one_folder_leave_only_whole_entries(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(me)], env=env,
                              stderr=subprocess.PIPE, text=True) for me in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 5 + 4 * 200, "every entry, and no temporary file left behind"
    for f in files:
        entry = json.loads(f.read_text())  # whole JSON: never a half-written file
        assert entry["val_accuracy"] in (0.0, 1.0, 2.0, 3.0)
    assert EvalCache(tmp_path).get("shared0")["pad"] == "x" * 20000


def test_no_folder_means_no_cache():
    cache = EvalCache(None)
    cache.put("k", {"val_accuracy": 1.0})
    assert cache.get("k") is None
