"""The Ray executor on a local Ray instance (127.0.0.1, torn down after each test): the same plan as the
serial executor, clear errors for an unreachable address, and Ray's own retry of a killed task."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgecomp[ray]'; CI installs it)")

from edgecomp.errors import EdgecompError
from edgecomp.plan.executors import SerialExecutor
from edgecomp.plan.progress import SearchProgress
from edgecomp.plan.ray_executor import RayExecutor
from edgecomp.zoo import load_zoo_model
from tests.conftest import REPO
from tests.plan.search_helpers import planner, small_target


@pytest.fixture(scope="module")
def zoo():
    """The default model, its spec and digits data (trained once and cached)."""
    return load_zoo_model()


@pytest.fixture
def local_ray():
    """A bounded local Ray instance on 127.0.0.1 (2 CPUs, no dashboard), shut down after the test."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def _numbers(p):
    return [(c.label, c.status, c.reason, c.val_accuracy, c.accuracy, c.accuracy_drop, c.epochs)
            for c in p.candidates]


def test_ray_chooses_the_same_recipe_with_the_same_numbers_as_serial(tmp_path, zoo, local_ray):
    target = small_target(tmp_path)
    serial = planner(zoo, target, executor=SerialExecutor(threads=1), early_stop=False)
    serial.search()
    on_ray = planner(zoo, target, executor=RayExecutor(threads=1), early_stop=False)
    on_ray.search()
    assert sum(c.val_accuracy is not None for c in serial.candidates) >= 3
    assert _numbers(on_ray) == _numbers(serial)
    assert on_ray.next_choice()[0].recipe == serial.next_choice()[0].recipe
    assert on_ray.summary()["executor"] == "ray"
    assert ray.is_initialized(), "a Ray instance the executor did not start is left running"


def test_a_ray_task_whose_worker_dies_twice_fails_with_rays_reason(tmp_path, zoo, local_ray, monkeypatch):
    """A task whose worker process exits is retried once by Ray (max_retries=1), then reported failed."""
    from edgecomp.plan import ray_executor
    from edgecomp.plan.tasks import EvalTask

    def die(payload, task, threads):
        os._exit(9)  # like SIGKILL: the worker process vanishes mid-task

    executor = RayExecutor(threads=1)
    monkeypatch.setattr(ray_executor, "_evaluate", die)
    p = planner(zoo, small_target(tmp_path))
    executor.start(p.model, p.ctx, lambda: b"unused")
    results = []
    executor.run([EvalTask(1, (), "doomed")], results.append, SearchProgress())
    executor.close()
    assert len(results) == 1 and results[0].error.startswith("Ray task failed after one retry")


def test_an_unreachable_ray_address_is_a_clear_error():
    with pytest.raises(EdgecompError, match="cannot reach the Ray cluster at 127.0.0.1:1") as err:
        RayExecutor("127.0.0.1:1")
    assert err.value.exit_code == 2 and "ray start --head" in err.value.hint
    with pytest.raises(EdgecompError, match="host:port"):
        RayExecutor("nonsense")


def test_cli_with_an_unreachable_ray_address_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "bundle"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "edgecomp", "build", "--out", str(out), "--max-size", "0.05MB",
                           "--ray", "127.0.0.1:1"], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "error: cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
