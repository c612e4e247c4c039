"""Data-free int8: calibration inputs synthesised from batch-norm statistics (compress/datafree.py).

On the default digits model all three calibrations (real train images, random normal, BN-synthesised)
give the same int8 test accuracy, 98.89 %: digits inputs are normalised to about N(0, 1), so random
normal inputs are already close to them. The tests therefore check the statistic-matching property on
the digits model, and the calibration benefit on a model whose BN layers saw inputs far from N(0, 1).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.compress import datafree
from edgecomp.compress.base import BuildContext
from edgecomp.compress.datafree import batchnorm_mismatch, synthesize_from_batchnorm
from edgecomp.compress.pt2e import QuantSettings
from edgecomp.compress.quantize import Int8Config, QuantizeInt8, ptq
from edgecomp.finetune import predict
from edgecomp.metrics import evaluate
from edgecomp.spec import ModelSpec
from edgecomp.targets import load_profile, load_target
from edgecomp.zoo import load_zoo_model

MINMAX = QuantSettings(calibration="minmax", percentile=99.99, per_channel=True, fixed_point=None)


@pytest.fixture(scope="module")
def zoo():
    """The default digits model, its spec and data."""
    return load_zoo_model()


@pytest.fixture(scope="module")
def shifted():
    """A conv-BN model whose BN statistics come from inputs ~ N(3, 0.5^2), and held-out inputs of that kind."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    inputs = 3 + 0.5 * torch.randn(1024, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model.train()
    with torch.no_grad():
        model(inputs[:512])  # momentum=None: running stats are the exact mean/var of these inputs
    return model.eval(), inputs[512:].numpy()


def _ctx(spec: ModelSpec, data=None) -> BuildContext:
    target = load_target("android-arm64")
    return BuildContext(spec=spec, target=target, profile=load_profile(target.hardware), data=data)


def test_synthesised_inputs_match_the_batchnorm_statistics_of_the_digits_model(zoo):
    model, spec, data = zoo
    syn = synthesize_from_batchnorm(model, spec.input_shape, 32, steps=150, time_budget_s=300)
    assert syn.inputs.shape == (32, *spec.input_shape[1:]) and syn.inputs.dtype == np.float32
    assert syn.bn_layers == 3 and syn.steps == 150 and syn.stopped == "steps"
    random_normal = np.random.default_rng(0).standard_normal(syn.inputs.shape).astype(np.float32)
    real = data.calibration(32, seed=0)
    mismatch = batchnorm_mismatch(model, syn.inputs)
    assert mismatch == pytest.approx(syn.loss_end, rel=1e-4)
    assert mismatch < 0.05 * batchnorm_mismatch(model, random_normal)
    assert mismatch < batchnorm_mismatch(model, real), "closer than a batch of real digits (sampling noise)"


def test_synthesis_is_seeded_and_a_model_without_batchnorm_gets_none(zoo):
    model, spec, _ = zoo
    a, b, c = (synthesize_from_batchnorm(model, spec.input_shape, 8, steps=5, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.inputs, b.inputs) and not np.array_equal(a.inputs, c.inputs)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()
    assert synthesize_from_batchnorm(plain, [1, 1, 8, 8]) is None


def test_synthesis_stops_at_its_time_budget(zoo):
    model, spec, _ = zoo
    syn = synthesize_from_batchnorm(model, spec.input_shape, 64, batch_size=8, steps=10_000, time_budget_s=0.5)
    assert syn.stopped == "time-budget" and 1 <= syn.steps < 10_000 and 1 <= len(syn.inputs) < 64


def test_bn_calibration_is_as_good_as_real_data_where_random_normal_is_not(shifted):
    model, held_out = shifted
    reference = predict(model, held_out)
    syn = synthesize_from_batchnorm(model, [1, 3, 8, 8], 32, steps=150, time_budget_s=300)
    calibrations = {"real": held_out[:32], "syn": syn.inputs,
                    "random": np.random.default_rng(0).standard_normal([32, 3, 8, 8]).astype(np.float32)}
    err = {k: float(np.abs(predict(ptq(model, MINMAX, x, [1, 3, 8, 8]), held_out[32:]) - reference[32:]).mean())
           for k, x in calibrations.items()}
    assert err["syn"] < 0.5 * err["random"], err
    assert err["syn"] < 2.0 * err["real"], err


def test_int8_without_data_calibrates_on_bn_statistics_and_says_so(zoo, monkeypatch):
    model, spec, data = zoo
    monkeypatch.setattr(datafree, "synthesize_from_batchnorm",
                        functools.partial(synthesize_from_batchnorm, steps=150, time_budget_s=300))
    result = QuantizeInt8().apply(model, Int8Config(), _ctx(spec))
    assert "synthesised from 3 batch-norm layers" in result.metrics["calibration_source"]
    assert result.metrics["calibration_inputs"] == 32
    assert any(n.startswith("calibrated on 32 inputs synthesised") for n in result.notes)
    # on digits, data-free int8 is as accurate as int8 calibrated on real training images
    real = ptq(model, MINMAX, data.calibration(256, seed=0), spec.input_shape)
    assert abs(evaluate(result.model, data, "test") - evaluate(real, data, "test")) <= 0.5


def test_int8_without_data_or_batchnorm_falls_back_to_random_normal_with_a_warning(caplog):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()
    with caplog.at_level(logging.WARNING, logger="edgecomp.compress.quantize"):
        result = QuantizeInt8().apply(plain, Int8Config(calibration_samples=16),
                                      _ctx(ModelSpec(name="plain", input_shape=[1, 1, 8, 8])))
    assert "no batch-norm layer" in caplog.text and "random normal" in caplog.text
    assert result.metrics["calibration_source"].startswith("random normal inputs")
    assert any("random normal" in n for n in result.notes)
