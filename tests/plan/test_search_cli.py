"""``edgecomp build --workers 2`` end to end: the bundle's report says how the search ran, rung by rung."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.plan.search_helpers import small_target


def test_a_build_with_two_workers_and_halving_reports_its_executor_rungs_and_epochs(tmp_path):
    small_target(tmp_path)  # writes search-test.yaml: prune.filter and int8, 0.08 MB
    out = tmp_path / "bundle"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "edgecomp", "build", "--target", str(tmp_path / "search-test.yaml"),
                           "--out", str(out), "--workers", "2", "--max-finetune-epochs", "9", "--fresh-search",
                           "--runs", "2"], check=False, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    planner = json.loads((out / "report.json").read_text())["planner"]
    assert planner["executor"] == "workers" and planner["workers"] == 2 and planner["threads_per_evaluation"] >= 1
    # the middle rung runs unless the first rung measured it dearer than the full budget for every survivor
    caps = [r["max_epochs"] for r in planner["rungs"]]
    assert caps == [1, 3, 9] or (caps == [1, 9] and planner["rungs"][0]["next"] == "straight to the full budget")
    stopped = [c for c in planner["candidates"] if c["status"] == "stopped"]
    assert stopped and all(len(c["rungs"]) in (1, 2) for c in stopped)
    assert planner["screen_seconds"] > 0 and ", screening " in proc.stdout
    assert planner["epochs_spent"] == sum(c["epochs"] for c in planner["candidates"]) > 0
    assert "search   workers (2 at a time" in proc.stdout and "rung 1   1 epochs:" in proc.stdout
    assert "[plan rung 1/3]" in proc.stderr + proc.stdout  # plain progress lines: not a terminal (planned: 3)
    assert "[plan screen]" in proc.stderr + proc.stdout
    assert "val per rung" in (out / "report.html").read_text()
