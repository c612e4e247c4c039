"""The build's data records: what each stage, artifact and build measured, as plain pydantic models.

Data only, at the bottom of the package: every layer may import these, they import nothing above
:mod:`edgecomp.timings`. ``report.json`` is a :class:`BuildReport`; :mod:`edgecomp.report` renders it.
Every number says where it came from (``measured:host``, ``measured:device:<serial>``, ``predicted:<profile>``);
a parity that was not measured is ``not-run``, never passed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from edgecomp.timings import Phase


class OutputCheck(BaseModel):
    """Parity of one output tensor of a model with several outputs, under that output's own rule."""

    name: str = Field(description="Output name (the model spec's outputs[].name).")
    kind: Literal["logits", "values"] = Field(description="logits: class scores (top-1 compared); values: other.")
    status: Literal["passed", "failed"] = Field(description="Outcome for this output.")
    shape: list[int] = Field(default_factory=list, description="Shape of the compared outputs, samples first.")
    max_abs_err: float | None = Field(None, description="Largest elementwise |artifact - torch| of this output.")
    max_rel_err: float | None = Field(None, description="max_abs_err divided by max |torch output| of this output.")
    top1_agreement: float | None = Field(None, description="Percent of inputs whose argmax agrees (logits only).")
    cosine: float | None = Field(None, description="Smallest per-sample cosine similarity of this output.")
    criterion: str = Field("", description="The rule applied to this output.")
    note: str = Field("", description="What failed, if anything.")


class Parity(BaseModel):
    """Result of comparing an artifact's outputs with PyTorch's on the same inputs.

    For a model with several outputs, ``outputs`` holds each output's check; the top-level numbers are the worst
    over them (largest errors, smallest cosine and top-1 agreement of the logits) and any failed output fails it.
    """

    status: Literal["passed", "failed", "not-run"] = Field(description="Outcome of the check.")
    max_abs_err: float | None = Field(None, description="Largest elementwise |artifact - torch|.")
    max_rel_err: float | None = Field(None, description="max_abs_err divided by max |torch output|.")
    top1_agreement: float | None = Field(None, description="Percent of inputs whose argmax agrees.")
    cosine: float | None = Field(None, description="Smallest per-sample cosine similarity of outputs.")
    samples: int = Field(0, description="Number of inputs compared.")
    criterion: str = Field("", description="The rule applied, e.g. 'allclose(atol=1e-4, rtol=1e-3)'.")
    note: str = Field("", description="Why the check was not run, or what failed.")
    outputs: list[OutputCheck] = Field(default_factory=list,
                                       description="Each output's check, for a model with several outputs.")
    int8: dict[str, Any] | None = Field(None, description="int8 artifacts: what the int8 rule measured against "
                                        "the float model (export/parity_int8.judge_int8).")

    def summary(self) -> str:
        """One line of what was measured (and the note, if any), for logs and error messages; per output for a
        model with several outputs."""
        if self.outputs:
            per_output = [f"{o.name} {o.status}: " + _measured(o.max_abs_err, o.top1_agreement, o.cosine, o.note)
                          + (f" (rule {o.criterion})" if o.criterion else "") for o in self.outputs]
            return "; ".join(per_output)
        text = _measured(self.max_abs_err, self.top1_agreement, self.cosine, self.note)
        text = f"{self.int8['measured']}; vs the reference: {text}" if self.int8 and "measured" in self.int8 else text
        return text + (f"; rule {self.criterion}" if self.criterion else "")


def _measured(max_abs_err: float | None, top1: float | None, cosine: float | None, note: str) -> str:
    """What a parity check measured, in words: errors, agreement, cosine and the note."""
    parts = []
    if max_abs_err is not None:
        parts.append(f"max abs err {max_abs_err:.3e}")
    if top1 is not None:
        parts.append(f"top-1 agreement {top1:.1f}%")
    if cosine is not None:
        parts.append(f"min cosine {cosine:.4f}")
    if note:
        parts.append(note)
    return ", ".join(parts)


class Latency(BaseModel):
    """Latency statistics of one artifact, and where they come from."""

    p50_ms: float = Field(description="Median latency of one inference, ms.")
    p90_ms: float | None = Field(None, description="90th percentile latency, ms.")
    mean_ms: float | None = Field(None, description="Mean latency, ms.")
    std_ms: float | None = Field(None, description="Standard deviation of latency, ms.")
    init_ms: float | None = Field(None, description="Time to load the model and prepare the runtime, ms.")
    peak_memory_mb: float | None = Field(None, description="Peak resident memory of the process running it, MB.")
    model_memory_mb: float | None = Field(None, description="Peak memory minus memory before loading, MB.")
    runs: int | None = Field(None, description="Timed runs after warm-up (actually taken).")
    max_runs: int | None = Field(None, description="The most runs allowed (--runs), when timing stops adaptively.")
    tolerance_pct: float | None = Field(
        None, description="Timing stopped once the p50's 95 % CI half-width was within this % of the p50.")
    ci_halfwidth_pct: float | None = Field(
        None, description="Half-width of the p50's 95 % confidence interval reached, % of the p50.")
    threads: int | None = Field(None, description="Threads the runtime used.")
    machine: str | None = Field(None, description="CPU and vector ISA a host measurement ran on, e.g. 'x86-64 AVX2, AMD EPYC'.")
    source: str = Field(description="measured:host, measured:device:<serial> or predicted:<profile>.")


ACCURACY_NOT_MEASURED = "accuracy not measured"
"""What the report says in place of an accuracy when the build had no data (no --data)."""


class ModelRecord(BaseModel):
    """The source model as loaded."""

    name: str = Field(description="Model name.")
    source: str = Field(description="Where the model came from (file, factory or built-in).")
    params: int = Field(description="Parameter count.")
    macs: int = Field(description="Multiply-accumulates per inference.")
    accuracy: float | None = Field(None, description="The metric on the test split (top-1 % by default), if data is known.")
    metric: str | None = Field(None, description="Name of the metric in 'accuracy' (top1, top5 or the user's), if data is known.")
    data: str | None = Field(None, description="What the evaluation data was (source, sizes), if any.")
    accuracy_note: str | None = Field(None, description="'accuracy not measured' when the build had no data.")


class StageRecord(BaseModel):
    """One compression stage as it ran, measured after it."""

    name: str = Field(description="Stage (method) name.")
    config: dict[str, Any] = Field(default_factory=dict, description="Settings the stage ran with.")
    seconds: float = Field(description="Wall time of the stage.")
    params: int = Field(description="Parameter count after the stage.")
    macs: int = Field(description="MACs per inference after the stage.")
    accuracy: float | None = Field(None, description="Top-1 on the test split after the stage, percent.")
    accuracy_note: str | None = Field(None, description="'accuracy not measured' when the build had no data.")
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
    accuracy: float | None = Field(None, description="Top-1 (percent) of this artifact on the parity inputs, or the "
                                                      "data's metric when the targets are not class indices.")
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
    reused_from: str | None = Field(None, description="When the identical build whose bundle this reuses ran (UTC, "
                                                      "ISO 8601); None for a build that ran (edgecomp.build_reuse).")
