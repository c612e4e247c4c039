"""Model references: TorchScript, torch.export programs and factories load; nothing is unpickled."""

import pytest
import torch

from edgecomp.errors import ModelLoadError
from edgecomp.model import count_macs, count_params, load_model
from tests.tiny_models import make


def test_torchscript_file_loads_with_given_shape(tmp_path):
    model = make("plain")
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 8, 8)), path)
    loaded = load_model(str(path), input_shape=[1, 3, 8, 8])
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(loaded.module(x), model(x), atol=1e-5)
    assert loaded.spec.name == "plain" and loaded.data is None


def test_torch_export_program_knows_its_input_shape(tmp_path):
    model = make("residual")
    path = tmp_path / "res.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 8, 8),)), path)
    loaded = load_model(str(path))
    assert loaded.spec.input_shape == [1, 3, 8, 8]
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(loaded.module(x), model(x), atol=1e-5)


def test_factory_with_weights(tmp_path):
    (tmp_path / "net.py").write_text(
        "from torch import nn\ndef net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))\n")
    ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    loaded = load_model(f"{tmp_path / 'net.py'}:net", input_shape=[1, 4], weights=str(tmp_path / "w.pt"))
    x = torch.randn(1, 4)
    assert torch.equal(loaded.module(x), ref(x))


def test_wrong_input_shape_is_reported(tmp_path):
    (tmp_path / "net.py").write_text("from torch import nn\ndef net():\n    return nn.Linear(4, 3)\n")
    with pytest.raises(ModelLoadError, match="fails on an input of shape"):
        load_model(f"{tmp_path / 'net.py'}:net", input_shape=[1, 5])


def test_counts_match_hand_computation():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 3))
    assert count_params(model) == (2 * 4 * 9 + 4) + (100 * 3 + 3)
    assert count_macs(model, [1, 2, 5, 5]) == 4 * 25 * (2 * 9) + 100 * 3


def test_torchscript_whose_code_lives_under_a_models_package_is_torchscript(tmp_path):
    # torchvision's models script to code/__torch__/torchvision/models/...: that '/models/' is not .pt2's models/
    from edgecomp.model_files import model_file_kind

    net = make("plain").eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 8, 8)), path)
    renamed = tmp_path / "vision.pt"
    import zipfile

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(renamed, "w") as dst:
        for info in src.infolist():
            name = info.filename.replace("/code/__torch__/", "/code/__torch__/torchvision/models/", 1)
            dst.writestr(name, src.read(info.filename))
    assert any("/models/" in n for n in zipfile.ZipFile(renamed).namelist())
    assert model_file_kind(renamed) == "torchscript"
    assert model_file_kind(path) == "torchscript"


def test_planner_refuses_a_torchscript_model_with_a_hint(tmp_path):
    from edgecomp.build import BuildOptions, build
    from edgecomp.errors import ConfigError

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(make("plain").eval(), torch.zeros(1, 3, 8, 8)), path)
    with pytest.raises(ConfigError, match="planner cannot search a TorchScript model") as exc:
        build(str(path), "android-arm64", BuildOptions(input_shape=[1, 3, 8, 8], formats=["onnx"],
                                                       out=tmp_path / "out"))
    assert "--recipe" in exc.value.hint
    assert not (tmp_path / "out").exists()
