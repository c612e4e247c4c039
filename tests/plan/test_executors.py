"""Executors: serial and local worker processes give the same plan; a killed worker is retried once, then
its candidate fails; Ctrl-C during a parallel search leaves no bundle, no partial cache entry, no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecomp.plan.executors import ProcessExecutor, SerialExecutor, make_executor
from edgecomp.plan.progress import SearchProgress
from edgecomp.zoo import load_zoo_model
from tests.conftest import REPO
from tests.plan.search_helpers import planner, small_target


@pytest.fixture(scope="module")
def zoo():
    """The default model, its spec and digits data (trained once and cached)."""
    return load_zoo_model()


def _numbers(p):
    return [(c.label, c.status, c.reason, c.params, c.macs, c.predicted_bytes, c.predicted_ms, c.val_accuracy,
             c.accuracy, c.accuracy_drop, c.epochs) for c in p.candidates]


def test_serial_and_two_workers_choose_the_same_recipe_with_the_same_numbers(tmp_path, zoo):
    target = small_target(tmp_path)
    serial = planner(zoo, target, executor=SerialExecutor(threads=1), early_stop=False)
    serial.search()
    workers = planner(zoo, target, executor=ProcessExecutor(2, threads=1), early_stop=False)
    workers.progress = _Epochs()
    workers.search()
    evaluated = [c for c in serial.candidates if c.val_accuracy is not None]
    assert len(evaluated) >= 4, "the comparison needs several evaluated candidates"
    assert _numbers(workers) == _numbers(serial)
    assert workers.next_choice()[0].recipe == serial.next_choice()[0].recipe
    assert workers.summary()["executor"] == "workers" and workers.summary()["workers"] == 2
    assert workers.progress.screen_tasks >= 3, "each prune.filter family is screened as a task on the workers"
    reported = {index for index, _ in workers.progress.seen}
    assert reported == {i for i, c in enumerate(workers.candidates) if c.epochs}, "workers report each epoch"


class _Epochs(SearchProgress):
    """Records the epoch events that reach the planner."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []
        self.screen_tasks = 0

    def begin_screen(self, tasks: int) -> None:
        super().begin_screen(tasks)
        self.screen_tasks = tasks

    def epoch(self, index: int, entry: dict) -> None:
        super().epoch(index, entry)
        self.seen.append((index, entry["epoch"]))


class _KillOne(SearchProgress):
    """Kills the worker process running candidate ``index`` every time that candidate starts."""

    def __init__(self, executor: ProcessExecutor, index: int) -> None:
        super().__init__()
        self.executor, self.index, self.kills = executor, index, 0

    def started(self, task) -> None:
        super().started(task)
        if task.index == self.index:
            os.kill(self.executor.pid(task.index), signal.SIGKILL)
            self.kills += 1


def test_a_worker_killed_mid_task_is_retried_once_then_its_candidate_fails(tmp_path, zoo):
    import multiprocessing

    executor = ProcessExecutor(2, threads=1)
    p = planner(zoo, small_target(tmp_path), executor=executor, early_stop=False)
    victim = 2
    p.progress = _KillOne(executor, victim)
    p.search()
    assert p.progress.kills == 2, "killed on the first run and on the one retry"
    c = p.candidates[victim]
    assert c.status == "failed" and "worker process died" in c.reason and "retry" in c.reason
    assert sum(o.val_accuracy is not None for o in p.candidates) >= 3, "the other candidates were evaluated"
    assert p.next_choice() is not None, "the plan completes from the other candidates"
    assert not multiprocessing.active_children(), "every worker process is gone after the search"


def test_make_executor_chooses_by_flags():
    assert isinstance(make_executor(), SerialExecutor)
    assert isinstance(make_executor(workers=1), SerialExecutor)
    ex = make_executor(workers=2, threads=3)
    assert isinstance(ex, ProcessExecutor) and ex.parallel == 2 and ex.threads == 3
    from edgecomp.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be combined"):
        make_executor(workers=2, ray="auto")


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    """A process's command line ("" once it has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_ctrl_c_during_a_parallel_search_leaves_no_bundle_no_cache_entry_and_no_process(tmp_path, zoo):
    import shutil

    from edgecomp.zoo import cache_dir

    small_target(tmp_path)  # writes search-test.yaml
    target = tmp_path / "search-test.yaml"
    out, cache = tmp_path / "bundle", tmp_path / "cache"
    shutil.copytree(cache_dir() / "zoo", cache / "zoo")  # the trained default model, not a retrain
    env = {**os.environ, "EDGECOMP_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    # A job started in the background by a non-interactive shell (`pytest &`, nohup, some CI runners) inherits
    # SIGINT ignored, and so would the build: the build restores Python's Ctrl-C handler first, as a terminal's
    # foreground process has it (spawned workers start with the default again, as from a terminal).
    foreground = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "from edgecomp.cli import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", foreground, "build", "--target", str(target), "--out", str(out),
                             "--workers", "2", "--max-finetune-epochs", "50", "--no-early-stop"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    workers: set[int] = set()
    try:
        for line in proc.stdout:  # wait for a fine-tune under way, so the search is mid-evaluation on workers
            if line.lstrip().startswith("[evaluate]") and ": epoch " in line:
                break
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            workers |= {p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)}
            time.sleep(0.2)
        seen = f"saw {len(workers)} worker process(es) within {time.monotonic() - deadline + 60:.0f} s"
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(workers) >= 2, f"the search was running in worker processes when interrupted ({seen})"
    assert proc.returncode == 130, f"{seen}\n{rest}"
    assert "interrupted" in rest
    assert not any(_alive(p) for p in workers), "no worker process outlives the build"
    assert not out.exists(), "an interrupted build leaves no bundle"
    plans = cache / "plans"
    leftovers = [f.name for f in plans.rglob("*") if f.name.endswith(".tmp")] if plans.exists() else []
    assert not leftovers, "no partial cache entries"
