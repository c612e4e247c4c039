"""Model files are data: nothing in a TorchScript or .pt2 file runs code, touches files or exhausts memory.

Each attack file is built here from a tiny model, then edited the way an attacker would edit it.
"""

import io
import json
import pathlib
import resource
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.errors import ModelLoadError
from edgecomp.model import load_model
from edgecomp.model_files import FixedBatch
from tests.tiny_models import MODELS, SHAPES, make


class Touch:
    """Unpickling this creates ``marker``: the stand-in for any code an attacker would run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _pickle_payload(marker: pathlib.Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(Touch(marker), buffer)
    return buffer.getvalue()


def _rewrite_zip(src: pathlib.Path, dst: pathlib.Path, edit) -> None:
    """Copy archive ``src`` to ``dst``, passing each member through ``edit(name, data) -> data``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))


def _saved_pt2(tmp_path, model=None, batch=1, dynamic=False) -> pathlib.Path:
    model = model if model is not None else make("plain")
    path = tmp_path / "model.pt2"
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
    torch.export.save(torch.export.export(model, (torch.zeros(batch, 3, 8, 8),), dynamic_shapes=shapes), path)
    return path


def test_pt2_weight_stored_as_pickle_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    src = _saved_pt2(tmp_path)

    def edit(name, data):
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            config["config"][next(iter(config["config"]))]["use_pickle"] = True
            return json.dumps(config).encode()
        return _pickle_payload(marker) if name.endswith("/weight_0") else data

    evil = tmp_path / "evil.pt2"
    _rewrite_zip(src, evil, edit)
    with pytest.raises(ModelLoadError, match="as a pickle") as err:
        load_model(str(evil))
    assert "will not unpickle" in err.value.message and "--weights" in err.value.hint
    assert not marker.exists()


def test_pt2_sample_inputs_that_are_not_plain_tensors_are_refused(tmp_path):
    # torch.export.load retries sample inputs with weights_only=False when the safe load fails
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"
    _rewrite_zip(_saved_pt2(tmp_path), evil,
                 lambda name, data: _pickle_payload(marker) if "sample_inputs" in name else data)
    with pytest.raises(ModelLoadError, match="sample inputs are not plain tensors"):
        load_model(str(evil))
    assert not marker.exists()


def test_pt2_with_an_opaque_object_member_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    src, evil = _saved_pt2(tmp_path), tmp_path / "evil.pt2"

    def edit(name, data):
        if name.endswith("model_constants_config.json"):
            return json.dumps({"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False,
                                                  "use_pickle": True, "tensor_meta": None}}}).encode()
        return data

    _rewrite_zip(src, evil, edit)
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("model/data/constants/opaque_obj_0", __import__("pickle").dumps(Touch(marker)))
    with pytest.raises(ModelLoadError, match="opaque_obj_0"):
        load_model(str(evil))
    assert not marker.exists()


def test_pt2_symbolic_expression_that_is_code_is_refused(tmp_path):
    # symbolic sizes are parsed with sympy.sympify, which evals its text
    marker = tmp_path / "pwned"
    src, evil = _saved_pt2(tmp_path, batch=2, dynamic=True), tmp_path / "evil.pt2"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or "

    def edit(name, data):
        if name.endswith("models/model.json"):
            return data.replace(b'"expr_str": "', b'"expr_str": "' + json.dumps(payload)[1:-1].encode(), 1)
        return data

    _rewrite_zip(src, evil, edit)
    with pytest.raises(ModelLoadError, match="not plain arithmetic"):
        load_model(str(evil))
    assert not marker.exists()


class ReadsFile(nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        mapped = torch.from_file(self.target, shared=True, size=4)
        mapped.fill_(7.0)
        return self.fc(x) + mapped.sum()


def test_torchscript_that_writes_a_file_is_refused_before_it_runs(tmp_path):
    target = tmp_path / "victim.bin"
    target.write_bytes(b"\0" * 16)
    path = tmp_path / "evil.pt"
    torch.jit.save(torch.jit.script(ReadsFile(str(target))), path)
    with pytest.raises(ModelLoadError, match="aten::from_file") as err:
        load_model(str(path), input_shape=[1, 4])
    assert "reads or writes files" in err.value.message and "factory" in err.value.hint
    assert target.read_bytes() == b"\0" * 16


class Stateful(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 4))

    def forward(self, x):
        return x @ self.weight.t()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.weight = state[0]
        self.training = state[1]


def test_torchscript_setstate_that_writes_a_file_is_refused_before_loading(tmp_path):
    # __setstate__ runs inside torch.jit.load, before any graph could be inspected
    target = tmp_path / "victim.bin"
    target.write_bytes(b"\0" * 16)
    src, evil = tmp_path / "stateful.pt", tmp_path / "evil.pt"
    torch.jit.save(torch.jit.script(Stateful()), src)
    mapped = f'torch.sum(torch.fill_(torch.from_file("{target}", True, 4), 9.))'

    def edit(name, data):
        if name.endswith(".py") and b"__setstate__" in data:
            assert b"self.weight = (state)[0]" in data
            return data.replace(b"self.weight = (state)[0]",
                                f"self.weight = torch.add((state)[0], {mapped})".encode())
        return data

    _rewrite_zip(src, evil, edit)
    with pytest.raises(ModelLoadError, match="aten::from_file"):
        load_model(str(evil), input_shape=[1, 4])
    assert target.read_bytes() == b"\0" * 16


class Allocates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        big = torch.ones([3 * 1024 * 1024 * 1024 // 4])  # 3 GiB of float32, touched
        return self.fc(x) + big[0]


def test_memory_bomb_is_a_clear_error_and_the_parent_never_allocates_it(tmp_path):
    path = tmp_path / "bomb.pt"
    torch.jit.save(torch.jit.script(Allocates()), path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelLoadError, match=r"needed more than [\d.]+ GiB while loading") as err:
        load_model(str(path), input_shape=[1, 4])
    assert "huge tensors" in err.value.hint
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1024 * 1024  # KiB: < 1 GiB


def test_zip_bomb_is_refused_before_unpacking(tmp_path):
    src, evil = tmp_path / "plain.pt", tmp_path / "evil.pt"
    torch.jit.save(torch.jit.trace(make("plain"), torch.zeros(1, 3, 8, 8)), src)
    _rewrite_zip(src, evil, lambda name, data: data)
    with zipfile.ZipFile(evil, "a", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("plain/extra/pad", "w") as f:
        for _ in range(64):
            f.write(b"\0" * (1 << 20))
    with pytest.raises(ModelLoadError, match="zip bomb"):
        load_model(str(evil), input_shape=[1, 3, 8, 8])


def test_fixed_batch_pt2_runs_evaluation_batches_in_chunks(tmp_path):
    from edgecomp.finetune import accuracy, predict

    model = make("plain")
    path = _saved_pt2(tmp_path, model, batch=4)  # torch.export's default: batch fixed at 4
    loaded = load_model(str(path))
    assert loaded.spec.input_shape == [4, 3, 8, 8] and isinstance(loaded.module, FixedBatch)
    x = np.random.default_rng(0).standard_normal((70, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predict(loaded.module, x, batch_size=64), expected, atol=1e-5)
    assert accuracy(loaded.module, x, expected.argmax(1)) == 100.0


def test_fixed_batch_pt2_builds_end_to_end(tmp_path):
    from edgecomp.build import BuildOptions, build

    path = _saved_pt2(tmp_path)  # batch fixed at 1; parity runs batches of 64
    report = build(str(path), "android-arm64", BuildOptions(out=tmp_path / "b", recipe=[], formats=["onnx"],
                                                            runs=2, warmup=1))
    assert [(a.format, a.status) for a in report.artifacts] == [("onnx", "ok")]
    assert (tmp_path / "b" / "model.onnx").is_file()


def test_dynamic_batch_pt2_is_not_wrapped(tmp_path):
    loaded = load_model(str(_saved_pt2(tmp_path, batch=2, dynamic=True)))
    assert not isinstance(loaded.module, FixedBatch)
    assert loaded.module(torch.zeros(64, 3, 8, 8)).shape == (64, 10)


def test_nan_weights_are_refused_naming_the_tensor(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def net():\n    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))\n"
        "    with torch.no_grad():\n        m[1].weight[0, :2] = float('nan')\n    return m\n")
    with pytest.raises(ModelLoadError, match=r"'1\.weight' has 2 NaN or infinite values"):
        load_model(f"{tmp_path / 'net.py'}:net", input_shape=[1, 4])


class MobileBlock(nn.Module):
    """The ops of a MobileNet: conv/bn/relu6, depthwise, residual add, SE (mean, sigmoid), hardswish, cat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.Hardswish())
        self.se = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.stem(x)
        z = self.dw(y)
        z = z * torch.sigmoid(self.se(z.mean((2, 3), keepdim=True))) + y
        return self.fc(torch.cat([z.mean((2, 3)), y.amax((2, 3))], dim=1))


@pytest.mark.parametrize("kind", ["script", "trace", "pt2"])
def test_ordinary_models_still_load_and_compute_the_same(tmp_path, kind):
    model = MobileBlock().eval()
    example = torch.zeros(1, 3, 8, 8)
    path = tmp_path / ("mobile.pt2" if kind == "pt2" else "mobile.pt")
    if kind == "pt2":
        torch.export.save(torch.export.export(model, (example,)), path)
    else:
        torch.jit.save(torch.jit.script(model) if kind == "script" else torch.jit.trace(model, example), path)
    loaded = load_model(str(path), input_shape=None if kind == "pt2" else [1, 3, 8, 8])
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_tiny_model_passes_the_vetting_in_every_file_kind(tmp_path, name):
    from edgecomp.model_vetting import check_torchscript_graphs, vet_pt2, vet_torchscript

    model, example = make(name), torch.zeros(SHAPES[name])
    pt2, scripted, traced = tmp_path / "m.pt2", tmp_path / "s.pt", tmp_path / "t.pt"
    torch.export.save(torch.export.export(model, (example,)), pt2)
    torch.jit.save(torch.jit.script(model), scripted)
    torch.jit.save(torch.jit.trace(model, example), traced)
    vet_pt2(pt2)
    for path in (scripted, traced):
        vet_torchscript(path)
        check_torchscript_graphs(path, torch.jit.load(str(path)))


def test_op_allow_list_refuses_file_and_console_ops_and_foreign_namespaces():
    from edgecomp.model_vetting import op_refusal

    assert all(op_refusal(op) is None for op in ("aten::conv2d", "aten::hardswish", "prim::ListConstruct",
                                                  "quantized::linear"))
    for op in ("aten::from_file", "aten::save", "prim::Print", "aten::_print"):
        assert "files or the console" in op_refusal(op)
    assert "namespace 'myns'" in op_refusal("myns::anything")
