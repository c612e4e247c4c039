"""Phase timings: the recorder, and a real build's phases in report.json, report.html and the console."""

from __future__ import annotations

import json

import pytest

from edgecomp.timings import Phase, Timings, phase_bars_html, phase_table


def test_phases_keep_first_seen_order_and_add_up_repeats():
    t = Timings()
    t.add("load", 1.0)
    t.add("export:onnx", 0.5)
    t.add("load", 0.25)
    with t.phase("bundle"):
        pass
    names = [p.name for p in t.phases()]
    assert names == ["load", "export:onnx", "bundle"]
    assert t.phases()[0].seconds == 1.25
    assert t.pop("export:onnx") == 0.5 and t.pop("missing") == 0.0


def test_a_phase_that_raises_is_still_recorded():
    t = Timings()
    with pytest.raises(ValueError), t.phase("export:tflite"):
        raise ValueError("boom")
    assert [p.name for p in t.phases()] == ["export:tflite"]


def test_console_block_and_html_bars_name_every_phase_and_the_total():
    phases = [Phase(name="load", seconds=3.0), Phase(name="export:onnx", seconds=1.0)]
    text = phase_table(phases, 5.0)
    assert "load" in text and "export:onnx" in text and "total" in text and "5.00 s" in text
    assert " 60.0 %" in text  # 3 of 5 seconds
    page = phase_bars_html(phases, 5.0)
    assert page.count("<tr>") == 4 and "width:400px" in page and "width:133px" in page


def test_build_reports_its_phases_in_json_html_and_console(tmp_path, capsys):
    from edgecomp.cli import main

    out = tmp_path / "bundle"
    assert main(["build", "--recipe", "quantize.fp16", "--formats", "onnx", "--runs", "3", "--no-cache",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    names = [p["name"] for p in report["phases"]]
    for expected in ("load", "stage:quantize.fp16", "parity:reference", "export:onnx", "parity:onnx",
                     "profile:onnx", "bundle"):
        assert expected in names, names
    assert names.index("load") < names.index("export:onnx") < names.index("bundle")
    assert all(p["seconds"] >= 0 for p in report["phases"])
    assert 0 < sum(p["seconds"] for p in report["phases"]) <= report["build_seconds"] + 1e-3
    assert "Time by phase" in (out / "report.html").read_text()
    latency = report["artifacts"][0]["latency"]
    assert latency["runs"] <= 3 and latency["max_runs"] == 3 and latency["tolerance_pct"] == 2.0
    console = capsys.readouterr().out
    assert "time by phase:" in console and "export:onnx" in console


def test_median_ci_uses_order_statistics():
    from edgecomp.profile.host_worker import converged, median_ci_halfwidth

    assert median_ci_halfwidth([5.0] * 20) == 0.0
    ten = [float(i) for i in range(1, 11)]  # n=10: the interval spans the 1st to the 10th sample
    assert median_ci_halfwidth(ten) == 4.5
    hundred = [float(i) for i in range(1, 101)]  # n=100: the 40th to the 61st sample
    assert median_ci_halfwidth(hundred) == (61 - 40) / 2
    assert not converged([1.0] * 9, 0.02, 10) and converged([1.0] * 10, 0.02, 10)


def _run_worker(monkeypatch, capsys, deltas_ms, runs: int, tolerance: str | None) -> dict:
    """host_worker.main with a fake runtime whose every call takes the next of ``deltas_ms`` on a fake clock."""
    import itertools

    from edgecomp.export import runtime
    from edgecomp.profile import host_worker

    clock, steps = [0.0], itertools.cycle(deltas_ms)

    class FakeRunner:
        def __init__(self, path, threads):
            self.input_shape = [1, 4]

        def __call__(self, x):
            clock[0] += next(steps) / 1e3

    monkeypatch.setattr(runtime, "OnnxRunner", FakeRunner)  # the worker builds the format's runner by name
    monkeypatch.setattr(host_worker.time, "perf_counter", lambda: clock[0])
    argv = ["edgecomp.export.runtime:OnnxRunner", "unused.onnx", "1", str(runs), "2"] + ([tolerance, "10"] if tolerance else [])
    host_worker.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_host_timing_stops_once_the_p50_is_known_and_runs_to_the_cap_when_noisy(monkeypatch, capsys):
    steady = _run_worker(monkeypatch, capsys, [1.0, 1.001, 0.999], runs=200, tolerance="0.02")
    assert len(steady["times_ms"]) == 10  # known within 2 % after the minimum of 10 runs
    noisy = _run_worker(monkeypatch, capsys, [1.0, 3.0, 0.5, 2.0], runs=60, tolerance="0.02")
    assert len(noisy["times_ms"]) == 60  # never within 2 %: stopped by the cap
    fixed = _run_worker(monkeypatch, capsys, [1.0], runs=25, tolerance=None)
    assert len(fixed["times_ms"]) == 25  # no tolerance: exactly RUNS (edgecomp profile, benchmarks)
