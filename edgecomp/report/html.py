"""``report.html``: a self-contained page (plots inlined as PNG) for a build report.

Every string from the model, data or planner is HTML-escaped.
"""

from __future__ import annotations

import html

from edgecomp.records import BuildReport
from edgecomp.report.console import explain_plan, fmt, fmt_accuracy, metric_label, plan_candidates
from edgecomp.report.plots import planner_plot, quant_error_plot, stage_plot
from edgecomp.timings import phase_bars_html


def _metric_head(report: BuildReport) -> str:
    """Column head for the report's metric: 'accuracy %' for top-1, else the metric's name (and unit)."""
    name, unit = metric_label(report)
    return "accuracy %" if name == "top1" else f"{name} {unit}".strip()


def render_html(report: BuildReport, extra_sections: list[str] | None = None) -> str:
    """A self-contained HTML page (plots inlined as PNG) for the report."""
    esc = html.escape
    head = ["format", "dtype", "bytes", "parity", "max abs err", "top-1 agree %", _metric_head(report), "p50 ms",
            "source"]
    rows = []
    for a in report.artifacts:
        p, lat = a.parity, a.latency
        cells = [a.format, a.dtype or "-", a.bytes or "-", (p.status if p else a.status),
                 fmt(p.max_abs_err if p else None, ".2e"), fmt(p.top1_agreement if p else None, ".1f"),
                 fmt(a.accuracy, ".2f"), fmt(lat.p50_ms if lat else None), lat.source if lat else "-"]
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
        for o in (p.outputs if p else []):  # a model with several outputs: each one's parity and rule
            sub = ["", "", "", f"{o.name}: {o.status}", fmt(o.max_abs_err, ".2e"), fmt(o.top1_agreement, ".1f"),
                   "", "", o.criterion]
            rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in sub) + "</tr>")
        notes = (([f"cached from {a.measured_at}"] if a.cached else []) + a.notes
                 + ([p.note] if p and p.note else []))
        if notes:
            rows.append(f"<tr><td></td><td colspan='8'><i>{esc('; '.join(notes))}</i></td></tr>")
    stage_rows = "".join(
        f"<tr><td>{esc(s.name)}</td><td>{s.params:,}</td><td>{s.macs:,}</td>"
        f"<td>{'-' if s.weight_bytes is None else f'{s.weight_bytes:,}'}</td><td>{fmt_accuracy(s.accuracy, s.accuracy_note)}</td>"
        f"<td>{s.seconds:.1f}</td><td>{esc('; '.join(s.notes))}</td></tr>" for s in report.stages
    )
    m = report.model
    name, unit = metric_label(report)
    source_accuracy = (f"{'accuracy' if name == 'top1' else name} {m.accuracy:.2f}{unit} on the test split"
                       if m.accuracy is not None else (m.accuracy_note or "accuracy -"))
    if m.data:
        source_accuracy += f"; data: {m.data}"
    quant = quant_error_plot(report)
    sections = (planner_section(report) + (f'<h2>int8 error per layer</h2><img alt="int8 SQNR per layer" '
                                           f'src="data:image/png;base64,{quant}">' if quant else "")
                + phase_bars_html(report.phases, report.build_seconds)
                + "".join(extra_sections or []))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgecomp: {esc(m.name)} for {esc(report.target)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#eee}}img{{max-width:100%}}</style></head><body>
<h1>{esc(m.name)} &rarr; {esc(report.target)}</h1>
<p>Hardware profile <b>{esc(report.hardware)}</b>; recipe <b>{esc(' -> '.join(report.recipe) or 'none (fp32 export)')}</b>;
source model {m.params:,} parameters, {m.macs:,} MACs, {esc(source_accuracy)}. Built {esc(report.created)}.</p>
<h2>Artifacts</h2><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>
<p>Parity inputs: {esc(report.parity_inputs)}</p>
<h2>Stages</h2><table><tr><th>stage</th><th>params</th><th>MACs</th><th>weight bytes</th><th>{esc(_metric_head(report))}</th><th>seconds</th><th>notes</th></tr>
<tr><td>source</td><td>{m.params:,}</td><td>{m.macs:,}</td><td>{4 * m.params:,}</td><td>{fmt_accuracy(m.accuracy, m.accuracy_note)}</td><td></td><td></td></tr>{stage_rows}</table>
<img alt="params, MACs, bytes and accuracy per stage" src="data:image/png;base64,{stage_plot(report)}">
{sections}
</body></html>
"""


def planner_section(report: BuildReport) -> str:
    """HTML for the planner's candidates: plot, table and the decision in words."""
    cands = plan_candidates(report)
    if not cands:
        return ""
    esc = html.escape
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            " -> ".join(c["recipe"]) or "fp32 (untouched)", c["status"], c.get("params") or "-",
            fmt((c.get("predicted_bytes") or 0) / 1e6 if c.get("predicted_bytes") else None, ".4f"),
            fmt((c.get("real_bytes") or 0) / 1e6 if c.get("real_bytes") else None, ".4f"),
            fmt(c.get("predicted_ms"), ".4f"), fmt_accuracy(c.get("val_accuracy"), c.get("accuracy_note")),
            fmt(c.get("accuracy_drop"), ".2f"), "yes" if c.get("pareto") else "",
            " / ".join(f"r{r['rung'] + 1} {r['val_accuracy']:.2f}" for r in c.get("rungs") or []
                       if r.get("val_accuracy") is not None) or "-",
            c["reason"] + (" (cut short by --search-time)" if c.get("cut_short") else ""))) + "</tr>" for c in cands)
    plot = planner_plot(report)
    img = f'<img alt="planner candidates" src="data:image/png;base64,{plot}">' if plot else ""
    head = ["recipe", "status", "params", "pred. MB", "real MB", "pred. ms", "val " + _metric_head(report), "drop pt", "Pareto",
            "val per rung", "reason"]
    return (f"<h2>Planner</h2><pre>{esc(explain_plan(report))}</pre>{img}<table><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{rows}</table>")
