"""Parser tests on benchmark_model outputs of both generations.

The files in tests/data/benchmark_output/ are benchmark_model outputs as published in public
READMEs, docs and issue threads (MobileNet runs on phones and boards), kept line for line; only long
tables were shortened. ``(all same)`` follows ``tensorflow/core/util/stats_calculator.h``.
"""

from __future__ import annotations

import pytest

from edgecomp.android.benchmark_output import BenchmarkOutputError, parse_benchmark_output, parse_stat
from tests.conftest import DATA as TEST_DATA

DATA = TEST_DATA / "benchmark_output"


def _parse(name: str):
    return parse_benchmark_output((DATA / name).read_text())


def test_new_generation_with_op_profiling_tab_separated():
    r = _parse("new_mobilenet_v1_op_profiling.txt")
    assert r.generation == "new"
    assert r.init_us == 17187 and r.first_inference_us == 3512391
    assert r.warmup_avg_us == pytest.approx(3.51239e6) and r.inference_avg_us == pytest.approx(2.95034e6)
    assert r.warmup.count == 1 and r.warmup.curr == 3512391 and r.warmup.avg is None
    assert r.inference.count == 50 and r.inference.min == 2727568 and r.inference.std == 109798
    assert (r.memory_init_mb, r.memory_overall_mb) == (4.21094, 46.0859)
    assert [p.title for p in r.op_profiles] == [
        "Profiling Info for Benchmark Initialization",
        "Operator-wise Profiling Info for Regular Benchmark Runs",
    ]
    init, runs = r.op_profiles
    assert init.run_order[0].node_type == "AllocateTensors" and init.timings.curr == 1356
    assert r.run_profile is runs
    assert len(runs.run_order) == 31 == runs.nodes_executed
    first = runs.run_order[0]
    assert (first.node_type, first.avg_ms, first.percent, first.times_called) == ("CONV_2D", 60.957, 2.066, 1)
    assert first.name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"
    assert len(runs.top_by_time) == 10 and runs.top_by_time[0].avg_ms == 277.374
    by_type = {row.node_type: row for row in runs.by_node_type}
    assert by_type["CONV_2D"].count == 15 and by_type["CONV_2D"].avg_ms == 2651.853
    assert by_type["DEPTHWISE_CONV_2D"].percent == 10.065
    assert runs.timings.count == 50 and runs.timings.avg == pytest.approx(2.9499e6)
    # the per-op averages add up to the profiled run time
    assert sum(row.avg_ms for row in runs.run_order) == pytest.approx(2950.0, rel=0.01)
    lat = r.latency_ms()
    assert lat["mean_ms"] == pytest.approx(2950.34) and lat["init_ms"] == pytest.approx(17.187)


def test_old_generation_space_separated_tables():
    r = _parse("old_mobilenet_v2_quant_op_profiling.txt")
    assert r.generation == "old"
    assert (r.warmup_avg_us, r.init_us, r.inference_avg_us) == (86184.3, 1892, 115062)
    assert r.warmup.count == 6 and r.warmup.avg == 86184.3
    assert r.inference.count == 50 and r.inference.max == 129193
    prof = r.run_profile
    assert prof.title == "" and prof.nodes_executed == 65
    assert [row.node_type for row in prof.run_order][:4] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "CONV_2D"]
    assert prof.run_order[-1].name == "[output]" and prof.run_order[-1].avg_ms == 0.005
    assert len(prof.top_by_time) == 3
    assert [row.node_type for row in prof.by_node_type] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE"]
    assert prof.by_node_type[2].avg_ms == 0.882 and prof.by_node_type[2].times_called == 10


def test_old_generation_inference_label_and_no_stats_label():
    a = _parse("old_summary_after_tables.txt")
    assert a.inference_avg_us == 79760.9 and a.init_us == 38467
    assert a.run_profile.by_node_type[0].node_type == "CONV_2D"
    assert a.inference is None  # the only count= line is the profiler's own Timings line
    b = _parse("old_no_stats.txt")
    assert b.inference_avg_us == 137722 and b.warmup.curr == 146161 and b.inference.avg == 137722
    assert b.latency_ms()["std_ms"] == pytest.approx(0.896)


def test_peak_memory_line_and_logcat_prefix_with_percentiles():
    a = _parse("new_peak_memory.txt")
    assert a.memory_overall_mb == 138.809 and a.inference.avg == 249684
    b = _parse("new_logcat_percentiles.txt")
    assert b.inference.median == 141253 and b.inference.p95 == 187533
    assert b.latency_ms()["p50_ms"] == pytest.approx(141.253)
    assert b.memory_init_mb == 54.2852


def test_all_same_and_empty_stats():
    s = parse_stat("count=5 curr=1200(all same)")
    assert s.all_same and s.count == 5 and s.curr == 1200 and s.mean() == 1200 and s.std is None
    assert parse_stat("count=0").count == 0
    text = (
        "Running benchmark for at least 1 iterations and at least 0.5 seconds\ncount=1 curr=900\n\n"
        "Running benchmark for at least 3 iterations and at least 1 seconds\ncount=3 curr=850(all same)\n\n"
        "Inference timings in us: Init: 300, First inference: 900, Warmup (avg): 900, Inference (avg): 850\n"
    )
    r = parse_benchmark_output(text)
    assert r.inference.all_same and r.latency_ms()["std_ms"] == 0.0 and r.latency_ms()["min_ms"] == 0.85


def test_failure_output_raises_with_the_error_line():
    text = "STARTING!\nGraph: [/data/local/tmp/m.tflite]\nERROR: Could not open '/data/local/tmp/m.tflite'.\n" \
           "Failed to mmap model /data/local/tmp/m.tflite\n"
    with pytest.raises(BenchmarkOutputError, match="no inference timings.*Could not open"):
        parse_benchmark_output(text)
    with pytest.raises(BenchmarkOutputError):
        parse_stat("curr=5")
