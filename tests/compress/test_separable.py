"""The separable rewrite: exactness on separable kernels, error vs rank, budgets, skipped layers, export."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.compress.recipe import make_step
from edgecomp.compress.separable import Separable, make_separable, separable_errors, separable_factors
from edgecomp.errors import ConfigError, InfeasibleBudgetError
from edgecomp.model import count_macs
from tests.rewrite_helpers import context


def _implied_kernel(block: nn.Sequential) -> torch.Tensor:
    """The full kernel W[n, m] = sum_j pw[n, m*r+j] * dw[m*r+j] computed by a depthwise+pointwise pair."""
    dw, pw = block.depthwise.weight.detach().double(), block.pointwise.weight.detach().double()
    m = block.depthwise.in_channels
    r = dw.shape[0] // m
    return torch.einsum("nmj,mjhw->nmhw", pw[:, :, 0, 0].reshape(-1, m, r), dw[:, 0].reshape(m, r, *dw.shape[2:]))


class Net(nn.Module):
    """Stem (3 in), a strided+dilated 3x3, a grouped 3x3, a 1x1, a 5x3 conv with bias; O(1) outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.strided = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.grouped = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.point = nn.Conv2d(12, 16, 1)
        self.wide = nn.Conv2d(16, 16, (5, 3), padding=(2, 1))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn(self.strided(x)))
        x = torch.relu(self.point(torch.relu(self.grouped(x))))
        return self.head(torch.relu(self.wide(x)).mean((2, 3))) * 10


def _net(separable: bool = False) -> nn.Module:
    """The test net; with ``separable`` its rewritable kernels are exactly rank 1 per input channel."""
    torch.manual_seed(0)
    net = Net().eval()
    if separable:
        with torch.no_grad():
            for conv in (net.strided, net.wide):
                n, m, kh, kw = conv.weight.shape
                conv.weight.copy_(torch.randn(n, m, 1, 1) * torch.randn(1, m, kh, kw) / 3)
    return net


def test_rank1_reproduces_an_exactly_separable_kernel():
    torch.manual_seed(0)
    n, m = 7, 5
    point, filt = torch.randn(n, m), torch.randn(m, 3, 3)
    conv = nn.Conv2d(m, n, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(point[:, :, None, None] * filt[None])
    block, err = make_separable(conv, 1)
    assert err < 1e-6
    assert block.depthwise.groups == m and block.depthwise.out_channels == m
    assert float((_implied_kernel(block) - conv.weight.detach().double()).abs().max()) < 1e-6
    x = torch.randn(4, m, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(block(x), conv(x), atol=1e-5, rtol=1e-5)


def test_error_falls_as_rank_rises_and_full_rank_is_exact():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    errors = []
    w = conv.weight.detach().double()
    for r in range(1, 9):  # min(N=8, k*k=9) = 8 is full rank
        block, err = make_separable(conv, r)
        actual = float((_implied_kernel(block) - w).norm() / w.norm())
        assert err == pytest.approx(actual, abs=1e-6)  # the reported error is the real one (fp32 weights)
        errors.append(err)
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-6
    assert separable_errors(conv.weight) == pytest.approx(errors, abs=1e-9)
    dw, pw, _ = separable_factors(conv.weight, 50)  # capped at min(N, k*k) = 8
    assert dw.shape == (6 * 8, 1, 3, 3) and pw.shape == (8, 48, 1, 1)


def test_stage_rewrites_strided_dilated_and_skips_grouped_with_a_note():
    model = _net(separable=True)
    ctx = context([1, 3, 8, 8])
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
    result = Separable().apply(model, Separable.Config(rank=1, epochs=0), ctx)  # exact on these kernels
    layers = {r["name"]: r for r in result.metrics["layers"]}
    assert layers["strided"]["status"] == "rewritten" and layers["wide"]["status"] == "rewritten"
    assert layers["grouped"]["status"] == "skipped" and "groups=3" in layers["grouped"]["note"]
    assert any("grouped" in n and "not supported" in n for n in result.notes)
    assert layers["point"]["status"] == "skipped" and layers["stem"]["status"] == "skipped"
    assert isinstance(model.strided, nn.Conv2d)  # the input model is left alone
    rewritten = result.model.strided.depthwise
    assert rewritten.stride == (2, 2) and rewritten.dilation == (2, 2) and rewritten.padding == (2, 2)
    with torch.no_grad():
        after = result.model(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert before.std() > 0.5  # O(1) outputs, so the tolerance means something


def test_a_rank_that_costs_more_macs_keeps_the_layer_with_a_note():
    result = Separable().apply(_net(), Separable.Config(rank=9, epochs=0), context([1, 3, 8, 8]))
    strided = next(r for r in result.metrics["layers"] if r["name"] == "strided")
    assert strided["status"] == "kept" and "more MACs" in strided["note"]
    assert isinstance(result.model.strided, nn.Conv2d)


def test_rank1_cuts_macs_and_reports_them():
    model = _net()
    ctx = context([1, 3, 8, 8])
    result = Separable().apply(model, Separable.Config(rank=1, epochs=0), ctx)
    m = result.metrics
    assert m["rewritten"] == 2 and m["macs_after"] < m["macs_before"] / 3
    total_before, total_after = count_macs(model, [1, 3, 8, 8]), count_macs(result.model, [1, 3, 8, 8])
    assert total_before - total_after == m["macs_before"] - m["macs_after"]  # the per-layer report adds up
    for layer in m["layers"]:
        if layer["status"] == "rewritten":
            assert layer["rank"] == 1 and layer["params_after"] < layer["params_before"]


def test_mac_budget_is_met_or_refused():
    model = _net()
    ctx = context([1, 3, 8, 8])
    total = count_macs(model, [1, 3, 8, 8])
    result = Separable().apply(model, Separable.Config(mac_reduction=1.3, epochs=0), ctx)
    assert count_macs(result.model, [1, 3, 8, 8]) <= total / 1.3
    ranks = [r["rank"] for r in result.metrics["layers"] if r["status"] == "rewritten"]
    assert ranks and max(ranks) > 1  # the slack was spent on accuracy, not left unused
    with pytest.raises(InfeasibleBudgetError, match="best reachable"):
        Separable().apply(model, Separable.Config(mac_reduction=50, epochs=0), ctx)


def test_error_budget_bounds_every_rewritten_layer():
    model = _net()
    result = Separable().apply(model, Separable.Config(max_error=0.5, max_rank=9, epochs=0), context([1, 3, 8, 8]))
    done = [r for r in result.metrics["layers"] if r["status"] == "rewritten"]
    assert done and all(r["rel_error"] <= 0.5 for r in done)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="not both"):
        make_step("separable", {"max_error": 0.3, "mac_reduction": 4})
    with pytest.raises(ConfigError, match="matches no layer"):
        Separable().apply(_net(), Separable.Config(layers=["strid"], epochs=0), context([1, 3, 8, 8]))


def test_rewritten_model_exports_to_onnx_with_parity(tmp_path):
    from edgecomp.compress.base import ExportOptions
    from edgecomp.export.onnx import export_onnx
    from edgecomp.export.parity import compare_to_reference
    from edgecomp.export.runtime import run_artifact

    ctx = context([1, 3, 8, 8])
    model = Separable().apply(_net(), Separable.Config(rank=2, epochs=0), ctx).model
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.as_tensor(x)).numpy()
    art = export_onnx(model, ctx.spec, ExportOptions(), tmp_path / "m.onnx")
    parity = compare_to_reference(ref, run_artifact("onnx", art.path, x, ctx.spec.input_shape))
    assert parity.status == "passed", parity


def _dense_net() -> nn.Module:
    """Two 3x3 convs with random (full-spectrum) kernels: rank 1 loses most of each (error > 0.7)."""
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 64, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def test_default_rank_comes_from_the_error_budget_not_rank_1():
    model, ctx = _dense_net(), context([1, 8, 6, 6])
    assert Separable.Config().rank is None and Separable.Config().mode == "max_error"
    rank1 = Separable().apply(model, Separable.Config(rank=1, epochs=0), ctx).metrics["layers"]
    assert all(r["rel_error"] > 0.7 for r in rank1 if r["status"] == "rewritten")  # what rank 1 used to do
    cfg = Separable.Config(epochs=0)
    for min_saving in (cfg.min_saving, 0.6):  # the default, then one that the rank within budget cannot meet
        cfg = Separable.Config(epochs=0, min_saving=min_saving)
        result = Separable().apply(model, cfg, ctx)
        convs = [r for r in result.metrics["layers"] if r["kind"] == "conv"]
        for r in convs:
            errors = separable_errors(model.get_submodule(r["name"]).weight)
            smallest = next(i for i, e in enumerate(errors, 1) if e <= cfg.max_error)
            saving = 1 - smallest * (9 + r["shape"][0]) / (9 * r["shape"][0])  # (M r (k*k + N)) / (M k*k N)
            if saving >= min_saving:  # the smallest rank within the budget, rewritten
                assert r["status"] == "rewritten" and r["rank"] == smallest > 1 and r["rel_error"] <= cfg.max_error
            else:  # it would save too little, so the layer is left alone and the notes say why
                assert r["status"] == "kept" and "meets max_error" in r["note"] and "saves only" in r["note"]
                assert any(n.startswith(f"{r['name']}: kept") for n in result.notes)
                assert isinstance(result.model.get_submodule(r["name"]), nn.Conv2d)
        assert {r["status"] for r in convs} == ({"rewritten"} if min_saving == 0.2 else {"kept"})


def test_one_budget_at_a_time():
    with pytest.raises(ConfigError, match="not both rank and max_error"):
        make_step("separable", {"rank": 1, "max_error": 0.3})
    assert make_step("separable", {"rank": 2}).config.mode == "rank"
    assert make_step("separable", {"mac_reduction": 2}).config.mode == "mac_reduction"


def test_fine_tune_distils_from_the_teacher_by_default():
    from tests.rewrite_helpers import teacher_dataset

    assert Separable.Config().distill
    teacher = _dense_net()
    calls = []
    teacher.register_forward_hook(lambda m, *_: calls.append(m is teacher))  # the student copies the hook
    data = teacher_dataset(teacher, (8, 6, 6), n=200)
    calls.clear()
    result = Separable().apply(teacher, Separable.Config(epochs=1), context([1, 8, 6, 6], data, teacher))
    assert result.metrics["finetune"]["distilled"] is True
    assert any(calls)  # the teacher ran on the training batches
    calls.clear()
    Separable().apply(teacher, Separable.Config(epochs=1, distill=False), context([1, 8, 6, 6], data, teacher))
    assert calls and not any(calls)  # only the student ran


def test_default_stays_within_one_point_on_the_digits_model():
    """The default model's separable rewrite at its defaults, fine-tune capped at 4 epochs (rank 1 loses ~5 pt)."""
    from edgecomp.compress.base import BuildContext
    from edgecomp.finetune import FinetunePolicy
    from edgecomp.metrics import evaluate
    from edgecomp.targets import load_profile, load_target
    from edgecomp.zoo import load_zoo_model

    model, spec, data = load_zoo_model("digits_cnn")
    target = load_target("android-arm64")
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data, teacher=model,
                       finetune_policy=FinetunePolicy(max_epochs=4))
    torch.manual_seed(0)
    result = Separable().apply(model, Separable.Config(), ctx)
    assert result.metrics["rewritten"] >= 1 and result.metrics["macs_after"] < result.metrics["macs_before"] / 2
    assert evaluate(result.model, data, "test") >= evaluate(model, data, "test") - 1.0


def _depthwise_net() -> nn.Module:
    """MobileNetV2-style: a 1-channel stem (below min_in_channels) and inverted residuals (1x1 and depthwise)."""
    from edgecomp.zoo import _InvertedResidual

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), _InvertedResidual(8, 8),
                         _InvertedResidual(8, 12), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10)).eval()


def test_nothing_to_rewrite_leaves_the_model_as_it_came_without_a_fine_tune():
    """A rewrite that finds no conv to rewrite must not pass off a fine-tune (or BN recalibration) as its own."""
    from tests.rewrite_helpers import teacher_dataset

    net = _depthwise_net()
    data = teacher_dataset(net, (1, 8, 8), n=200)
    result = Separable().apply(net, Separable.Config(epochs=2), context([1, 1, 8, 8], data, net))
    assert result.metrics["rewritten"] == 0
    assert result.metrics["finetune"] == {"epochs": 0, "skipped": "nothing rewritten"}
    assert "test_accuracy_rewritten" not in result.metrics, "no evaluation of a model that is the input"
    assert [n for n in result.notes if "rewritten" in n] == [
        "nothing was rewritten, so nothing to recover: the model is unchanged (not fine-tuned)"], "said once"
    before, after = net.state_dict(), result.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
