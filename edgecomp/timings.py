"""Where a build's time goes: a small recorder of named phases (load, plan, stages, exports, ...).

``Timings.phase(name)`` times a block; ``Timings.add(name, seconds)`` records time measured elsewhere (a
compression stage reports its own seconds). A phase entered twice accumulates under one name, in the order
first seen, so the report lists each phase once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel, Field


class Phase(BaseModel):
    """One phase of a build and the wall time it took."""

    name: str = Field(description="Phase: load, plan:search, stage:<name>, export:<fmt>, parity:<fmt>, ...")
    seconds: float = Field(description="Wall time spent in the phase, seconds.")


class Timings:
    """Records named phases in the order they first ran; time in a repeated phase adds up."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._start = time.monotonic()

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to phase ``name`` (created at the end of the list if new)."""
        self._seconds[name] = self._seconds.get(name, 0.0) + max(0.0, float(seconds))

    def pop(self, name: str) -> float:
        """Remove phase ``name`` and return its seconds (0 if it never ran)."""
        return self._seconds.pop(name, 0.0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as phase ``name`` (recorded also when the block raises)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - start)

    def elapsed(self) -> float:
        """Seconds since this recorder was created."""
        return time.monotonic() - self._start

    def phases(self) -> list[Phase]:
        """The phases so far, rounded to milliseconds."""
        return [Phase(name=n, seconds=round(s, 3)) for n, s in self._seconds.items()]


def phase_table(phases: list[Phase], total_seconds: float | None = None) -> str:
    """Console block: one line per phase with seconds, share of the total and a bar."""
    if not phases:
        return ""
    total = total_seconds if total_seconds else sum(p.seconds for p in phases)
    width = max(len(p.name) for p in phases + [Phase(name="total", seconds=0)])
    lines = ["time by phase:"]
    for p in phases:
        share = p.seconds / total if total > 0 else 0.0
        lines.append(f"  {p.name.ljust(width)}  {p.seconds:7.2f} s  {share * 100:5.1f} %  {'#' * round(share * 30)}")
    lines.append(f"  {'total'.ljust(width)}  {total:7.2f} s")
    return "\n".join(lines)


def phase_bars_html(phases: list[Phase], total_seconds: float | None = None) -> str:
    """HTML section: a horizontal bar per phase, scaled to the longest (no images, no scripts)."""
    import html

    if not phases:
        return ""
    longest = max(p.seconds for p in phases) or 1.0
    total = total_seconds if total_seconds else sum(p.seconds for p in phases)
    rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(p.name)}</td><td>{p.seconds:.2f}</td>"
        f"<td style='text-align:left;width:420px'><div style='background:#4a7bb7;height:12px;"
        f"width:{max(1, round(400 * p.seconds / longest))}px'></div></td></tr>" for p in phases)
    return (f"<h2>Time by phase</h2><table><tr><th>phase</th><th>seconds</th><th></th></tr>{rows}"
            f"<tr><td style='text-align:left'><b>total</b></td><td><b>{total:.2f}</b></td><td></td></tr></table>")
