"""Plots of report.html are memoised by what they draw: reused when only unplotted fields change, redrawn else."""

from __future__ import annotations

import re
from pathlib import Path

from edgecomp.records import ArtifactRecord, BuildReport, Latency, ModelRecord, StageRecord
from edgecomp.report import plot_memo, plots
from edgecomp.report.plot_memo import plot_memo_dir, plotted_content
from edgecomp.timings import Phase


def _report(**changes) -> BuildReport:
    report = BuildReport(
        edgecomp_version="0", created="2026-01-01T00:00:00+00:00", target="android-arm64", hardware="cortex-a76",
        model=ModelRecord(name="net", source="built-in:net", params=1000, macs=5000, accuracy=98.0),
        stages=[StageRecord(name="prune.filter", seconds=3.0, params=600, macs=3000, accuracy=97.5,
                            weight_bytes=2400)],
        artifacts=[ArtifactRecord(format="onnx", dtype="fp32", bytes=3000, measured_at="2026-01-01T00:00:00+00:00",
                                  latency=Latency(p50_ms=0.1, source="measured:host"))],
    )
    return report.model_copy(update=changes)


def test_unplotted_fields_are_ignored_and_no_plot_reads_them():
    base = plotted_content(_report())
    later = _report(created="2027-01-01T00:00:00+00:00", phases=[Phase(name="load", seconds=1.0)], bundle="b",
                    build_seconds=9.0)
    later.artifacts[0].cached, later.artifacts[0].measured_at = True, "2027-01-01T00:00:00+00:00"
    later.artifacts[0].latency.p50_ms = 0.2
    later.stages[0].seconds = 1.0
    assert plotted_content(later) == base
    source = Path(plots.__file__).read_text()
    ignored = (*plot_memo.IGNORED_TOP, *plot_memo.IGNORED_ARTIFACT, *plot_memo.IGNORED_STAGE,
               *plot_memo.IGNORED_PLANNER, *plot_memo.IGNORED_CANDIDATE)
    read = {f for f in ignored if re.search(rf"\.{f}\b|\[[\"']{f}[\"']\]|get\([\"']{f}[\"']", source)}
    assert not read, f"plots.py reads {read}: remove them from the memo's ignored fields"


def test_a_plot_is_drawn_once_per_content_and_redrawn_when_a_plotted_number_changes(tmp_path):
    drawn = []
    real = plots.stage_plot.__wrapped__

    @plot_memo.memoized
    def counting(report):
        drawn.append(report.stages[0].params)
        return real(report)

    with plot_memo_dir(tmp_path):
        first = counting(_report())
        again = counting(_report(created="later"))
        smaller = _report()
        smaller.stages[0].params = 500
        changed = counting(smaller)
    assert drawn == [600, 500] and again == first and changed != first
    assert counting(_report()) is not None and drawn == [600, 500, 600]  # outside the block: not memoised
    assert len(list(tmp_path.glob("*.b64"))) == 2
