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
from edgecomp.timings import Phase, phase_bars_html


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
    weight_bytes: int | None = Field(
        None, description="Parameters x bytes per weight of the dtype the model now exports with (an estimate; "
                          "artifacts[] hold the real file sizes).")
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
    measured_at: str | None = Field(None, description="UTC time (ISO 8601) the file was exported and measured.")
    cached: bool = Field(False, description="Reused from the artifact cache: file, parity and latency are those "
                                            "measured at measured_at by an identical earlier build.")


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
    phases: list[Phase] = Field(default_factory=list, description="Wall time of each phase of the build, in order.")
    build_seconds: float | None = Field(None, description="Wall time of the whole build up to writing this report.")


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
    lines += [f"{a.format}: cached from {a.measured_at} (identical export; --no-cache rebuilds it)"
              for a in report.artifacts if a.cached]
    return "\n".join(lines)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def stage_plot(report: BuildReport) -> str:
    """Base64 PNG: params, MACs, bytes and accuracy after each stage (source model first).

    The bytes panel shows each stage's weight bytes (parameters x bytes per weight of its export dtype)
    and then, in a second colour, the real size of every exported file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["source"] + [s.name for s in report.stages]
    params = [report.model.params] + [s.params for s in report.stages]
    macs = [report.model.macs] + [s.macs for s in report.stages]
    acc = [report.model.accuracy] + [s.accuracy for s in report.stages]
    weight_bytes = [4 * report.model.params] + [s.weight_bytes for s in report.stages]
    files = [a for a in report.artifacts if a.bytes]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3))
    for ax, values, title in zip(axes[[0, 1, 3]], (params, macs, acc), ("parameters", "MACs", "accuracy %")):
        ax.bar(names, [v or 0 for v in values], color="#4a7bb7")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    ax = axes[2]
    ax.bar(names, [v or 0 for v in weight_bytes], color="#4a7bb7", label="weights (params x dtype)")
    if files:
        ax.bar([f"{a.format} file" for a in files], [a.bytes for a in files], color="#e08a3c", label="exported file")
    ax.set_title("bytes")
    ax.legend(fontsize=7)
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
        notes = (([f"cached from {a.measured_at}"] if a.cached else []) + a.notes
                 + ([p.note] if p and p.note else []))
        if notes:
            rows.append(f"<tr><td></td><td colspan='8'><i>{esc('; '.join(notes))}</i></td></tr>")
    stage_rows = "".join(
        f"<tr><td>{esc(s.name)}</td><td>{s.params:,}</td><td>{s.macs:,}</td>"
        f"<td>{'-' if s.weight_bytes is None else f'{s.weight_bytes:,}'}</td><td>{_fmt(s.accuracy, '.2f')}</td>"
        f"<td>{s.seconds:.1f}</td><td>{esc('; '.join(s.notes))}</td></tr>" for s in report.stages
    )
    m = report.model
    sections = (planner_section(report) + phase_bars_html(report.phases, report.build_seconds)
                + "".join(extra_sections or []))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgecomp: {esc(m.name)} for {esc(report.target)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#eee}}img{{max-width:100%}}</style></head><body>
<h1>{esc(m.name)} &rarr; {esc(report.target)}</h1>
<p>Hardware profile <b>{esc(report.hardware)}</b>; recipe <b>{esc(' -> '.join(report.recipe) or 'none (fp32 export)')}</b>;
source model {m.params:,} parameters, {m.macs:,} MACs, accuracy {_fmt(m.accuracy, '.2f')}%. Built {esc(report.created)}.</p>
<h2>Artifacts</h2><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>
<p>Parity inputs: {esc(report.parity_inputs)}</p>
<h2>Stages</h2><table><tr><th>stage</th><th>params</th><th>MACs</th><th>weight bytes</th><th>accuracy %</th><th>seconds</th><th>notes</th></tr>
<tr><td>source</td><td>{m.params:,}</td><td>{m.macs:,}</td><td>{4 * m.params:,}</td><td>{_fmt(m.accuracy, '.2f')}</td><td></td><td></td></tr>{stage_rows}</table>
<img alt="params, MACs, bytes and accuracy per stage" src="data:image/png;base64,{stage_plot(report)}">
{sections}
</body></html>
"""


def plan_candidates(report: BuildReport) -> list[dict]:
    """The planner's candidates as plain dicts (empty when the build ran a given recipe)."""
    cands = (report.planner or {}).get("candidates", [])
    return [c.model_dump() if isinstance(c, BaseModel) else c for c in cands]


def _lost_to(c: dict, chosen: dict) -> str:
    """Why a feasible candidate lost to the chosen one: accuracy first, then size, then latency."""
    acc = f"val accuracy {c['val_accuracy']:.2f}%"
    if round(c["val_accuracy"], 2) != round(chosen.get("val_accuracy") or 0.0, 2):
        return f"{acc}, less accurate than the chosen one"
    if c["predicted_bytes"] != chosen["predicted_bytes"]:
        return (f"{acc}, as accurate as the chosen one but larger ({c['predicted_bytes'] / 1e6:.4f} MB vs "
                f"{chosen['predicted_bytes'] / 1e6:.4f} MB)")
    return f"{acc}, as accurate and as large as the chosen one but slower ({c['predicted_ms']:.4f} ms)"


def explain_plan(report: BuildReport) -> str:
    """A few lines on the planner's decision: what was tried, why the winner won, why others lost."""
    cands = plan_candidates(report)
    b = report.budgets
    budget = ", ".join(x for x in (
        f"size <= {b['size_mb']} MB" if b.get("size_mb") is not None else "",
        f"latency <= {b['latency_ms']} ms on {report.hardware}" if b.get("latency_ms") is not None else "",
        f"accuracy drop <= {b['accuracy_drop_pct']} pt" if b.get("accuracy_drop_pct") is not None else "") if x)
    label = lambda c: " -> ".join(c["recipe"]) or "fp32 (untouched)"
    lines = [f"planner: budgets {budget or 'none'}; {len(cands)} candidates"]
    by_status: dict[str, list[dict]] = {}
    for c in cands:
        by_status.setdefault(c["status"], []).append(c)
    chosen = by_status.get("chosen", [])
    for c in chosen:
        feasible = len(by_status.get("feasible", [])) + 1
        acc = f"val accuracy {c['val_accuracy']:.2f}%" if c.get("val_accuracy") is not None else "accuracy n/a"
        lines.append(f"  chosen   {label(c)}: {acc}, predicted {c['predicted_bytes'] / 1e6:.4f} MB, "
                     f"{c['predicted_ms']:.4f} ms; the most accurate of {feasible} that meet every budget")
    for note in (report.planner or {}).get("notes", []):
        lines.append(f"  note     {note}")
    for status in ("feasible", "rejected", "failed", "not-evaluated"):
        group = by_status.get(status, [])
        reasons = {c["reason"] for c in group}
        if len(group) > 1 and len(reasons) == 1 and "" not in reasons:
            lines.append(f"  {status:8s} {len(group)} other candidates: {reasons.pop()}")
            continue
        for c in group[:6]:
            why = c["reason"] or (_lost_to(c, chosen[0]) if chosen and c.get("val_accuracy") is not None else "")
            lines.append(f"  {status:8s} {label(c)}: {why}")
        if len(group) > 6:
            lines.append(f"  ... and {len(group) - 6} more {status} (see report.json)")
    return "\n".join(lines)


def _front_2d(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both coordinates (lower is better), sorted by the first."""
    front: list[tuple[float, float, str]] = []
    for x, y, name in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y, name))
    return front


def _budget_line(ax, value: float | None, data_max: float, horizontal: bool, label: str) -> None:
    """Draw a budget line, or only name it in the legend when it lies far beyond the candidates."""
    if value is None:
        return
    style = {"color": "r", "ls": "--" if horizontal else ":"}
    if value > 1.5 * data_max:
        ax.plot([], [], **style, label=f"{label} {value:g} (beyond the chart)")
    elif horizontal:
        ax.axhline(value, **style, label=f"{label} {value:g}")
    else:
        ax.axvline(value, **style, label=f"{label} {value:g}")


def planner_plot(report: BuildReport) -> str | None:
    """Base64 PNG: candidates on size-latency and size-accuracy planes, with each plane's Pareto front
    (step line), the members of the three-objective front (ringed) and the budget lines."""
    cands = [c for c in plan_candidates(report) if c.get("predicted_bytes") is not None]
    if len(cands) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = report.budgets
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {"chosen": "#d62728", "feasible": "#2ca02c", "rejected": "#7f7f7f", "not-evaluated": "#bcbd22",
               "failed": "#000000"}
    name = lambda c: " -> ".join(c["recipe"]) or "fp32"
    planes = (
        (ax1, [(c["predicted_bytes"] / 1e6, c["predicted_ms"], c) for c in cands]),
        (ax2, [(c["predicted_bytes"] / 1e6, c["accuracy_drop"], c) for c in cands if c.get("accuracy_drop") is not None]),
    )
    for ax, pts in planes:
        for x, y, c in pts:
            ax.scatter(x, y, color=colours.get(c["status"], "#1f77b4"), s=70 if c["status"] == "chosen" else 28,
                       edgecolors="k" if c.get("pareto") else "none", linewidths=1.2, zorder=3)
        front = _front_2d([(x, y, name(c)) for x, y, c in pts])
        if len(front) > 1:
            ax.plot([f[0] for f in front], [f[1] for f in front], "k--", lw=0.8, drawstyle="steps-post",
                    label="Pareto front of this plane", zorder=2)
        labelled = {f[2] for f in front} | {name(c) for _, _, c in pts if c["status"] == "chosen"}
        for x, y, c in pts:
            if name(c) in labelled:
                ax.annotate(name(c), (x, y), fontsize=6, alpha=0.9, xytext=(3, 3), textcoords="offset points")
    max_mb = max(c["predicted_bytes"] / 1e6 for c in cands)
    for ax in (ax1, ax2):
        _budget_line(ax, b.get("size_mb"), max_mb, False, "size budget (MB)")
    _budget_line(ax1, b.get("latency_ms"), max(c["predicted_ms"] for c in cands), True, "latency budget (ms)")
    drops = [y for _, y, _ in planes[1][1]] or [0.0]
    _budget_line(ax2, b.get("accuracy_drop_pct"), max(max(drops), 0.1), True, "accuracy budget (pt)")
    ax1.set(xlabel="predicted size (MB)", ylabel=f"predicted latency on {report.hardware} (ms)",
            title="candidates: size vs latency")
    ax2.set(xlabel="predicted size (MB)", ylabel="test accuracy drop (pt)", title="candidates: size vs accuracy")
    for status, colour in colours.items():
        ax1.scatter([], [], color=colour, label=status)
    ax1.scatter([], [], color="w", edgecolors="k", label="on the size-latency-accuracy front")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
    data = _png(fig)
    plt.close(fig)
    return data


def planner_section(report: BuildReport) -> str:
    """HTML for the planner's candidates: plot, table and the decision in words."""
    cands = plan_candidates(report)
    if not cands:
        return ""
    esc = html.escape
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            " -> ".join(c["recipe"]) or "fp32 (untouched)", c["status"], c.get("params") or "-",
            _fmt((c.get("predicted_bytes") or 0) / 1e6 if c.get("predicted_bytes") else None, ".4f"),
            _fmt((c.get("real_bytes") or 0) / 1e6 if c.get("real_bytes") else None, ".4f"),
            _fmt(c.get("predicted_ms"), ".4f"), _fmt(c.get("val_accuracy"), ".2f"), _fmt(c.get("accuracy_drop"), ".2f"),
            "yes" if c.get("pareto") else "", c["reason"])) + "</tr>" for c in cands)
    plot = planner_plot(report)
    img = f'<img alt="planner candidates" src="data:image/png;base64,{plot}">' if plot else ""
    head = ["recipe", "status", "params", "pred. MB", "real MB", "pred. ms", "val acc %", "acc drop pt", "Pareto",
            "reason"]
    return (f"<h2>Planner</h2><pre>{esc(explain_plan(report))}</pre>{img}<table><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{rows}</table>")
