"""ExecuTorch (.pte, XNNPACK delegate): fp32 and int8 export, parity on the host, delegation report."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.compress.base import ExportOptions, Int8Export
from edgecomp.errors import ExportError
from edgecomp.export.base import get_format
from edgecomp.export.parity import compare_to_reference
from edgecomp.export.runtime import run_artifact
from edgecomp.finetune import predict
from edgecomp.spec import ModelSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                reason="the executorch extra is not installed (pip install 'edgecomp[executorch]')")
SPEC = ModelSpec(name="tiny", input_shape=[1, 1, 8, 8])


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()


def _x(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).standard_normal([n, 1, 8, 8]).astype(np.float32)


def test_fp32_pte_is_fully_delegated_and_matches_pytorch(tmp_path):
    model = _tiny()
    art = get_format("pte").export(model, SPEC, ExportOptions(), tmp_path / "model.pte")
    assert art.details["delegated_share"] == 1.0 and art.details["portable_ops"] == {}
    assert [t.shape for t in art.inputs] == [[1, 1, 8, 8]] and [t.shape for t in art.outputs] == [[1, 10]]
    out = run_artifact("pte", art.path, _x(), SPEC.input_shape)
    assert np.abs(out - predict(model, _x())).max() < 1e-4


def test_int8_pte_uses_the_int8_reference_and_matches_it(tmp_path):
    from edgecomp.compress.pt2e import QuantSettings
    from edgecomp.compress.quantize import ptq

    quantized = ptq(_tiny(), QuantSettings(), _x(32), SPEC.input_shape)
    art = get_format("pte").export(quantized, SPEC, ExportOptions(dtype="int8", int8=Int8Export()),
                                   tmp_path / "model.pte")
    assert art.dtype == "int8" and art.details["delegated_share"] == 1.0
    fp32 = get_format("pte").export(_tiny(), SPEC, ExportOptions(), tmp_path / "fp32.pte")
    assert art.path.stat().st_size < fp32.path.stat().st_size
    parity = compare_to_reference(predict(quantized, _x()), run_artifact("pte", art.path, _x(), SPEC.input_shape),
                                  quantized=True)
    assert parity.status == "passed", parity.summary()


class _Cumsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).flatten(1).cumsum(1)


def test_ops_xnnpack_cannot_take_stay_on_portable_kernels_and_are_named(tmp_path, caplog):
    art = get_format("pte").export(_Cumsum(), SPEC, ExportOptions(), tmp_path / "model.pte")
    assert "aten_cumsum_default" in art.details["portable_ops"] and art.details["delegated_share"] < 1.0
    assert any("portable kernels" in n and "cumsum" in n for n in art.notes)
    x = _x(2)
    assert np.allclose(run_artifact("pte", art.path, x, SPEC.input_shape), _Cumsum()(torch.from_numpy(x)).numpy(),
                       atol=1e-5)


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x > 0].sum().reshape(1, 1)


def test_a_data_dependent_shape_exports_to_portable_kernels_and_uncarried_dtypes_are_clear_errors(tmp_path):
    art = get_format("pte").export(_DataDependent(), SPEC, ExportOptions(), tmp_path / "model.pte")
    assert {"aten_index_tensor", "aten_gt_scalar"} <= set(art.details["portable_ops"])  # boolean mask: not XNNPACK
    assert not any(op.startswith(("sym_", "_assert")) for op in art.details["portable_ops"])
    x = _x(2)
    assert np.allclose(run_artifact("pte", art.path, x, SPEC.input_shape)[:, 0],
                       [float(r[r > 0].sum()) for r in x], atol=1e-4)
    with pytest.raises(ExportError) as info:
        get_format("pte").check(ExportOptions(dtype="fp16"))
    assert "pte cannot carry fp16" in info.value.message and "tflite" in info.value.hint
