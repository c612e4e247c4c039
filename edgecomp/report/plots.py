"""Plots for ``report.html``, as base64 PNG: the stages, and the planner's candidates with their fronts.

matplotlib is imported inside each plot, so rendering the console never loads it.
"""

from __future__ import annotations

import base64
import io

from edgecomp.records import BuildReport
from edgecomp.report.console import plan_candidates
from edgecomp.report.plot_memo import memoized


def _metric_title(report: BuildReport) -> str:
    """'accuracy %' for top-1, else the metric's name (top5 %, or the user's --metric)."""
    name = report.model.metric or "top1"
    return "accuracy %" if name == "top1" else (f"{name} %" if name == "top5" else name)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


@memoized
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
    for ax, values, title in zip(axes[[0, 1, 3]], (params, macs, acc), ("parameters", "MACs", _metric_title(report))):
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


@memoized
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
    ax2.set(xlabel="predicted size (MB)", ylabel=f"test {'accuracy' if (report.model.metric or 'top1') == 'top1' else report.model.metric} drop (pt)", title="candidates: size vs accuracy")
    for status, colour in colours.items():
        ax1.scatter([], [], color=colour, label=status)
    ax1.scatter([], [], color="w", edgecolors="k", label="on the size-latency-accuracy front")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
    data = _png(fig)
    plt.close(fig)
    return data


@memoized
def quant_error_plot(report: BuildReport) -> str | None:
    """Base64 PNG: SQNR (dB) of every int8 activation in graph order, fake-quant and .tflite; None if no int8 stage.

    Read from the ``layer_errors`` metrics of ``quantize.int8`` and the int8 .tflite artifact's details.
    """
    stage = next((s.metrics["layer_errors"] for s in report.stages if s.metrics.get("layer_errors")), None)
    if not stage:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = stage["layers"]
    tfl = next((a.details.get("layer_errors") for a in report.artifacts
                if a.format == "tflite" and (a.details or {}).get("layer_errors")), None)
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers)), 3.2))
    xs = range(len(layers))
    ax.plot(xs, [e["sqnr_db"] for e in layers], "o-", color="#4a7bb7", label="int8 reference (PyTorch)")
    ax.bar(xs, [e["lost_db"] for e in layers], color="#e08a3c", alpha=0.6, label="dB lost at this layer")
    if tfl:
        ax.plot(range(len(tfl["layers"])), [e["tflite_sqnr_db"] if e["tflite_sqnr_db"] is not None else float("nan")
                                            for e in tfl["layers"]], "x", color="#c0392b", label=".tflite")
    ax.set_xticks(list(xs), [e["name"] for e in layers], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR vs float, dB")
    ax.set_title("int8 error per layer (calibration inputs)")
    ax.legend(fontsize=7)
    data = _png(fig)
    plt.close(fig)
    return data
