"""Search progress: plain log lines off a terminal, a rich display on one, events from worker processes."""

from __future__ import annotations

import io
import logging

from edgecomp.plan.progress import LiveProgress, SearchProgress, make_progress
from edgecomp.plan.tasks import EvalResult, EvalTask


def _events(progress: SearchProgress) -> None:
    progress.begin(0, 3, 2, 1)
    task = EvalTask(4, (), "prune.filter(ratio=0.5)", max_epochs=3)
    progress.started(task)
    progress.epoch(4, {"epoch": 1, "epochs": 3, "val_metric": 91.25})
    progress.epoch(4, {"epoch": 3, "epochs": 3, "val_metric": 95.5})
    progress.finished(EvalResult(4, 0, 95.5, 95.0), task.label)
    progress.close()


def test_plain_lines_name_the_rung_candidate_epoch_metric_and_eta(caplog):
    with caplog.at_level(logging.INFO, logger="edgecomp.plan.progress"):
        _events(SearchProgress())
    lines = [r.getMessage() for r in caplog.records]
    assert any("[plan rung 1/3] 2 candidate(s), fine-tunes capped at 1 epochs" in line for line in lines)
    assert any("[rung 1/3] prune.filter(ratio=0.5): started" in line for line in lines)
    first_epoch = next(line for line in lines if "epoch 1/3" in line)
    assert "val 91.25" in first_epoch and "ETA" in first_epoch
    assert any("epoch 3/3, val 95.50" in line and "ETA" not in line for line in lines)


def test_the_live_display_takes_the_same_events():
    stream = io.StringIO()
    progress = LiveProgress(stream)
    _events(progress)
    assert progress.done == 1 and progress.total == 2


def test_off_a_terminal_progress_is_plain_lines(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert type(make_progress()) is SearchProgress
