"""The one measuring loop: interleaved shuffled rounds, the fastest run kept, each round's median as noise."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecomp.profile.microbench import microbench_files
from edgecomp.profile.timed_runs import (
    Round,
    Timed,
    load_average,
    time_rounds,
    time_tflite,
    to_measurements,
)


def test_rounds_interleave_every_file_and_thread_count_and_keep_the_fastest():
    files = {"a": Path("a.tflite"), "b": Path("b.tflite"), "c": Path("c.tflite")}
    calls: list[tuple[str, int]] = []
    slow = {0: 3.0, 1: 1.0, 2: 2.0}  # the machine's load in each round: round 2 is the quiet one

    def timer(path: Path, threads: int) -> Round:
        calls.append((path.stem, threads))
        load = slow[len(calls) // 6 - (len(calls) % 6 == 0)]
        base = {"a": 1.0, "b": 2.0, "c": 4.0}[path.stem] / threads
        return Round([base * load, base * load * 1.5, base * load * 1.1], clean=load < 3 or threads == 1)

    timed = time_rounds(files, (1, 2), timer, rounds=3)
    assert list(timed) == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    rounds = [calls[i:i + 6] for i in (0, 6, 12)]
    assert all(sorted(r) == sorted(timed) for r in rounds)  # each once per round
    assert rounds[0] != rounds[1] or rounds[1] != rounds[2]  # in a shuffled order
    assert timed[("c", 2)].ms == pytest.approx(2.0)  # the quiet round's fastest run
    assert timed[("c", 2)].fastest == pytest.approx([6.0, 2.0, 4.0])
    assert timed[("c", 2)].load_excess == pytest.approx(0.1)  # best median 2.2 over fastest 2.0
    assert timed[("c", 2)].clean == [False, True, True] and not timed[("c", 2)].contended


def test_contended_rounds_count_only_when_no_round_ran_clean():
    t = Timed()
    t.add(Round([1.0], clean=False))  # fast but contended (a lucky run of a loaded machine): left out
    t.add(Round([2.0, 2.2]))
    assert (t.ms, t.contended) == (2.0, False)
    t = Timed()
    for ms in (3.0, 2.5):
        t.add(Round([ms], clean=False))
    assert (t.ms, t.contended) == (2.5, True)


def test_timed_of_a_single_reported_figure_has_no_excess():
    t = Timed()
    t.add(Round([5.0]))
    t.add(Round([4.0]))
    assert (t.ms, t.load_excess, t.medians) == (4.0, 0.0, [5.0, 4.0])


def test_litert_times_become_measurements_with_the_files_layers():
    files = microbench_files(["fully_connected"])
    timed = time_rounds(files, (1,), lambda path, t: time_tflite(path, t, runs=3, budget_s=0.0), rounds=2)
    runs = to_measurements(files, timed, lambda key, t: f"{key[0]}:{key[1]}:{t}", "measured:host")
    assert sorted(m.name for m in runs) == ["fully_connected:fp32:1", "fully_connected:int8:1"]
    for m in runs:
        assert m.measured_ms > 0 and m.threads == 1 and m.source == "measured:host"
        assert m.dtype == m.name.split(":")[1] and any(layer.op == "fc" for layer in m.layers)
        assert len(timed[((m.name.split(":")[0], m.dtype), 1)].fastest) == 2
    assert "cores" in load_average()


def test_a_two_thread_round_without_a_cpu_for_each_thread_is_contended(monkeypatch):
    from edgecomp.profile import timed_runs

    path = microbench_files(["conv3x3"])[("conv3x3", "fp32")]
    clock = {"wall": 0.0, "cpu": 0.0, "cpus": 2.0}

    def invoke() -> None:  # a run of 1 ms of wall time on as many CPUs as the process has
        clock["wall"] += 1e-3
        clock["cpu"] += 1e-3 * clock["cpus"]

    class Fake:
        def __init__(self, *args, **kwargs) -> None:
            self.invoke = invoke

        def allocate_tensors(self) -> None:
            pass

        def get_input_details(self) -> list:
            return []

    import ai_edge_litert.interpreter

    monkeypatch.setattr(ai_edge_litert.interpreter, "Interpreter", Fake)
    monkeypatch.setattr(timed_runs, "process_cpu_s", lambda: clock["cpu"])
    monkeypatch.setattr(timed_runs.time, "perf_counter", lambda: clock["wall"])
    for cpus, clean in ((2.0, True), (1.3, True), (1.0, False), (0.7, False)):  # a loaded machine gave us 1 CPU
        clock["cpus"] = cpus
        result = time_tflite(path, 2, runs=4, budget_s=60, warmup=0)
        assert (result.times, result.clean) == (pytest.approx([1.0] * 4), clean)
    assert time_tflite(path, 1, runs=3, budget_s=60, warmup=0).clean  # one thread: its own CPU time


def test_a_fit_can_leave_out_the_timings_of_a_loaded_machine(caplog):
    files = microbench_files(["fully_connected"])
    timed = {}
    for key in files:
        timed[(key, 1)], timed[(key, 2)] = Timed(), Timed()
        timed[(key, 1)].add(Round([1.0]))
        timed[(key, 2)].add(Round([3.0], clean=False))
    name = lambda key, t: f"{key[1]}:{t}"
    assert len(to_measurements(files, timed, name)) == 4
    kept = to_measurements(files, timed, name, drop_contended=True)
    assert sorted(m.name for m in kept) == ["fp32:1", "int8:1"]
    assert "left out 2 of 4 timings" in caplog.text and "quieter machine" in caplog.text


def test_extra_rounds_time_again_only_what_ran_contended():
    files = {"a": Path("a.tflite"), "b": Path("b.tflite")}
    calls: list[tuple[str, int]] = []

    def timer(path: Path, threads: int) -> Round:  # b on 2 threads is contended until its 4th run
        calls.append((path.stem, threads))
        return Round([1.0], clean=(path.stem, threads) != ("b", 2) or calls.count(("b", 2)) >= 4)

    timed = time_rounds(files, (1, 2), timer, rounds=2, extra_rounds=5)
    assert len(calls) == 2 * 4 + 2 and calls[8:] == [("b", 2), ("b", 2)]  # then it ran clean: no more rounds
    assert not timed[("b", 2)].contended and timed[("b", 2)].clean == [False, False, False, True]
