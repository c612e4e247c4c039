"""The build report: ``report.json`` (machine-readable), a console table, and ``report.html``.

Every number says where it came from (``measured:host``, ``measured:device:<serial>``,
``predicted:<profile>``); a parity that was not measured is reported as ``not-run``, never as passed.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from pydantic import BaseModel, Field

from edgecomp.export.parity import Parity
from edgecomp.profile.host import Latency


class ModelRecord(BaseModel):
    """The source model as loaded."""

    name: str = Field(description="Model name.")
    source: str = Field(description="Where the model came from (file, factory or built-in).")
    params: int = Field(description="Parameter count.")
    macs: int = Field(description="Multiply-accumulates per inference.")
    accuracy: float | None = Field(None, description="Top-1 on the test split, percent, if data is known.")


class StageRecord(BaseModel):
    """One compression stage as it ran, measured after it."""

    name: str = Field(description="Stage (method) name.")
    config: dict[str, Any] = Field(default_factory=dict, description="Settings the stage ran with.")
    seconds: float = Field(description="Wall time of the stage.")
    params: int = Field(description="Parameter count after the stage.")
    macs: int = Field(description="MACs per inference after the stage.")
    accuracy: float | None = Field(None, description="Top-1 on the test split after the stage, percent.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Stage-specific measurements.")
    notes: list[str] = Field(default_factory=list, description="What the stage wants the user to know.")


class ArtifactRecord(BaseModel):
    """One exported file: size, checks, speed."""

    format: str = Field(description="onnx, tflite or coreml.")
    status: str = Field("ok", description="ok, or failed with the reason in notes.")
    path: str | None = Field(None, description="Path inside the bundle.")
    dtype: str | None = Field(None, description="Numeric type of the weights.")
    bytes: int | None = Field(None, description="Size on disk.")
    sha256: str | None = Field(None, description="SHA-256 of the file.")
    export_seconds: float | None = Field(None, description="Time the exporter took.")
    parity: Parity | None = Field(None, description="Parity against the PyTorch model.")
    accuracy: float | None = Field(None, description="Top-1 of this artifact on the parity inputs, percent.")
    latency: Latency | None = Field(None, description="Host (or device) latency, measured.")
    predicted_latency: Latency | None = Field(None, description="Latency predicted for the target hardware.")
    details: dict[str, Any] = Field(default_factory=dict, description="Format-specific facts (e.g. byte breakdown).")
    notes: list[str] = Field(default_factory=list, description="Anything the user should know.")


class BuildReport(BaseModel):
    """Everything a build did, as written to report.json."""

    schema_version: int = Field(1, description="Version of this report schema.")
    edgecomp_version: str = Field(description="edgecomp version.")
    created: str = Field(description="UTC time, ISO 8601.")
    target: str = Field(description="Target name.")
    hardware: str = Field(description="Hardware profile used for predictions.")
    budgets: dict[str, Any] = Field(default_factory=dict, description="Budgets the build aimed at.")
    model: ModelRecord = Field(description="The source model.")
    recipe: list[str] = Field(default_factory=list, description="Stages applied, in order, in recipe syntax.")
    stages: list[StageRecord] = Field(default_factory=list, description="Each stage, measured.")
    artifacts: list[ArtifactRecord] = Field(default_factory=list, description="Each exported file.")
    parity_inputs: str = Field("", description="What the parity check fed the models.")
    planner: dict[str, Any] | None = Field(None, description="The planner's candidates and decision, if it ran.")
    environment: dict[str, str] = Field(default_factory=dict, description="Versions of the tools used.")
    bundle: str = Field("", description="Folder the bundle was written to.")


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def console_table(report: BuildReport) -> str:
    """The closing table printed by the CLI: one row per artifact."""
    rows = [("format", "dtype", "MB", "parity", "max abs err", "top-1 agree", "acc %", "p50 ms", "source")]
    for a in report.artifacts:
        p, lat = a.parity, a.latency
        rows.append((
            a.format, a.dtype or "-", _fmt(a.bytes / 1e6 if a.bytes else None, ".4f"),
            (p.status if p else a.status), _fmt(p.max_abs_err if p else None, ".2e"),
            _fmt(p.top1_agreement if p else None, ".1f"), _fmt(a.accuracy, ".2f"),
            _fmt(lat.p50_ms if lat else None, ".3f"), lat.source if lat else "-",
        ))
        if a.predicted_latency:
            rows.append(("", "", "", "", "", "", "", _fmt(a.predicted_latency.p50_ms, ".3f"),
                         a.predicted_latency.source))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def stage_plot(report: BuildReport) -> str:
    """Base64 PNG: params, MACs and accuracy after each stage (source model first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["source"] + [s.name for s in report.stages]
    params = [report.model.params] + [s.params for s in report.stages]
    macs = [report.model.macs] + [s.macs for s in report.stages]
    acc = [report.model.accuracy] + [s.accuracy for s in report.stages]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, values, title in zip(axes, (params, macs, acc), ("parameters", "MACs", "accuracy %")):
        ax.bar(names, [v or 0 for v in values], color="#4a7bb7")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    data = _png(fig)
    plt.close(fig)
    return data


def render_html(report: BuildReport, extra_sections: list[str] | None = None) -> str:
    """A self-contained HTML page (plots inlined as PNG) for the report."""
    esc = html.escape
    head = ["format", "dtype", "bytes", "parity", "max abs err", "top-1 agree %", "accuracy %", "p50 ms", "source"]
    rows = []
    for a in report.artifacts:
        p, lat = a.parity, a.latency
        cells = [a.format, a.dtype or "-", a.bytes or "-", (p.status if p else a.status),
                 _fmt(p.max_abs_err if p else None, ".2e"), _fmt(p.top1_agreement if p else None, ".1f"),
                 _fmt(a.accuracy, ".2f"), _fmt(lat.p50_ms if lat else None), lat.source if lat else "-"]
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
        notes = a.notes + ([p.note] if p and p.note else [])
        if notes:
            rows.append(f"<tr><td></td><td colspan='8'><i>{esc('; '.join(notes))}</i></td></tr>")
    stage_rows = "".join(
        f"<tr><td>{esc(s.name)}</td><td>{s.params:,}</td><td>{s.macs:,}</td><td>{_fmt(s.accuracy, '.2f')}</td>"
        f"<td>{s.seconds:.1f}</td><td>{esc('; '.join(s.notes))}</td></tr>" for s in report.stages
    )
    m = report.model
    sections = "".join(extra_sections or [])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgecomp: {esc(m.name)} for {esc(report.target)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#eee}}</style></head><body>
<h1>{esc(m.name)} &rarr; {esc(report.target)}</h1>
<p>Hardware profile <b>{esc(report.hardware)}</b>; recipe <b>{esc(' -> '.join(report.recipe) or 'none (fp32 export)')}</b>;
source model {m.params:,} parameters, {m.macs:,} MACs, accuracy {_fmt(m.accuracy, '.2f')}%. Built {esc(report.created)}.</p>
<h2>Artifacts</h2><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>
<p>Parity inputs: {esc(report.parity_inputs)}</p>
<h2>Stages</h2><table><tr><th>stage</th><th>params</th><th>MACs</th><th>accuracy %</th><th>seconds</th><th>notes</th></tr>
<tr><td>source</td><td>{m.params:,}</td><td>{m.macs:,}</td><td>{_fmt(m.accuracy, '.2f')}</td><td></td><td></td></tr>{stage_rows}</table>
<img alt="params, MACs and accuracy per stage" src="data:image/png;base64,{stage_plot(report)}">
{sections}
</body></html>
"""
