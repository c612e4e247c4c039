"""``--ray [ADDRESS]``: candidate evaluations as Ray tasks (the optional ``edgecomp[ray]`` extra).

Ray does the scheduling: the search's payload (model weights and build context, see ``tasks.py``) is put
in Ray's object store once and every task reads it from there; tasks are submitted together and collected
with ``ray.wait`` as they finish; a task whose worker dies is retried once by Ray (``max_retries=1``), then
the candidate is marked failed with Ray's reason; a task that cannot load the payload (a module the model
needs does not import on the node) stops the search with ``PayloadError``; on Ctrl-C or any error every
outstanding task is cancelled (``ray.cancel(force=True)``). Ray tasks report only their completion, not each
epoch.

``ADDRESS`` is ``auto`` (the cluster this machine belongs to), ``host:port`` or ``ray://host:port``; without
one a local Ray instance is started for the search and shut down after it. edgecomp must be installed on
every node, and data paths (image folders) readable there at the same path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from torch import nn

from edgecomp.compress.base import BuildContext
from edgecomp.errors import ConfigError, EdgecompError
from edgecomp.plan.executors import Executor, ResultCallback
from edgecomp.plan.progress import SearchProgress
from edgecomp.plan.tasks import (
    EvalResult,
    EvalTask,
    PayloadError,
    pack_result,
    run_task,
    skipped,
    unpack_payload,
)

logger = logging.getLogger(__name__)
INSTALL_HINT = "install the extra: pip install 'edgecomp[ray]' (or drop --ray to search on this machine)"
_LOADED: dict[str, tuple[nn.Module, BuildContext]] = {}  # per Ray worker process: payloads already unpickled


def _evaluate(payload: bytes, task: EvalTask, threads: int) -> EvalResult:
    """The body of a Ray task: unpickle the payload (once per worker process), run the task."""
    import torch

    torch.set_num_threads(threads)
    key = hashlib.sha256(payload).hexdigest()
    if key not in _LOADED:
        _LOADED.clear()
        try:
            _LOADED[key] = unpack_payload(payload)
        except PayloadError as exc:  # the driver stops the search with the cause
            return EvalResult(task.index, task.rung, error=exc.message, fatal=exc.cause)
    model, ctx = _LOADED[key]
    return pack_result(run_task(model, ctx, task), task.keep_model)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raise a clear error when ``host:port`` (or ``ray://host:port``) does not accept connections."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--ray address {address!r} is not of the form host:port",
                          "pass --ray auto, --ray HOST:PORT (the head's GCS port, 6379 by default) or "
                          "--ray ray://HOST:10001")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EdgecompError(f"cannot reach the Ray cluster at {address}: {exc}",
                            "start it (ray start --head --port PORT) or check the address and firewall; "
                            "--ray without an address starts a local Ray instance") from exc


class RayExecutor(Executor):
    """Evaluations as Ray tasks on the cluster at ``address`` (None: a local instance of its own)."""

    name = "ray"

    def __init__(self, address: str | None = None, threads: int | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"--ray needs Ray, which is not installed ({exc})", INSTALL_HINT) from exc
        if address not in (None, "auto"):
            check_reachable(address)  # before any work: a wrong address fails in seconds, exit 2
        self.address = address
        self.threads = threads or 1
        self._owns = False
        self._payload = None
        self._remote: Any = None

    def start(self, model: nn.Module, ctx: BuildContext, payload: Callable[[], bytes]) -> None:
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EdgecompError(f"cannot connect to Ray at {self.address or 'a new local instance'}: {exc}",
                                    "check --ray ADDRESS (auto needs a running cluster: ray start --head)") from exc
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.parallel = max(1, cpus // self.threads)
        logger.info("[plan] Ray %s: %d CPU(s) in the cluster, %d torch thread(s) per task", ray.__version__,
                    cpus, self.threads)
        self._payload = ray.put(payload())
        self._remote = ray.remote(max_retries=1, num_cpus=self.threads)(_evaluate)

    def run(self, tasks: list[EvalTask], on_result: ResultCallback, progress: SearchProgress) -> None:
        import ray

        refs: dict[Any, EvalTask] = {}
        try:
            for task in tasks:
                if task.expired():
                    on_result(skipped(task))
                    continue
                refs[self._remote.remote(self._payload, task, self.threads)] = task
                progress.started(task)
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                task = refs.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    reason = str(exc).strip().splitlines()[0][:300]
                    result = EvalResult(task.index, task.rung, error=f"Ray task failed after one retry: {reason}")
                if result.fatal:
                    raise PayloadError(result.fatal)
                on_result(result)
        except BaseException:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        import ray

        self._payload = None
        if self._owns and ray.is_initialized():
            ray.shutdown()
            self._owns = False
