"""The planner on three digits models x three hardware targets, under loose and tight budgets.

One run, one table. Each row is a real ``edgecomp build`` (API) with a fresh search (no cached
candidate evaluations): the recipe the planner chose, the size it predicted against the size of the
real export, the latency predicted for the hardware profile from the real export, the test accuracy
drop of the real export, how many candidates were evaluated, and the search and build wall time.

- loose: the target's own budgets (android-arm64 / linux-arm64: 10 MB, 30 ms, 1 pt).
- tight: size <= 0.4 x the loose build's file, latency <= 0.85 x the loose build's predicted latency on
  that hardware, accuracy drop <= 2 pt; an infeasible row shows the planner's error instead. (Tiny
  models on 4 threads are dominated by per-operator overhead, which no compression removes: latency
  budgets much below the source's are out of reach for them, and the planner says so.)

    EDGECOMP_CACHE_DIR=/tmp/ec_cache .venv/bin/python benchmarks/planner.py [--epochs 10] [--quick]

Training uses one torch thread: on a shared 2-core machine that is several times faster than two.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgecomp.build import BuildOptions, build
from edgecomp.errors import InfeasibleBudgetError
from edgecomp.report.console import plan_candidates
from edgecomp.targets import Budgets, load_target

MODELS = ("digits_cnn", "mobile_digits", "vgg_digits")
TARGETS = (("android-arm64", "cortex-a76"), ("android-arm64", "cortex-a55"), ("linux-arm64", "cortex-a72"))


@dataclass
class Row:
    """One planned build."""

    model: str
    target: str
    mode: str
    budgets: str
    recipe: str = "-"
    predicted_mb: float | None = None
    real_mb: float | None = None
    predicted_ms: float | None = None
    drop_pt: float | None = None
    evaluated: int = 0
    search_s: float = 0.0
    build_s: float = 0.0
    error: str = ""


def tight_budgets(loose: Row) -> Budgets:
    """0.4x the loose build's file, 0.85x its predicted latency, 2 pt accuracy."""
    return Budgets(size_mb=round(0.4 * loose.real_mb, 4), latency_ms=round(0.85 * loose.predicted_ms, 4),
                   accuracy_drop_pct=2.0)


def budget_text(b: Budgets) -> str:
    """Budgets in a few characters."""
    return f"{b.size_mb:g}MB {b.latency_ms:g}ms {b.accuracy_drop_pct:g}pt"


def run_one(name: str, target: str, hardware: str, loose: Row | None, epochs: int, out: Path) -> Row:
    """One build with a fresh planner search (the target's budgets, or tight ones derived from the loose
    build ``loose``); the row holds its numbers or its error."""
    tgt = load_target(target)
    mode = "loose" if loose is None else "tight"
    budgets = tgt.budgets if loose is None else tight_budgets(loose)
    row = Row(name, f"{target}/{hardware}", mode, budget_text(budgets))
    opts = BuildOptions(out=out, hardware=hardware, budgets=budgets, formats=[tgt.formats[0]], runs=5, warmup=1,
                        max_finetune_epochs=epochs, reuse_plans=False)
    start = time.monotonic()
    try:
        report = build(name, target, opts)
    except InfeasibleBudgetError as exc:
        row.build_s = time.monotonic() - start
        row.error = exc.message.split("; best reachable: ")[-1]
        return row
    row.build_s = time.monotonic() - start
    cands = plan_candidates(report)
    chosen = next(c for c in cands if c["status"] == "chosen")
    art = next(a for a in report.artifacts if a.status == "ok")
    row.recipe = " -> ".join(report.recipe) or "untouched"
    row.predicted_mb = chosen["predicted_bytes"] / 1e6
    row.real_mb = art.bytes / 1e6
    row.predicted_ms = art.predicted_latency.p50_ms if art.predicted_latency else None
    row.drop_pt = report.model.accuracy - art.accuracy if art.accuracy is not None else None
    row.evaluated = sum(1 for c in cands if c.get("val_accuracy") is not None and c["recipe"])
    row.search_s = report.planner.get("search_seconds", 0.0)
    return row


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    """The comparison table; real/pred is the real export's bytes over the predicted bytes."""
    head = (f"{'model':<13} {'target/hardware':<26} {'mode':<5} {'budgets':<24} {'chosen recipe':<44} "
            f"{'pred MB':>8} {'real MB':>8} {'real/pred':>9} {'pred ms':>8} {'drop pt':>7} {'eval':>4} "
            f"{'search s':>8} {'build s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.real_mb / r.predicted_mb if r.real_mb and r.predicted_mb else None
        recipe = r.recipe if not r.error else "INFEASIBLE"
        lines.append(f"{r.model:<13} {r.target:<26} {r.mode:<5} {r.budgets:<24} {recipe[:44]:<44} "
                     f"{_f(r.predicted_mb, '.4f'):>8} {_f(r.real_mb, '.4f'):>8} {_f(ratio, '.2f'):>9} "
                     f"{_f(r.predicted_ms, '.4f'):>8} {_f(r.drop_pt, '+.2f'):>7} {r.evaluated:>4} "
                     f"{r.search_s:>8.1f} {r.build_s:>7.1f}")
        if r.error:
            lines.append(f"{'':<13} best reachable: {r.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="cap on each recovery fine-tune (default 10)")
    parser.add_argument("--quick", action="store_true", help="digits_cnn on cortex-a76 only")
    parser.add_argument("--verbose", action="store_true", help="log the planner's progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    torch.set_num_threads(1)
    start = time.monotonic()
    models, targets = (MODELS[:1], TARGETS[:1]) if args.quick else (MODELS, TARGETS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecomp-planner-") as tmp:
        for name in models:
            for target, hardware in targets:
                print(f"... {name} {target}/{hardware}", file=sys.stderr, flush=True)
                loose = run_one(name, target, hardware, None, args.epochs, Path(tmp) / f"{name}-{hardware}-loose")
                rows.append(loose)
                rows.append(run_one(name, target, hardware, loose, args.epochs, Path(tmp) / f"{name}-{hardware}-tight"))
    print(f"Planner on digits models; fresh searches, recovery fine-tunes capped at {args.epochs} epochs, "
          f"1 torch thread; sizes of the target's first format; latency predicted from the real export for "
          f"the hardware profile; accuracy on the digits test split; one run, {time.monotonic() - start:.0f} s")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
