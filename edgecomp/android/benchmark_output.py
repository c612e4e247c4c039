"""Parse the text that TFLite/LiteRT's ``benchmark_model`` prints.

Two generations exist and both are read:

* newer: ``Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51e+06,
  Inference (avg): 2.95e+06`` and ``Memory footprint delta from the start of the tool (MB): init=… overall=…``
  (or ``Peak memory footprint (MB): init=… overall=…``);
* older: ``Average inference timings in us: Warmup: 86184.3, Init: 1892, no stats: 115062`` (or
  ``…, Inference: 79760.9``).

Both print the statistics lines of ``tensorflow/core/util/stats_calculator.h``: ``count=50 first=… curr=…
min=… max=… avg=… std=…`` (newer builds append ``p5=… median=… p95=…``), ``count=1 curr=3512391``, and
``count=5 curr=120(all same)`` when every sample was equal. With ``--enable_op_profiling=true`` they print
tables titled ``Run Order``, ``Top by Computation Time`` and ``Summary by node type``, tab- or
space-separated. Lines may carry a logcat prefix (``I tflite  : ``) or ``INFO: ``; both are ignored.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecomp.errors import DeviceError


class BenchmarkOutputError(DeviceError):
    """benchmark_model's output holds no timings (it failed, or it is not benchmark_model output)."""


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NEW_SUMMARY = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
    rf"Warmup \(avg\): ({_NUM}|nan|-?inf), Inference \(avg\): ({_NUM}|nan|-?inf)"
)
_OLD_SUMMARY = re.compile(
    rf"Average inference timings in us: Warmup: ({_NUM}|nan), Init: ({_NUM}), (?:no stats|Inference): ({_NUM}|nan)"
)
_MEMORY = re.compile(
    rf"(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init=({_NUM}) overall=({_NUM})"
)
_PEAK_MONITOR = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_STAT = re.compile(r"(?:^|[\s:])count=\d+")
_KV = re.compile(rf"(\w+)=({_NUM})")
_SECTION = re.compile(r"^=+ (.+?) =+$")
_OP_ROW = re.compile(
    rf"^(.+?)\s+({_NUM})\s+({_NUM})\s+({_NUM})\s+({_NUM})%\s+({_NUM})%\s+({_NUM})\s+(\d+)\s+(.*)$"
)
_TYPE_ROW = re.compile(rf"^(.+?)\s+(\d+)\s+({_NUM})\s+({_NUM})%\s+({_NUM})%\s+({_NUM})\s+(\d+)$")
_PREFIX = re.compile(r"^(?:[VDIWEF] tflite\s*:\s?|INFO:\s|WARNING:\s|ERROR:\s)")
_ERROR_HINTS = ("Failed to", "ERROR:", "error:", "Aborted", "Segmentation fault", "not found")


@dataclass
class Stat:
    """One ``count=… first=… curr=… min=… max=… avg=… std=…`` line, in microseconds."""

    count: int
    curr: float
    first: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None
    all_same: bool = False

    def mean(self) -> float:
        """Average in microseconds (``curr`` when every sample was the same or there was one)."""
        return self.avg if self.avg is not None else self.curr


@dataclass
class OpRow:
    """One row of a ``Run Order`` or ``Top by Computation Time`` table (times in ms)."""

    node_type: str
    start_ms: float
    first_ms: float
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int
    name: str


@dataclass
class NodeTypeRow:
    """One row of a ``Summary by node type`` table (times in ms)."""

    node_type: str
    count: int
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int


@dataclass
class OpProfile:
    """The three op-profiling tables of one profiling block (initialisation or regular runs)."""

    title: str = ""
    run_order: list[OpRow] = field(default_factory=list)
    top_by_time: list[OpRow] = field(default_factory=list)
    by_node_type: list[NodeTypeRow] = field(default_factory=list)
    nodes_executed: int | None = None
    timings: Stat | None = None


@dataclass
class BenchmarkResult:
    """Everything read from one benchmark_model run; times in microseconds, memory in MB."""

    generation: str
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    warmup: Stat | None = None
    inference: Stat | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    memory_peak_mb: float | None = None
    op_profiles: list[OpProfile] = field(default_factory=list)

    @property
    def run_profile(self) -> OpProfile | None:
        """The op profile of the regular benchmark runs (not of initialisation), if profiling was on."""
        regular = [p for p in self.op_profiles if "Initialization" not in p.title]
        return regular[-1] if regular else None

    def latency_ms(self) -> dict[str, Any]:
        """Summary in milliseconds with the same keys as host measurements (missing ones are ``None``)."""
        stat = self.inference
        mean_us = stat.mean() if stat else self.inference_avg_us
        ms = (lambda v: None if v is None else v / 1000.0)
        return {
            "mean_ms": ms(mean_us),
            "p50_ms": ms(stat.median) if stat and stat.median is not None else None,
            "p90_ms": None,
            "std_ms": ms(stat.std if stat and stat.std is not None else (0.0 if stat and stat.all_same else None)),
            "min_ms": ms(stat.min if stat and stat.min is not None else (stat.curr if stat else None)),
            "max_ms": ms(stat.max if stat and stat.max is not None else (stat.curr if stat else None)),
            "runs": stat.count if stat else None,
            "init_ms": ms(self.init_us),
            "first_ms": ms(self.first_inference_us),
            "peak_memory_mb": self.memory_peak_mb if self.memory_peak_mb is not None else self.memory_overall_mb,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return asdict(self)


def _strip(line: str) -> str:
    line = line.rstrip("\r\n")
    return _PREFIX.sub("", line.lstrip(" ")) if _PREFIX.match(line.lstrip(" ")) else line


def parse_stat(line: str) -> Stat:
    """Parse one stats line (``count=… first=… …``, ``count=1 curr=…``, ``…(all same)``, ``count=0``)."""
    values = {k: float(v) for k, v in _KV.findall(line)}
    if "count" not in values:
        raise BenchmarkOutputError(f"not a benchmark statistics line: {line!r}")
    known = {k: values.get(k) for k in ("first", "min", "max", "avg", "std", "p5", "median", "p95")}
    return Stat(count=int(values["count"]), curr=values.get("curr", float("nan")),
                all_same="(all same)" in line, **known)


def _float(text: str) -> float:
    return float(text)


def parse_benchmark_output(text: str) -> BenchmarkResult:
    """Parse benchmark_model's stdout+stderr; raise :class:`BenchmarkOutputError` when it holds no timings."""
    lines = [_strip(raw) for raw in text.splitlines()]
    result = BenchmarkResult(generation="unknown")
    stats: list[tuple[int, Stat]] = []  # (index of the "Running benchmark" header before it, stat)
    header_count = 0
    profile: OpProfile | None = None
    section = ""
    pending_title = ""
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if (m := _NEW_SUMMARY.search(stripped)) is not None:
            result.generation = "new"
            result.init_us, result.first_inference_us = _float(m[1]), _float(m[2])
            result.warmup_avg_us, result.inference_avg_us = _float(m[3]), _float(m[4])
        elif (m := _OLD_SUMMARY.search(stripped)) is not None:
            result.generation = "old"
            result.warmup_avg_us, result.init_us, result.inference_avg_us = _float(m[1]), _float(m[2]), _float(m[3])
        elif (m := _MEMORY.search(stripped)) is not None:
            result.memory_init_mb, result.memory_overall_mb = _float(m[2]), _float(m[3])
        elif (m := _PEAK_MONITOR.search(stripped)) is not None:
            result.memory_peak_mb = _float(m[1])
        elif stripped.startswith("Running benchmark for"):
            header_count += 1
        elif "Profiling Info" in stripped and stripped.endswith(":"):
            pending_title = stripped.rstrip(":")
        elif (m := _SECTION.match(stripped)) is not None:
            section = m[1]
            if section == "Run Order" or profile is None:
                profile = OpProfile(title=pending_title)
                result.op_profiles.append(profile)
                pending_title = ""
        elif stripped.startswith(("[node type]", "[Node type]")):
            continue
        elif stripped.startswith("Number of nodes executed:") and profile is not None:
            profile.nodes_executed = int(stripped.split(":")[1])
        elif stripped.startswith("Timings (microseconds):") and profile is not None:
            profile.timings = parse_stat(stripped)
            section = ""
        elif stripped.startswith("Memory (bytes):") or stripped.endswith("nodes observed"):
            section = ""
        elif section in ("Run Order", "Top by Computation Time") and (m := _OP_ROW.match(stripped)):
            row = OpRow(m[1].strip(), _float(m[2]), _float(m[3]), _float(m[4]), _float(m[5]), _float(m[6]),
                        _float(m[7]), int(m[8]), m[9].strip())
            assert profile is not None
            (profile.run_order if section == "Run Order" else profile.top_by_time).append(row)
        elif section == "Summary by node type" and (m := _TYPE_ROW.match(stripped)):
            assert profile is not None
            profile.by_node_type.append(NodeTypeRow(m[1].strip(), int(m[2]), _float(m[3]), _float(m[4]),
                                                    _float(m[5]), _float(m[6]), int(m[7])))
        elif _STAT.search(stripped) and not section:
            stats.append((header_count, parse_stat(stripped)))
    _assign_stats(result, stats)
    if result.inference_avg_us is None and result.inference is None:
        errors = [ln.strip() for ln in text.splitlines() if any(h in ln for h in _ERROR_HINTS)]
        detail = f": {errors[0]}" if errors else ""
        raise BenchmarkOutputError(
            f"benchmark_model printed no inference timings{detail}",
            "run it by hand with the same flags to see its full output (edgecomp profile --debug shows it)",
        )
    return result


def _assign_stats(result: BenchmarkResult, stats: list[tuple[int, Stat]]) -> None:
    """The stat after the first 'Running benchmark' header is the warm-up, the one after the second the runs."""
    if not stats:
        return
    headers = sorted({h for h, _ in stats})
    if len(headers) >= 2:
        result.warmup = next(s for h, s in stats if h == headers[0])
        result.inference = next(s for h, s in stats if h == headers[-1])
    elif len(stats) >= 2:
        result.warmup, result.inference = stats[0][1], stats[-1][1]
    else:
        result.inference = stats[0][1]
