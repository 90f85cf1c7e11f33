"""RunRecord: the typed, schema-versioned outcome of one run. Reports read records only.

On disk a record is the JSON object written by :meth:`RunRecord.to_json`: its
``spec`` is ``RunSpec.to_dict()`` and its ``status`` the status's string value, so
files written before records were typed load unchanged (and write back byte for
byte the same).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from benchsuite.config.spec import RunSpec
from benchsuite.errors import BenchsuiteError, ResultsError

__all__ = ["FINISHED", "SCHEMA_VERSION", "RunRecord", "Status"]

SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    """How a run ended. Compares equal to (and formats as) its string value, as stored on disk."""

    COMPLETED = "completed"  # budget spent or target reached
    DIVERGED = "diverged"  # non-finite loss or loss blow-up (a recorded outcome, not a crash)
    FAILED = "failed"  # an exception inside the run (re-tried on resume)
    TIMEOUT = "timeout"  # the wall-clock guard fired

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """Whether a resumed suite skips a run that ended so (failed runs are retried)."""
        return self in FINISHED

    @staticmethod
    def is_completed(value: str) -> bool:
        """Whether ``value`` (a :class:`Status` or its stored string) means the run completed."""
        return value == Status.COMPLETED.value


FINISHED = frozenset({Status.COMPLETED, Status.DIVERGED, Status.TIMEOUT})

_REDO = "re-run the suite with this benchsuite to redo the run, or report it with the version that wrote it"


@dataclass
class RunRecord:
    """What one run produced.

    Attributes:
        run_id: Content hash of ``spec``.
        spec: The run's :class:`RunSpec` (a mapping given here is read with ``RunSpec.from_dict``).
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
    spec: RunSpec
    status: Status
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

    def __post_init__(self) -> None:
        if isinstance(self.spec, Mapping):
            self.spec = RunSpec.from_dict(self.spec)
        self.status = Status(self.status)

    @property
    def finished(self) -> bool:
        """Completed, diverged or timed out: a resumed suite skips it (failed runs are retried)."""
        return self.status.finished

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: the spec as ``RunSpec.to_dict()``, the status as its string."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(spec=self.spec.to_dict(), status=self.status.value)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> RunRecord:
        """Read a record written by :meth:`to_json` (any earlier version of it with this schema).

        Raises:
            ResultsError: naming ``source``, what is wrong with it and what to do.
        """
        d = _json_object(text, source)
        _check_fields(d, source)
        names = {f.name for f in fields(cls)}
        try:
            spec = RunSpec.from_dict(d["spec"])
        except (BenchsuiteError, TypeError) as exc:
            version = d.get("provenance", {}).get("versions", {}).get("benchsuite", "unknown")
            raise ResultsError(f"Result file {source}: its spec cannot be read by this benchsuite ({exc}); it "
                               f"was written by benchsuite {version}: {_REDO}") from None
        return cls(**{**{k: v for k, v in d.items() if k in names}, "spec": spec})


def _json_object(text: str, source: str) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"Broken result file {source}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ResultsError(f"Broken result file {source}: expected a JSON object")
    return d


def _check_fields(d: Mapping[str, Any], source: str) -> None:
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"Result file {source} has schema_version {version!r}; this benchsuite reads "
                           f"{SCHEMA_VERSION}: {_REDO}")
    missing = sorted(n for n in ("run_id", "spec", "status", "reason") if n not in d)
    if missing:
        raise ResultsError(f"Broken result file {source}: missing field(s) {missing}")
    spec = d["spec"]
    spec_missing = [k for k in ("task", "activation", "optimizer", "seed") if not isinstance(spec, dict) or k not in spec]
    if spec_missing:
        raise ResultsError(f"Broken result file {source}: spec lacks {spec_missing}")
    if d["status"] not in {s.value for s in Status}:
        raise ResultsError(f"Broken result file {source}: unknown status {d['status']!r}")
