"""The roofline latency predictor, its .tflite and torch front ends, and calibration."""

from __future__ import annotations

import math
import shutil

import pytest
import yaml

from edgecomp.cli import main
from edgecomp.errors import ConfigError, ModelLoadError
from edgecomp.profile.calibrate import Measurement, fit_profile, predicted_ms, write_profile
from edgecomp.profile.predict import (
    LayerCost,
    layers_from_torch,
    peak_macs_per_s,
    predict_from_layers,
    predict_latency,
    read_tflite_layers,
)
from edgecomp.targets import load_profile, packaged_dir
from tests.conftest import DATA
from tests.profile_fixtures import tiny_cnn

FP32, INT8 = DATA / "tiny_cnn_fp32.tflite", DATA / "tiny_cnn_int8.tflite"
CONV1, CONV2, FC = 16 * 16 * 8 * 27, 8 * 8 * 16 * 72, 16 * 10  # MACs of tiny_cnn at 16x16


def test_reads_tflite_graph_macs_and_dtype():
    layers, dtype = read_tflite_layers(FP32)
    assert dtype == "fp32"
    macs = {layer.op: [] for layer in layers}
    for layer in layers:
        macs[layer.op].append(layer.macs)
    assert sorted(macs["conv"]) == [CONV1, CONV2] and macs["fc"] == [FC]
    conv2 = next(la for la in layers if la.macs == CONV2)
    assert conv2.out_channels == 16 and conv2.reduction == 72 and conv2.weight_bytes == 4 * (16 * 72 + 16)
    layers8, dtype8 = read_tflite_layers(INT8)
    assert dtype8 == "int8"
    conv2_8 = next(la for la in layers8 if la.macs == CONV2)
    assert conv2_8.weight_bytes == 16 * 72 + 4 * 16  # int8 weights, int32 bias
    with pytest.raises(ModelLoadError):
        read_tflite_layers(DATA / "benchmark_output" / "old_no_stats.txt")


def test_torch_layers_match_the_exported_graph():
    torch_layers = layers_from_torch(tiny_cnn(), (1, 3, 16, 16))
    tfl_layers, _ = read_tflite_layers(FP32)
    compute = lambda ls: sorted(la.macs for la in ls if la.macs)
    assert compute(torch_layers) == compute(tfl_layers) == sorted([CONV1, CONV2, FC])


def test_torch_layers_at_int8_quantize_the_input_and_dequantize_the_output():
    fp32, int8 = layers_from_torch(tiny_cnn(), (1, 3, 16, 16)), layers_from_torch(tiny_cnn(), (1, 3, 16, 16), "int8")
    assert [la.op for la in int8[1:-1]] == [la.op for la in fp32] and "quantize" not in {la.op for la in fp32}
    assert (int8[0].kind, int8[-1].kind) == ("quantize", "dequantize")
    assert int8[0].act_bytes == 5 * 3 * 16 * 16 and int8[-1].act_bytes == 5 * 10  # fp32 in + int8 out


def test_roofline_compute_memory_threads_and_dtype():
    a76 = load_profile("cortex-a76").model_copy(update={  # fixed values, whatever the shipped fit
        "efficiency": {"conv": 0.6, "elementwise": 0.5}, "memory_bandwidth_gbs": 15.0, "overhead_us": 5.0,
        "parallel_efficiency": 0.9, "memory_parallel_efficiency": None, "small_k": 16})
    assert peak_macs_per_s(a76, 1, "fp32") == pytest.approx(2.84e9 * 8)  # the prime core first
    assert peak_macs_per_s(a76, 4, "fp32") == pytest.approx(2.84e9 * 8 + 0.9 * 3 * 2.42e9 * 8)
    assert peak_macs_per_s(a76, 16, "int8") == peak_macs_per_s(a76, 4, "int8")  # only 4 big cores
    big = LayerCost("conv", macs=576 * 64 * 27128, weight_bytes=1e5, act_bytes=1e5, out_channels=64, reduction=576)
    one = predict_from_layers([big], a76, 1, "fp32")  # 27128 output pixels: whole blocks of gemm_rows=4
    expected = big.macs / (2.84e9 * 8 * 0.6 * 576 / (576 + 16)) * 1e3 + a76.overhead_us / 1e3
    assert one.ms == pytest.approx(expected) and one.per_op[0].bound == "compute"
    assert predict_from_layers([big], a76, 4, "fp32").ms < one.ms / 3
    assert predict_from_layers([big], a76, 1, "int8").ms < one.ms / 3
    odd = LayerCost("conv", macs=1e9, out_channels=9, reduction=576)
    assert predict_from_layers([odd], a76, 1).ms > 1.7 * one.ms  # 9 channels fill 2 tiles of 8
    add = LayerCost("elementwise", act_bytes=3e7)
    p = predict_from_layers([add], a76, 4)
    assert p.per_op[0].bound == "memory" and p.ms == pytest.approx(3e7 / (15e9 * 0.5) / 3.7 * 1e3 + 0.005)
    with pytest.raises(ConfigError):
        predict_from_layers([big], a76, 1, "binary")


def test_memory_bound_ops_scale_with_threads_by_their_own_efficiency():
    a76 = load_profile("cortex-a76").model_copy(update={"overhead_us": 0.0, "memory_parallel_efficiency": 0.25})
    add = LayerCost("elementwise", act_bytes=3e7, kind="add")
    one, four = (predict_from_layers([add], a76, t).ms for t in (1, 4))
    assert one / four == pytest.approx(1 + 0.25 * 3)  # bandwidth grows less than compute does
    assert predict_from_layers([add], a76, 16).ms == pytest.approx(four)  # no more threads than cores
    big = LayerCost("conv", macs=576 * 64 * 27128, out_channels=64, reduction=576)
    compute_ratio = predict_from_layers([big], a76, 1).ms / predict_from_layers([big], a76, 4).ms
    assert compute_ratio == pytest.approx(1 + 0.9 * 3 * 2.42 / 2.84, rel=1e-3)


def test_a_pad_feeding_a_convolution_is_free():
    """XNNPACK folds a zero PAD into the padding of the convolution it feeds (tiny_cnn's strided conv)."""
    for path in (FP32, INT8):
        layers, _ = read_tflite_layers(path)
        pads = [la for la in layers if la.kind == "pad"]
        assert len(pads) == 1 and pads[0].op == "free" and pads[0].act_bytes > 0
        assert [la.taps for la in layers if la.op == "conv"] == [9, 9]


def test_gemm_blocks_of_rows_and_input_channels_leave_lanes_idle():
    prof = load_profile("cortex-a76").model_copy(update={"small_k": 0, "gemm_tile": {}, "gemm_rows": 7,
                                                         "gemm_kr": {"int8": 8}, "overhead_us": 0})
    per_mac = lambda layer, dtype="fp32": predict_from_layers([layer], prof, 1, dtype).per_op[0].ms / layer.macs
    full = LayerCost("pointwise", macs=14 * 64 * 64, out_channels=64, reduction=64)  # 14 rows: 2 blocks of 7
    ragged = LayerCost("pointwise", macs=16 * 64 * 64, out_channels=64, reduction=64)  # 16 rows: 3 blocks
    assert per_mac(ragged) == pytest.approx(per_mac(full) * 21 / 16, rel=0.01)
    few = LayerCost("pointwise", macs=5 * 64 * 64, out_channels=64, reduction=64)  # fewer rows: a narrower kernel
    assert per_mac(few) == pytest.approx(per_mac(full), rel=0.01)
    rgb = LayerCost("conv", macs=1e6 * 27, out_channels=64, reduction=27, taps=9)  # 3 channels pad to 8 in int8
    wide = LayerCost("conv", macs=1e6 * 72, out_channels=64, reduction=72, taps=9)
    assert per_mac(rgb, "int8") == pytest.approx(per_mac(wide, "int8") * 8 / 3, rel=0.01)
    assert per_mac(rgb) == pytest.approx(per_mac(wide), rel=0.01)  # fp32 kernels take one channel at a time


def test_a_layer_narrower_than_a_tile_takes_the_narrow_kernel():
    prof = load_profile("cortex-a76").model_copy(update={"small_k": 0, "gemm_rows": 1, "overhead_us": 0,
                                                         "gemm_tile": {"fp32": 16, "fp32_narrow": 8}})
    per_mac = lambda oc: predict_from_layers([LayerCost("conv", macs=1e6 * oc, out_channels=oc, reduction=144,
                                                        taps=9)], prof, 1).per_op[0].ms / (1e6 * oc)
    assert per_mac(8) == pytest.approx(per_mac(16), rel=0.01)  # 8 lanes of an 8-wide kernel, all used
    assert per_mac(4) == pytest.approx(per_mac(16) * 2, rel=0.01)  # 4 of 8
    assert per_mac(24) == pytest.approx(per_mac(16) * 32 / 24, rel=0.01)  # wider than a tile: 2 tiles of 16
    without = prof.model_copy(update={"gemm_tile": {"fp32": 16}})
    assert predict_from_layers([LayerCost("conv", macs=8e6, out_channels=8, reduction=144, taps=9)], without,
                               1).ms == pytest.approx(2 * per_mac(8) * 8e6, rel=0.01)


def test_every_op_on_several_threads_pays_the_hand_out_and_wait():
    prof = load_profile("cortex-a76").model_copy(update={"thread_sync_us": 10.0, "overhead_us": 0.0})
    layers = [LayerCost("pointwise", macs=1e5, out_channels=64, reduction=64)] * 20
    no_sync = prof.model_copy(update={"thread_sync_us": 0.0})
    for threads in (1, 2, 4):
        extra = predict_from_layers(layers, prof, threads).ms - predict_from_layers(layers, no_sync, threads).ms
        assert extra == pytest.approx(20 * 10e-3 * (threads - 1))  # 20 ops x 10 us x extra threads
    cores = prof.cores.count + (prof.prime_cores.count if prof.prime_cores else 0)
    more = predict_from_layers(layers, prof, cores + 4).ms - predict_from_layers(layers, no_sync, cores + 4).ms
    assert more == pytest.approx(20 * 10e-3 * (cores - 1))  # threads beyond the cores add no work split


def test_int8_kernels_have_their_own_short_reduction_penalty():
    prof = load_profile("cortex-a76").model_copy(update={"small_k": 8, "small_k_int8": 24, "gemm_tile": {},
                                                         "overhead_us": 0})
    short = LayerCost("pointwise", macs=1e6 * 16, out_channels=64, reduction=16)
    long = LayerCost("pointwise", macs=1e6 * 512, out_channels=64, reduction=512)
    ratio = lambda dtype: (predict_from_layers([short], prof, 1, dtype).ms / short.macs) / (
        predict_from_layers([long], prof, 1, dtype).ms / long.macs)
    assert ratio("fp32") == pytest.approx((16 + 8) / 16 * 512 / (512 + 8), rel=0.02)
    assert ratio("int8") == pytest.approx((16 + 24) / 16 * 512 / (512 + 24), rel=0.02)


def test_predict_latency_labels_its_source():
    pred = predict_latency(FP32, "cortex-a76", threads=4)
    assert pred.source == "predicted:cortex-a76" and pred.dtype == "fp32" and pred.ms > 0
    assert pred.ms == pytest.approx(sum(op.ms for op in pred.per_op))
    assert predict_latency(INT8, load_profile("cortex-a76"), 4).dtype == "int8"


def test_calibration_recovers_a_hidden_profile(tmp_path):
    prior = load_profile("cortex-a76")
    truth = prior.model_copy(update={"efficiency": {**prior.efficiency, "conv": 0.3, "depthwise": 0.12,
                                                    "pointwise": 0.45, "elementwise": 0.2},
                                     "overhead_us": 9.0})
    nets = []
    for i in range(8):  # different mixes of conv, depthwise, pointwise and element-wise work
        nets.append([LayerCost("conv", 2e7 * (i + 1), 1e4, 1e5, 32 + 8 * i, 288),
                     LayerCost("depthwise", 1e6 * (8 - i), 1e3, 4e5 * (i % 3 + 1), 64, 9),
                     LayerCost("pointwise", 1e7 * (i % 4 + 1), 1e4, 1e5, 64, 64),
                     LayerCost("elementwise", 0, 0, 1e6 * (i % 2 + 1))] + [LayerCost("data", 0, 0, 1e3)] * (i * 3))
    runs = [Measurement(f"net{i}", layers, "fp32", t, predict_from_layers(layers, truth, t).ms)
            for i, layers in enumerate(nets) for t in (1, 4)]
    fitted = fit_profile(prior, runs)
    for m in runs:
        assert predicted_ms(fitted, m) == pytest.approx(m.measured_ms, rel=0.03)
    assert fitted.calibration["median_abs_error_pct"] < 3 and len(fitted.calibration["runs"]) == 16
    path = write_profile(fitted, tmp_path / "a76-fitted.yaml")
    again = load_profile(str(path))
    assert again.efficiency["conv"] == pytest.approx(fitted.efficiency["conv"], rel=1e-3)
    assert again.prime_cores == prior.prime_cores
    with pytest.raises(ConfigError, match="at least 2"):
        fit_profile(prior, runs[:1])


def test_cli_calibrate_writes_the_profile_back(tmp_path, capsys):
    profile = tmp_path / "host-copy.yaml"
    shutil.copy(packaged_dir("profiles") / "host-x86.yaml", profile)
    code = main(["profile", str(FP32), str(INT8), "--threads", "1", "--runs", "5", "--warmup", "1",
                 "--calibrate", str(profile)])
    assert code == 0
    data = yaml.safe_load(profile.read_text())
    assert len(data["calibration"]["runs"]) == 2 and data["calibration"]["runs"][0]["source"] == "measured:host"
    assert math.isfinite(data["calibration"]["median_abs_error_pct"])
    assert "calibrated host-x86 on 2 runs" in capsys.readouterr().out
    assert main(["profile", str(FP32), "--runs", "2", "--calibrate", "cortex-a76"]) == 2  # host runs, ARM profile
    assert "cannot calibrate the arm64 profile" in capsys.readouterr().err


def test_host_profile_takes_the_vector_peaks_of_the_cpu():
    from edgecomp.profile.host_cpu import host_profile, vector_peaks

    assert vector_peaks({"avx2", "fma"}) == (32.0, 64.0, "AVX2")
    assert vector_peaks({"avx2", "avx512f", "avx512_vnni"}) == (64.0, 256.0, "AVX-512 VNNI")
    prior = load_profile("host-x86")
    zen5 = host_profile(prior, "processor : 0\nflags : fpu sse2 avx2 fma avx512f avx512_vnni avx_vnni\n")
    assert (zen5.cores.fp32_flops_per_cycle, zen5.cores.int8_ops_per_cycle) == (64.0, 256.0)
    assert zen5.gemm_tile["int8"] == 16 and "AVX-512 VNNI" in zen5.description
    assert zen5.gemm_rows == 7 and zen5.gemm_kr == {"int8": 8}
    assert zen5.efficiency == prior.efficiency and zen5.cores.clock_ghz == prior.cores.clock_ghz
    assert host_profile(prior, "processor : 0\n") == prior  # no flags: unchanged


@pytest.mark.parametrize("name, kind", [("residual", "add"), ("concat", "concatenation"), ("se", "mul"),
                                        ("plain", None)])
def test_torch_layers_see_residual_adds_concats_and_se_multiplies(name, kind):
    from tests.tiny_models import make

    functional = [la for la in layers_from_torch(make(name), (1, 3, 8, 8)) if la.name.startswith("aten.")]
    assert [la.kind for la in functional] == ([kind] if kind else [])
    assert all(la.act_bytes > 0 and la.macs == 0 for la in functional)


@pytest.mark.parametrize("path", [FP32, INT8], ids=["fp32", "int8"])
def test_prediction_and_inspection_read_the_same_ops(path):
    from collections import Counter

    from edgecomp.export.tflite_inspect import inspect_tflite

    layers, _ = read_tflite_layers(path)
    assert Counter(layer.kind.upper() for layer in layers) == Counter(inspect_tflite(path).ops)
