"""Weight sharing: k-means codebooks, summed centroid gradients, BN folding, the stage, and the bundle's model.ecz."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgecomp.compress._layers import fold_batchnorm, weight_layers
from edgecomp.compress.cluster import Cluster, SharedWeights, kmeans_1d
from edgecomp.compress.ecz import read_ecz
from edgecomp.compress.recipe import PRESETS, parse_recipe
from edgecomp.data import digits
from edgecomp.finetune import predict
from edgecomp.zoo import DigitsCNN
from tests.rewrite_helpers import context


def test_kmeans_recovers_a_lattice_exactly_and_never_exceeds_k():
    values = torch.tensor([-0.5, -0.25, 0.0, 0.25, 0.5]).repeat(40)
    codebook, idx = kmeans_1d(values, 5)
    assert torch.equal(codebook[idx], values)  # linear initialisation lands on the lattice: zero error
    gen = torch.Generator().manual_seed(0)
    for k in (1, 2, 7, 16):
        x = torch.randn(1000, generator=gen)
        codebook, idx = kmeans_1d(x, k)
        assert len(codebook) <= k and idx.max() < len(codebook)
        assert torch.equal(torch.unique(idx), torch.arange(len(codebook)))  # every entry used
        # each value sits at its nearest centroid (Lloyd's fixed point)
        nearest = (x[:, None] - codebook[None, :]).abs().argmin(1)
        assert torch.equal(codebook[nearest], codebook[idx])


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    gen = torch.Generator().manual_seed(1)
    layer = nn.Linear(12, 8, bias=False)
    index = torch.randint(0, 4, (8, 12), generator=gen)
    mask = torch.rand(8, 12, generator=gen) > 0.3
    parametrize.register_parametrization(layer, "weight", SharedWeights(torch.tensor([-1.0, -0.2, 0.3, 0.9]),
                                                                        index, mask))
    upstream = torch.randn(8, 12, generator=gen)
    (layer.weight * upstream).sum().backward()
    grad = layer.parametrizations.weight.original.grad
    expected = torch.stack([upstream[(index == c) & mask].sum() for c in range(4)])
    torch.testing.assert_close(grad, expected)
    assert torch.equal(layer.weight[~mask], torch.zeros(int((~mask).sum())))


def test_fold_batchnorm_keeps_outputs():
    torch.manual_seed(0)
    model = DigitsCNN(width=4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(16, 1, 8, 8)
    before = model(x)
    assert len(fold_batchnorm(model)) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.mark.parametrize("bits", [2, 4])
def test_stage_leaves_at_most_2_to_the_n_values_per_layer_and_keeps_pruned_zeros(data, bits):
    torch.manual_seed(0)
    model = DigitsCNN(width=4).eval()
    with torch.no_grad():  # prune half of the largest layer, as prune.magnitude would
        w = model.features[7].weight
        w[w.abs() < w.abs().median()] = 0
    zeros_before = (model.features[7].weight == 0).sum()
    cfg = Cluster.Config(bits=bits, epochs=1)
    result = Cluster().apply(model, cfg, context([1, 1, 8, 8], data, teacher=model))
    layers = dict(weight_layers(result.model))
    assert set(layers) == {"features.0", "features.3", "features.7", "classifier"}
    for name, m in layers.items():
        values = torch.unique(m.weight)
        assert len(values) <= 2**bits, name
        assert torch.equal(values.half().float(), values)  # fp16_rest: codebooks rounded to float16
    assert (layers["features.7"].weight == 0).sum() >= zeros_before  # pruned weights stay pruned (and shared)
    assert (result.export.palettize_bits, result.export.compressed_form) == (bits, True)
    m = result.metrics
    assert m["dense_fp32_bytes"] > 4 * max(m["palettized_bytes"], m["huffman_bytes"]) > 0
    assert "val_accuracy_after_finetune" in m and m["layers"][0]["codebook"] <= 2**bits


def test_deep_compression_preset_is_registered():
    assert PRESETS["deep-compression"].startswith("prune.magnitude(")
    assert "cluster(" in PRESETS["deep-compression"]
    assert parse_recipe("cluster(bits=3)")[0].config.bits == 3
    steps = parse_recipe("deep-compression")  # validates the preset against prune.magnitude's settings
    assert [s.name for s in steps] == ["prune.magnitude", "cluster"]


def test_build_writes_a_compressed_form_that_rebuilds_the_exported_model(tmp_path):
    from edgecomp.cli import main
    from edgecomp.zoo import load_zoo_model

    out = tmp_path / "bundle"
    assert main(["build", "--target", "android-arm64", "--recipe", "cluster(bits=4, epochs=1)", "--runs", "3",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    by_format = {a["format"]: a for a in report["artifacts"]}
    assert set(by_format) == {"tflite", "onnx", "ecz"}
    for fmt in ("tflite", "onnx", "ecz"):
        assert by_format[fmt]["parity"]["status"] == "passed", fmt
    ecz = by_format["ecz"]
    assert ecz["bytes"] == (out / "model.ecz").stat().st_size
    assert ecz["details"]["ratio_tflite_fp32_to_ecz"] > 6  # 4-bit indices, Huffman-coded, vs dense float32
    # the compressed form alone rebuilds the network whose outputs the bundle recorded
    model, _, _ = load_zoo_model()
    fold_batchnorm(model)
    model.load_state_dict(read_ecz(out / "model.ecz"))
    samples = np.load(out / "samples.npz")
    np.testing.assert_allclose(predict(model, samples["x"]), samples["y_torch"], rtol=1e-4, atol=1e-5)
    for name, m in weight_layers(model):
        assert len(torch.unique(m.weight)) <= 16, name
