"""Where candidate evaluations run: in this process (serial), in local worker processes, or on Ray.

The planner hands an executor a list of ``EvalTask``s (one rung) and gets every ``EvalResult`` back through
``on_result`` as tasks finish; it never runs a fine-tune itself. Each executor starts no task after the
deadline (such tasks come back ``skipped``) and passes the deadline into every task, where fine-tunes,
pruning searches and calibration stop at it.

``ProcessExecutor`` keeps N spawned worker processes (never forked: torch's thread pools do not survive a
fork), each with ``cores // N`` torch threads and the search's payload unpickled once. A worker that dies
mid-task (killed, out of memory) is replaced and its task retried once; a second death marks the candidate
failed with the exit code. A worker that cannot load the payload (a module the model needs does not import
in a new process) stops the search with ``PayloadError`` naming what it raised: every task would fail alike.
On any exception in the planner, Ctrl-C included, every worker is terminated before it propagates. The Ray
executor lives in ``ray_executor.py``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from torch import nn

from edgecomp.compress.base import BuildContext
from edgecomp.errors import ConfigError
from edgecomp.plan.progress import SearchProgress
from edgecomp.plan.tasks import (
    EvalResult,
    EvalTask,
    PayloadError,
    pack_result,
    run_task,
    skipped,
    unpack_payload,
    worker_threads,
)

logger = logging.getLogger(__name__)
ResultCallback = Callable[[EvalResult], None]
RETRIES = 1  # a task whose worker died is run once more, then marked failed


class Executor(ABC):
    """Runs candidate evaluations; ``start`` once per search, ``run`` once per rung, ``close`` at the end."""

    name: str = "executor"
    parallel: int = 1
    threads: int = 1
    """Torch threads per evaluation (every task runs with this many)."""

    def start(self, model: nn.Module, ctx: BuildContext, payload: Callable[[], bytes]) -> None:
        """Get ready to evaluate candidates of ``model`` (``payload()`` packs it for other processes)."""

    @abstractmethod
    def run(self, tasks: list[EvalTask], on_result: ResultCallback, progress: SearchProgress) -> None:
        """Run every task, calling ``on_result`` once per task as it finishes (any order)."""

    def close(self) -> None:
        """Release workers (also after an error or Ctrl-C)."""


class SerialExecutor(Executor):
    """Today's behaviour: one task after another in this process, models kept in memory."""

    name = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or worker_threads(1)

    def start(self, model: nn.Module, ctx: BuildContext, payload: Callable[[], bytes]) -> None:
        self._model, self._ctx = model, ctx

    def run(self, tasks: list[EvalTask], on_result: ResultCallback, progress: SearchProgress) -> None:
        for task in tasks:
            if task.expired():
                on_result(skipped(task))
                continue
            progress.started(task)
            on_result(run_task(self._model, self._ctx, task, progress.epoch))


# -- local worker processes ---------------------------------------------------------------------------------
def _worker_main(conn: Connection, payload: bytes, threads: int) -> None:
    """A worker process: load the payload once, then run tasks from ``conn`` until it sends None."""
    import cloudpickle
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C cancels
    torch.set_num_threads(threads)
    try:
        model, ctx = unpack_payload(payload)
    except PayloadError as exc:  # answer the first task with the cause (not a traceback on the console)
        task = conn.recv()
        if task is not None:
            conn.send_bytes(cloudpickle.dumps(("result", EvalResult(task.index, task.rung, error=exc.message,
                                                                    fatal=exc.cause))))
        return
    while True:
        task = conn.recv()
        if task is None:
            return
        result = run_task(model, ctx, task, lambda index, entry: conn.send_bytes(
            cloudpickle.dumps(("epoch", index, entry))))
        result = pack_result(result, task.keep_model)
        conn.send_bytes(cloudpickle.dumps(("result", result)))


@dataclass
class _Worker:
    process: Any
    conn: Connection


class ProcessExecutor(Executor):
    """``--workers N``: N spawned local processes, each with ``cores // N`` torch threads."""

    name = "workers"

    def __init__(self, workers: int, threads: int | None = None, start_method: str = "spawn") -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {workers}", "pass --workers 2 (or more)")
        self.parallel = workers
        self.threads = threads or worker_threads(workers)
        self._mp = mp.get_context(start_method)
        self._payload = b""
        self._workers: list[_Worker | None] = [None] * workers
        self.busy: dict[int, EvalTask] = {}
        """The task each worker slot is running now."""

    def pid(self, index: int) -> int | None:
        """The process id of the worker running candidate ``index`` now (None: not running)."""
        slot = next((s for s, t in self.busy.items() if t.index == index), None)
        worker = self._workers[slot] if slot is not None else None
        return worker.process.pid if worker is not None else None

    def start(self, model: nn.Module, ctx: BuildContext, payload: Callable[[], bytes]) -> None:
        self._payload = payload()
        logger.info("[plan] %d worker processes, %d torch thread(s) each", self.parallel, self.threads)

    def _spawn(self, slot: int) -> _Worker:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(target=_worker_main, args=(child, self._payload, self.threads),
                                name=f"edgecomp-plan-{slot}")
        proc.start()
        child.close()
        worker = self._workers[slot] = _Worker(proc, parent)
        return worker

    def run(self, tasks: list[EvalTask], on_result: ResultCallback, progress: SearchProgress) -> None:
        import cloudpickle

        pending, deaths = deque(tasks), {}
        busy = self.busy = {}
        try:
            while pending or busy:
                for slot in range(self.parallel):
                    if slot in busy or not pending:
                        continue
                    task = pending.popleft()
                    if task.expired():
                        on_result(skipped(task))
                        continue
                    worker = self._workers[slot]
                    if worker is not None and not worker.process.is_alive():  # died while idle
                        self._bury(slot)
                        worker = None
                    worker = worker or self._spawn(slot)
                    try:
                        worker.conn.send(task)
                    except OSError:  # it died just now, before the task reached it: not the task's fault
                        self._bury(slot)
                        pending.appendleft(task)
                        continue
                    busy[slot] = task
                    progress.started(task)
                if not busy:
                    continue
                waiting = {}
                for slot in busy:
                    w = self._workers[slot]
                    waiting[w.conn], waiting[w.process.sentinel] = slot, slot
                for ready in wait(list(waiting)):
                    slot = waiting[ready]
                    if slot not in busy:
                        continue
                    w = self._workers[slot]
                    try:
                        while slot in busy and w.conn.poll():
                            msg = cloudpickle.loads(w.conn.recv_bytes())
                            if msg[0] == "epoch":
                                progress.epoch(msg[1], msg[2])
                            elif msg[1].fatal:
                                raise PayloadError(msg[1].fatal)
                            else:
                                del busy[slot]
                                on_result(msg[1])
                    except (EOFError, OSError):
                        pass  # the worker died; its sentinel says so below
                    if slot in busy and not w.process.is_alive():
                        task = busy.pop(slot)
                        self._bury(slot)
                        key = (task.index, task.rung)
                        deaths[key] = deaths.get(key, 0) + 1
                        why = f"its worker process died (exit code {w.process.exitcode})"
                        if deaths[key] <= RETRIES:
                            logger.warning("  %s: %s; retrying it once", task.label, why)
                            pending.appendleft(task)
                        else:
                            on_result(EvalResult(task.index, task.rung, error=f"{why}, also on the retry"))
        except BaseException:
            self.close(kill=True)
            raise

    def _bury(self, slot: int) -> None:
        w = self._workers[slot]
        self._workers[slot] = None
        if w is not None:
            with contextlib.suppress(OSError):
                w.conn.close()
            w.process.join(timeout=5)

    def close(self, kill: bool = False) -> None:
        """Stop every worker: politely after a search, at once (SIGTERM, then SIGKILL) after an error."""
        for slot, w in enumerate(self._workers):
            if w is None:
                continue
            if not kill:
                with contextlib.suppress(OSError, ValueError):
                    w.conn.send(None)
                w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            with contextlib.suppress(OSError):
                w.conn.close()
            self._workers[slot] = None


def make_executor(workers: int | None = None, ray: str | None = None, threads: int | None = None) -> Executor:
    """The executor for ``--workers N`` / ``--ray [ADDRESS]`` (``ray='local'``: a Ray instance of its own);
    ``threads``: torch threads per evaluation (default: the cores divided among the workers; 1 on Ray)."""
    if workers is not None and ray is not None:
        raise ConfigError("--workers and --ray cannot be combined",
                          "pass --workers N for local processes, or --ray [ADDRESS] to run on Ray")
    if ray is not None:
        from edgecomp.plan.ray_executor import RayExecutor

        return RayExecutor(None if ray == "local" else ray, threads)
    if workers is not None and workers > 1:
        return ProcessExecutor(workers, threads)
    return SerialExecutor(threads)
