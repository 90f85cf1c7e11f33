"""RunRecord: the typed, schema-versioned outcome of one run. Reports read records only."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from benchsuite.errors import ResultsError

__all__ = ["SCHEMA_VERSION", "RunRecord", "Status"]

SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    COMPLETED = "completed"  # budget spent or target reached
    DIVERGED = "diverged"  # non-finite loss or loss blow-up (a recorded outcome, not a crash)
    FAILED = "failed"  # an exception inside the run (re-tried on resume)
    TIMEOUT = "timeout"  # the wall-clock guard fired


FINISHED = {Status.COMPLETED.value, Status.DIVERGED.value, Status.TIMEOUT.value}


@dataclass
class RunRecord:
    """What one run produced.

    Attributes:
        run_id: Content hash of ``spec``.
        spec: ``RunSpec.to_dict()``.
        status, reason: Outcome and why the run stopped (``budget``, ``target``, the
            divergence step and value, or the exception).
        steps: Optimizer steps taken.
        train_seconds: Timed training work only (CUDA-synchronised; evals/probes excluded).
        wall_seconds: Whole run, set-up and evaluation included.
        step_log: Columns ``step``, ``loss`` (mini-batch loss returned by the step) and
            ``time`` (cumulative training seconds after the step).
        evals: One dict per evaluation: ``step``, ``time``, ``epoch``, ``{split}_loss`` and
            ``{split}_{metric}`` for train/valid/test.
        stats: One dict per curvature probe: ``step`` and the statistics.
        time_to_target: Training seconds and step at the first eval reaching the target.
        peak_memory_bytes: Peak CUDA memory allocated (None on CPU).
        peak_rss_bytes: Peak resident memory of the process (process-wide, coarse).
        provenance: Git commit, package versions, device, host.
    """

    run_id: str
    spec: dict[str, Any]
    status: str
    reason: str
    steps: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    step_log: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "loss": [], "time": []})
    evals: list[dict[str, float]] = field(default_factory=list)
    stats: list[dict[str, float]] = field(default_factory=list)
    target: dict[str, Any] | None = None
    time_to_target: dict[str, float] | None = None
    peak_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> RunRecord:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"Broken result file {source}: not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise ResultsError(f"Broken result file {source}: expected a JSON object")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(
                f"Result file {source} has schema_version {version!r}; this benchsuite reads {SCHEMA_VERSION}"
            )
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in ("run_id", "spec", "status", "reason") if n not in d)
        if missing:
            raise ResultsError(f"Broken result file {source}: missing field(s) {missing}")
        spec = d["spec"]
        spec_missing = [k for k in ("task", "activation", "optimizer", "seed") if not isinstance(spec, dict) or k not in spec]
        if spec_missing:
            raise ResultsError(f"Broken result file {source}: spec lacks {spec_missing}")
        if d["status"] not in {s.value for s in Status}:
            raise ResultsError(f"Broken result file {source}: unknown status {d['status']!r}")
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def finished(self) -> bool:
        """Completed, diverged or timed out: a resumed suite skips it (failed runs are retried)."""
        return self.status in FINISHED
