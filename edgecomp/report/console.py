"""The console side of the build report: the closing table and the planner's decision in words.
"""

from __future__ import annotations

from pydantic import BaseModel

from edgecomp.records import BuildReport


def fmt(v: float | None, spec: str = ".3f") -> str:
    """``v`` formatted with ``spec``, or ``-`` when it is missing."""
    return "-" if v is None else format(v, spec)


def fmt_accuracy(v: float | None, note: str | None = None) -> str:
    """An accuracy with two decimals, else its note ('accuracy not measured' without data), else ``-``."""
    return format(v, ".2f") if v is not None else (note or "-")


def metric_label(report: BuildReport) -> tuple[str, str]:
    """(name, unit) of the metric behind the report's accuracy figures: ('top1', '%') unless --metric said else."""
    name = report.model.metric or "top1"
    return name, "%" if name in ("top1", "top5") else ""


def console_table(report: BuildReport) -> str:
    """The closing table printed by the CLI: one row per artifact."""
    name, unit = metric_label(report)
    head = "acc %" if name == "top1" else f"{name} {unit}".strip()
    rows = [("format", "dtype", "MB", "parity", "max abs err", "top-1 agree", head, "p50 ms", "source")]
    for a in report.artifacts:
        p, lat = a.parity, a.latency
        rows.append((
            a.format, a.dtype or "-", fmt(a.bytes / 1e6 if a.bytes else None, ".4f"),
            (p.status if p else a.status), fmt(p.max_abs_err if p else None, ".2e"),
            fmt(p.top1_agreement if p else None, ".1f"), fmt(a.accuracy, ".2f"),
            fmt(lat.p50_ms if lat else None, ".3f"), lat.source if lat else "-",
        ))
        for o in (p.outputs if p else []):  # a model with several outputs: each one's parity
            rows.append(("", "", "", f"  {o.name}: {o.status}", fmt(o.max_abs_err, ".2e"),
                         fmt(o.top1_agreement, ".1f"), "", "", ""))
        if a.predicted_latency:
            rows.append(("", "", "", "", "", "", "", fmt(a.predicted_latency.p50_ms, ".3f"),
                         a.predicted_latency.source))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{a.format}: cached from {a.measured_at} (identical export; --no-cache rebuilds it)"
              for a in report.artifacts if a.cached]
    machines = sorted({a.latency.machine for a in report.artifacts if a.latency and a.latency.machine})
    lines += [f"measured:host = {m}" for m in machines]
    if report.model.accuracy_note:
        lines.append(f"{report.model.accuracy_note}: no --data, so neither the source model nor any stage was "
                     "evaluated (pass --data to measure it)")
    return "\n".join(lines)


def plan_candidates(report: BuildReport) -> list[dict]:
    """The planner's candidates as plain dicts (empty when the build ran a given recipe)."""
    cands = (report.planner or {}).get("candidates", [])
    return [c.model_dump() if isinstance(c, BaseModel) else c for c in cands]


def _lost_to(c: dict, chosen: dict, metric: tuple[str, str] = ("top1", "%")) -> str:
    """Why a feasible candidate lost to the chosen one: accuracy first, then size, then latency."""
    acc = _val(c, metric)
    if round(c["val_accuracy"], 2) != round(chosen.get("val_accuracy") or 0.0, 2):
        return f"{acc}, less accurate than the chosen one"
    if c["predicted_bytes"] != chosen["predicted_bytes"]:
        return (f"{acc}, as accurate as the chosen one but larger ({c['predicted_bytes'] / 1e6:.4f} MB vs "
                f"{chosen['predicted_bytes'] / 1e6:.4f} MB)")
    return f"{acc}, as accurate and as large as the chosen one but slower ({c['predicted_ms']:.4f} ms)"


def _val(c: dict, metric: tuple[str, str]) -> str:
    name, unit = metric
    return f"val {'accuracy' if name == 'top1' else name} {c['val_accuracy']:.2f}{unit}"


def explain_plan(report: BuildReport) -> str:
    """A few lines on the planner's decision: what was tried, why the winner won, why others lost."""
    cands = plan_candidates(report)
    b = report.budgets
    budget = ", ".join(x for x in (
        f"size <= {b['size_mb']} MB" if b.get("size_mb") is not None else "",
        f"latency <= {b['latency_ms']} ms on {report.hardware}" if b.get("latency_ms") is not None else "",
        f"accuracy drop <= {b['accuracy_drop_pct']} pt" if b.get("accuracy_drop_pct") is not None else "") if x)
    label = lambda c: " -> ".join(c["recipe"]) or "fp32 (untouched)"
    metric = metric_label(report)
    lines = [f"planner: budgets {budget or 'none'}; {len(cands)} candidates"]
    by_status: dict[str, list[dict]] = {}
    for c in cands:
        by_status.setdefault(c["status"], []).append(c)
    chosen = by_status.get("chosen", [])
    for c in chosen:
        feasible = len(by_status.get("feasible", [])) + 1
        measured = c.get("val_accuracy") is not None
        acc = _val(c, metric) if measured else (c.get("accuracy_note") or "accuracy not measured")
        why = "the most accurate" if measured else "the least invasive"
        lines.append(f"  chosen   {label(c)}: {acc}, predicted {c['predicted_bytes'] / 1e6:.4f} MB, "
                     f"{c['predicted_ms']:.4f} ms; {why} of {feasible} that meet every budget")
    for note in (report.planner or {}).get("notes", []):
        lines.append(f"  note     {note}")
    cut = [label(c) for c in cands if c.get("cut_short")]
    if cut:
        lines.append(f"  cut short by --search-time ({len(cut)}; their fine-tunes stopped at the deadline, so their "
                     f"accuracy may be below a full fine-tune's): {', '.join(cut)}")
    lines += rung_lines(report.planner or {})
    for status in ("feasible", "rejected", "stopped", "failed", "not-evaluated"):
        group = by_status.get(status, [])
        reasons = {c["reason"] for c in group}
        if len(group) > 1 and len(reasons) == 1 and "" not in reasons:
            lines.append(f"  {status:8s} {len(group)} other candidates: {reasons.pop()}")
            continue
        for c in group[:6]:
            why = c["reason"] or (_lost_to(c, chosen[0], metric) if chosen and c.get("val_accuracy") is not None else "")
            lines.append(f"  {status:8s} {label(c)}: {why}")
        if len(group) > 6:
            lines.append(f"  ... and {len(group) - 6} more {status} (see report.json)")
    return "\n".join(lines)


def rung_lines(planner: dict) -> list[str]:
    """The search's executor and, with successive halving, one line per rung (cap, evaluated, kept)."""
    lines = []
    if planner.get("executor"):
        lines.append(f"  search   {planner['executor']} ({planner.get('workers', 1)} at a time, "
                     f"{planner.get('threads_per_evaluation', 1)} torch thread(s) each), "
                     f"{planner.get('epochs_spent', 0)} fine-tune epochs"
                     + (f", screening {planner['screen_seconds']:.1f} s" if planner.get("screen_seconds") else ""))
    rungs = planner.get("rungs") or []
    for r in rungs if len(rungs) > 1 else []:
        cap = f"{r['max_epochs']} epochs" if r.get("max_epochs") is not None else "full fine-tune"
        kept = r.get("kept")
        lines.append(f"  rung {r['rung'] + 1}   {cap}: {r['evaluated']} evaluated"
                     + (f", kept {len(kept)}: {', '.join(kept)}" if kept is not None else " (judged on this rung)")
                     + (f"; {r['next']} (measured costs: see the notes)" if r.get("next") else ""))
    return lines
