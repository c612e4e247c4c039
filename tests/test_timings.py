"""Phase timings: the recorder, and a real build's phases in report.json, report.html and the console."""

from __future__ import annotations

import json

import pytest

from edgecomp.timings import Phase, Timings, phase_bars_html, phase_table


def test_phases_keep_first_seen_order_and_add_up_repeats():
    t = Timings()
    t.add("load", 1.0)
    t.add("export:onnx", 0.5)
    t.add("load", 0.25)
    with t.phase("bundle"):
        pass
    names = [p.name for p in t.phases()]
    assert names == ["load", "export:onnx", "bundle"]
    assert t.phases()[0].seconds == 1.25
    assert t.pop("export:onnx") == 0.5 and t.pop("missing") == 0.0


def test_a_phase_that_raises_is_still_recorded():
    t = Timings()
    with pytest.raises(ValueError), t.phase("export:tflite"):
        raise ValueError("boom")
    assert [p.name for p in t.phases()] == ["export:tflite"]


def test_console_block_and_html_bars_name_every_phase_and_the_total():
    phases = [Phase(name="load", seconds=3.0), Phase(name="export:onnx", seconds=1.0)]
    text = phase_table(phases, 5.0)
    assert "load" in text and "export:onnx" in text and "total" in text and "5.00 s" in text
    assert " 60.0 %" in text  # 3 of 5 seconds
    page = phase_bars_html(phases, 5.0)
    assert page.count("<tr>") == 4 and "width:400px" in page and "width:133px" in page


def test_build_reports_its_phases_in_json_html_and_console(tmp_path, capsys):
    from edgecomp.cli import main

    out = tmp_path / "bundle"
    assert main(["build", "--recipe", "quantize.fp16", "--formats", "onnx", "--runs", "3", "--no-cache",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    names = [p["name"] for p in report["phases"]]
    for expected in ("load", "stage:quantize.fp16", "parity:reference", "export:onnx", "parity:onnx",
                     "profile:onnx", "bundle"):
        assert expected in names, names
    assert names.index("load") < names.index("export:onnx") < names.index("bundle")
    assert all(p["seconds"] >= 0 for p in report["phases"])
    assert 0 < sum(p["seconds"] for p in report["phases"]) <= report["build_seconds"] + 1e-3
    assert "Time by phase" in (out / "report.html").read_text()
    console = capsys.readouterr().out
    assert "time by phase:" in console and "export:onnx" in console
