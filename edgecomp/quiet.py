"""Third-party chatter off the console: what converters, quantizers and runtimes print goes to the debug log.

Converters (litert-torch, torch.onnx, coremltools), quantizers (torchao) and runtimes (LiteRT, onnxruntime)
print progress, import-time notices and C++ INFO lines that a user cannot act on, some of them straight to
file descriptors 1 and 2 where ``contextlib.redirect_stdout`` cannot reach. :func:`captured_output` sends
fds 1/2 to a temporary file while its body runs, then replays each captured line to the
``edgecomp.thirdparty`` logger at DEBUG (shown by ``edgecomp --debug``). Console handlers of the logging
system keep writing to the real terminal meanwhile, so edgecomp's own progress lines still appear live.

:class:`ConsoleFilter` is the other half: on the console, records of other packages' loggers show only at
ERROR and above (their warnings, e.g. torchao's "Failed to load ... .so", are not actionable).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

THIRDPARTY = logging.getLogger("edgecomp.thirdparty")
MAX_LINES = 2000  # replayed per captured block; the rest is counted, not logged
_STD_FDS = (1, 2)
F = TypeVar("F", bound=Callable)


class ConsoleFilter(logging.Filter):
    """Console filter: edgecomp's own records at any level; other packages' only at ERROR and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        """True when ``record`` belongs on the console."""
        own = record.name == "edgecomp" or record.name.startswith("edgecomp.")
        return own or record.levelno >= logging.ERROR


class _BelowWarning(logging.Filter):
    """Drops records below WARNING from loggers named ``prefix...``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(self.prefix)


@contextlib.contextmanager
def off_console(prefix: str) -> Iterator[None]:
    """For the block, INFO records of loggers named ``prefix...`` skip the console (every root handler above
    DEBUG level); the debug log and ``--debug`` still get them, warnings still show.

    The planner's screening applies each candidate's stages silently this way: their per-layer lines belong to
    the build that runs a recipe, not to a screen of fifteen candidates.
    """
    quiet = _BelowWarning(prefix)
    handlers = [h for h in logging.getLogger().handlers if h.level > logging.DEBUG]
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def _fd_of(stream: object) -> int | None:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def _flush_all() -> None:
    """Flush Python's and C's stdio buffers so buffered text lands where it was written."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        _libc().fflush(None)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def _console_handlers() -> list[logging.StreamHandler]:
    """Stream handlers of the root and edgecomp loggers that write to fd 1 or 2."""
    found = []
    for name in ("", "edgecomp"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and _fd_of(handler.stream) in _STD_FDS:
                found.append(handler)
    return found


@contextlib.contextmanager
def _handlers_on(saved: dict[int, int]) -> Iterator[None]:
    """Point console handlers at the saved (real) fds while fds 1/2 are redirected."""
    moved: list[tuple[logging.StreamHandler, IO[str], IO[str]]] = []
    for handler in _console_handlers():
        fd = _fd_of(handler.stream)
        if fd not in saved:
            continue
        encoding = getattr(handler.stream, "encoding", None) or "utf-8"
        real = open(saved[fd], "w", buffering=1, encoding=encoding, errors="backslashreplace",  # noqa: SIM115
                    closefd=False)
        moved.append((handler, handler.setStream(real), real))
    try:
        yield
    finally:
        for handler, old, real in moved:
            handler.setStream(old)
            real.close()  # closefd=False: the saved fd stays open


def _replay(label: str, text: str, error: BaseException | None) -> None:
    lines = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    if error is not None:
        THIRDPARTY.debug("[%s] failed (%s: %s); the %d line(s) it printed follow", label,
                         type(error).__name__, error, len(lines))
    dropped = max(0, len(lines) - MAX_LINES)
    if dropped:
        THIRDPARTY.debug("[%s] %d earlier line(s) not logged", label, dropped)
    for line in lines[dropped:]:
        THIRDPARTY.debug("[%s] %s", label, line)


@contextlib.contextmanager
def captured_output(label: str) -> Iterator[None]:
    """Capture everything written to fds 1 and 2 in the body; replay it at DEBUG to ``edgecomp.thirdparty``.

    ``label`` names the step in each replayed line (``[tflite export] ...``). Exceptions propagate
    unchanged (the captured text is still logged first, after a line naming the error); fds 1/2 are
    restored on every exit, and nested use is safe (the inner block replays into the outer capture's
    logging, which reaches the real console).
    """
    _flush_all()
    saved: dict[int, int] = {}
    with tempfile.TemporaryFile() as sink:
        error: BaseException | None = None
        try:
            for fd in _STD_FDS:
                with contextlib.suppress(OSError):  # an fd that is closed is not captured
                    saved[fd] = os.dup(fd)
                    os.dup2(sink.fileno(), fd)
            # Python-level writes too, for when sys.stdout/sys.stderr are not fds 1/2 (pytest, notebooks)
            text = open(sink.fileno(), "w", buffering=1, encoding="utf-8", errors="replace",  # noqa: SIM115
                        closefd=False)
            with _handlers_on(saved), text, contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            _flush_all()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            _replay(label, sink.read().decode("utf-8", errors="replace"), error)


def quiet(label: str) -> Callable[[F], F]:
    """Decorator: run the function inside :func:`captured_output` ``(label)``."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with captured_output(label):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
