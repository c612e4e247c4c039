"""AdaRound: learned rounding lowers each layer's output error, stays on the int8 grid quantize.int8 uses."""

import numpy as np
import torch

from edgecomp.compress.adaround import _scale, adaround
from edgecomp.compress.pt2e import QuantSettings
from edgecomp.compress.quantize import ptq
from edgecomp.finetune import predict
from tests.tiny_models import SHAPES, make

X = np.random.default_rng(0).standard_normal((128, 3, 8, 8)).astype(np.float32)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_learned_rounding_lowers_layer_and_network_error_and_stays_on_the_int8_grid():
    model = make("depthwise")
    rounded, result = adaround(model, X[:64], SHAPES["depthwise"], per_channel=False, iters=200)
    assert result.layers == 4 and result.flipped > 0
    assert sum(result.mse_learned) < 0.5 * sum(result.mse_nearest)
    for m in rounded.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            q = m.weight / _scale(m.weight, per_channel=False)
            assert torch.allclose(q, torch.round(q), atol=1e-3) and q.abs().max() > 126.99  # the scale is kept
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rounded.modules())  # folded, as PT2E would
    float_out, held_out = predict(model, X[64:]), X[64:]
    nearest = ptq(model, QuantSettings(per_channel=False), X[:64], SHAPES["depthwise"])
    learned = ptq(rounded, QuantSettings(per_channel=False), X[:64], SHAPES["depthwise"])
    assert _rel(predict(learned, held_out), float_out) < _rel(predict(nearest, held_out), float_out)


def test_the_stage_reports_adaround():
    from edgecomp.compress.base import BuildContext
    from edgecomp.compress.quantize import QuantizeInt8
    from edgecomp.compress.recipe import parse_recipe
    from edgecomp.spec import ModelSpec
    from edgecomp.targets import load_profile, load_target

    target = load_target("android-arm64")
    ctx = BuildContext(spec=ModelSpec(name="p", input_shape=[1, 3, 8, 8]), target=target,
                       profile=load_profile(target.hardware))
    (step,) = parse_recipe("quantize.int8(adaround=True, calibration_data=None, report_samples=0)")
    model = make("plain")
    result = QuantizeInt8().apply(model, step.config, ctx)  # no data: calibrates on BN-synthesised inputs
    assert result.metrics["adaround"]["layers"] == 3
    assert any(n.startswith("AdaRound on 3 layers") for n in result.notes)
