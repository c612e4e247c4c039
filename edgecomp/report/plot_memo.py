"""Reuse of report.html's plots across identical builds: matplotlib's import and rendering take seconds.

A plot is a pure function of the report's numbers. ``memoized`` keys each plot by its function, the source of
the plotting module, matplotlib's version and the report with the fields no plot reads removed (when the build
ran, its phases, where it was written, when each file was measured, whether it came from a cache, latencies,
seconds, the planner's notes), and keeps the base64 PNG in a small folder. Memoising is off unless a build turns it on with
``plot_memo_dir`` (``edgecomp.build`` does, except with --no-cache); a missing or unreadable entry is a miss.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from edgecomp.fsutil import write_text_atomic
from edgecomp.records import BuildReport

logger = logging.getLogger(__name__)
MAX_ENTRIES = 256  # ~50 kB each; the oldest go first
NO_PLOT = "-"  # stored for a plot function that returned None
IGNORED_TOP = ("created", "phases", "build_seconds", "bundle", "reused_from")  # read by the page, never by a plot
IGNORED_ARTIFACT = ("measured_at", "cached", "export_seconds", "latency")
IGNORED_STAGE = ("seconds",)
IGNORED_PLANNER = ("search_seconds", "reused_from", "notes")
IGNORED_CANDIDATE = ("seconds", "cached")

_memo_dir: ContextVar[Path | None] = ContextVar("plot_memo_dir", default=None)


@contextlib.contextmanager
def plot_memo_dir(folder: Path | None) -> Iterator[None]:
    """Within the block, memoised plots are looked up in and written to ``folder`` (None: not memoised)."""
    token = _memo_dir.set(folder)
    try:
        yield
    finally:
        _memo_dir.reset(token)


def plotted_content(report: BuildReport) -> dict:
    """The report as JSON without the fields that no plot reads (see the module docstring)."""
    data = report.model_dump(mode="json", exclude=set(IGNORED_TOP))
    for a in data.get("artifacts", []):
        for k in IGNORED_ARTIFACT:
            a.pop(k, None)
    for s in data.get("stages", []):
        for k in IGNORED_STAGE:
            s.pop(k, None)
    planner = data.get("planner") or {}
    for k in IGNORED_PLANNER:
        planner.pop(k, None)
    for c in planner.get("candidates", []):
        if isinstance(c, dict):
            for k in IGNORED_CANDIDATE:
                c.pop(k, None)
    return data


def _matplotlib_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("matplotlib")
    except PackageNotFoundError:
        return "none"


def plot_key(fn: Callable, report: BuildReport) -> str:
    """SHA-256 of the plot function, its module's source, matplotlib's version and the plotted content."""
    import sys

    module = sys.modules.get(fn.__module__)
    source = Path(module.__file__).read_bytes() if module is not None and module.__file__ else b""
    digest = hashlib.sha256(f"{fn.__module__}.{fn.__qualname__}:{_matplotlib_version()}\n".encode())
    digest.update(hashlib.sha256(source).digest())
    digest.update(json.dumps(plotted_content(report), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def memoized(fn: Callable[[BuildReport], str | None]) -> Callable[[BuildReport], str | None]:
    """Wrap a plot function ``report -> base64 PNG | None`` so that identical content is drawn once."""

    @functools.wraps(fn)
    def wrapper(report: BuildReport) -> str | None:
        folder = _memo_dir.get()
        if folder is None:
            return fn(report)
        path = folder / f"{plot_key(fn, report)}.b64"
        try:
            text = path.read_text()
            os.utime(path)
            return None if text == NO_PLOT else text
        except OSError:
            pass
        result = fn(report)
        _store(folder, path, NO_PLOT if result is None else result)
        return result

    return wrapper


def _store(folder: Path, path: Path, text: str) -> None:
    """Write atomically (a concurrent build sees a whole entry or none), then keep the newest MAX_ENTRIES."""
    try:
        write_text_atomic(path, text)
        entries = sorted(folder.glob("*.b64"), key=lambda p: p.stat().st_mtime)
        for old in entries[: max(0, len(entries) - MAX_ENTRIES)]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        logger.debug("plot memo %s not written (%s)", folder, exc)
