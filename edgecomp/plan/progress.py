"""Search progress people can read: a live line per running candidate and an overall bar on a terminal
(rich), plain log lines otherwise (CI, log files, ``--log-file``).

Executors report five events: screening begins, a rung begins, a task starts, a fine-tune epoch ends (serial and local
workers report each epoch; Ray tasks report only their completion), a task ends. The terminal display is
opened on a duplicate of stdout taken when the progress is made, because the build captures fds 1 and 2
around the search to keep third-party chatter out of the console.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from edgecomp.plan.tasks import EvalResult, EvalTask

logger = logging.getLogger(__name__)


def _escape(text: str) -> str:
    """``text`` safe inside rich markup (recipe arguments may hold square brackets)."""
    from rich.markup import escape

    return escape(text)


def _eta(started: float, epoch: int, epochs: int) -> str:
    if epoch <= 0 or epochs <= epoch:
        return ""
    left = (time.monotonic() - started) / epoch * (epochs - epoch)
    return f", ETA {left:.0f} s"


class SearchProgress:
    """Plain log lines: one when a task starts, one per epoch, one when it ends (the base for any display)."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}
        self._labels: dict[int, str] = {}
        self._rung = ""
        self.done = 0
        self.total = 0

    def begin(self, rung: int, rungs: int, tasks: int, max_epochs: int | None) -> None:
        """A rung of ``tasks`` evaluations begins (``rungs`` in all)."""
        cap = f"fine-tunes capped at {max_epochs} epochs" if max_epochs is not None else "full fine-tunes"
        self._rung = f"rung {rung + 1}/{rungs}" if rungs > 1 else "evaluate"
        self.done, self.total = 0, tasks
        logger.info("[plan %s] %d candidate(s), %s", self._rung, tasks, cap)

    def begin_screen(self, tasks: int) -> None:
        """Screening begins: ``tasks`` families of candidates, their sizes and latencies predicted."""
        self._rung = "screen"
        self.done, self.total = 0, tasks
        logger.info("[plan screen] %d famil%s of candidates (structural stages applied untrained)", tasks,
                    "y" if tasks == 1 else "ies")

    def started(self, task: EvalTask) -> None:
        """``task`` started on some worker."""
        self._started[task.index], self._labels[task.index] = time.monotonic(), task.label
        logger.info("  [%s] %s: started", self._rung, task.label)

    def epoch(self, index: int, entry: dict) -> None:
        """Candidate ``index`` finished a fine-tune epoch (entry: epoch, epochs, val_metric)."""
        started = self._started.get(index, time.monotonic())
        logger.info("  [%s] %s: epoch %d/%d, val %.2f%s", self._rung, self._labels.get(index, index),
                    entry["epoch"], entry["epochs"], entry["val_metric"],
                    _eta(started, entry["epoch"], entry["epochs"]))

    def finished(self, result: EvalResult, label: str) -> None:
        """A task ended (measured, cached, failed or skipped)."""
        self.done += 1
        self._started.pop(result.index, None)
        logger.debug("  [%s] %d/%d done: %s", self._rung, self.done, self.total, label)

    def close(self) -> None:
        """The search is over (or interrupted)."""


class LiveProgress(SearchProgress):
    """A rich display on a terminal: an overall bar for the rung and one line per running candidate."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._stream = stream
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=Console(file=stream), transient=True)
        self._overall = None
        self._lines: dict[int, Any] = {}

    def begin(self, rung: int, rungs: int, tasks: int, max_epochs: int | None) -> None:
        super().begin(rung, rungs, tasks, max_epochs)
        self._open(tasks)

    def begin_screen(self, tasks: int) -> None:
        super().begin_screen(tasks)
        self._open(tasks)

    def _open(self, tasks: int) -> None:
        self._bar.start()
        if self._overall is not None:
            self._bar.remove_task(self._overall)
        self._overall = self._bar.add_task(f"[bold]{self._rung}[/bold] candidates", total=tasks)

    def started(self, task: EvalTask) -> None:
        self._started[task.index], self._labels[task.index] = time.monotonic(), task.label
        self._lines[task.index] = self._bar.add_task(f"  {self._rung} {_escape(task.label)}: starting",
                                                     total=task.max_epochs)

    def epoch(self, index: int, entry: dict) -> None:
        line = self._lines.get(index)
        if line is None:
            return
        self._bar.update(line, completed=entry["epoch"], total=entry["epochs"],
                         description=f"  {self._rung} {_escape(self._labels[index])}: epoch {entry['epoch']}/{entry['epochs']}, "
                                     f"val {entry['val_metric']:.2f}")

    def finished(self, result: EvalResult, label: str) -> None:
        super().finished(result, label)
        line = self._lines.pop(result.index, None)
        if line is not None:
            self._bar.remove_task(line)
        if self._overall is not None:
            self._bar.update(self._overall, completed=self.done)

    def close(self) -> None:
        self._bar.stop()
        self._stream.flush()


def make_progress() -> SearchProgress:
    """A live display when stdout is a terminal and rich is installed, plain log lines otherwise."""
    try:
        if not sys.stdout.isatty():
            return SearchProgress()
        import rich  # noqa: F401

        return LiveProgress(os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1))
    except (ImportError, OSError, ValueError):
        return SearchProgress()
