"""RunRecord: the typed, schema-versioned outcome of one run. Reports read records only.

On disk a record is the JSON object written by :meth:`RunRecord.to_json`: its
``spec`` is ``RunSpec.to_dict()`` and its ``status`` the status's string value, so
files written before records were typed load unchanged. Records are strict JSON
(RFC 8259) in compact form: a non-finite float, which strict parsers reject as a bare
``NaN``, is written as the one-key object ``{"$float": "nan" | "inf" | "-inf"}`` and
read back exactly; older files with bare ``NaN``/``Infinity`` still load.

Every field is type-checked when a file is read, so a record with a wrong type
(``"steps": "many"``) is a :class:`~benchsuite.errors.ResultsError` naming the file
and the field, never a crash further on. A record of a newer schema than this
benchsuite reads raises :class:`NewerSchemaError`, which names the version that
wrote it: the store refuses to overwrite it.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from benchsuite.config.spec import RunSpec
from benchsuite.errors import BenchsuiteError, ResultsError

__all__ = ["FINISHED", "SCHEMA_VERSION", "NewerSchemaError", "RunRecord", "Status", "dumps_strict", "loads_strict"]

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

_FLOAT_TAG = "$float"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class NewerSchemaError(ResultsError):
    """A record written by a newer benchsuite (a higher ``schema_version``): never overwritten."""


def _encode(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its tagged object."""
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode_object(d: dict[str, Any]) -> Any:
    if len(d) == 1 and isinstance(d.get(_FLOAT_TAG), str) and d[_FLOAT_TAG] in _NON_FINITE:
        return _NON_FINITE[d[_FLOAT_TAG]]
    return d


def dumps_strict(value: Any) -> str:
    """Compact strict JSON with non-finite floats tagged (``{"$float": "nan"}``); see :func:`loads_strict`."""
    return json.dumps(_encode(value), separators=(",", ":"), allow_nan=False)


def loads_strict(text: str) -> Any:
    """Read :func:`dumps_strict` output exactly (and older JSON with bare ``NaN``/``Infinity``)."""
    return json.loads(text, object_hook=_decode_object)


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
        """Compact strict JSON (non-finite floats tagged, see :func:`dumps_strict`)."""
        return dumps_strict(self.to_dict())

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> RunRecord:
        """Read a record written by :meth:`to_json` (any earlier version of it with this schema).

        Raises:
            ResultsError: naming ``source``, what is wrong with it and what to do.
        """
        d = _json_object(text, source)
        _check_fields(d, source)
        _check_types(d, source)
        names = {f.name for f in fields(cls)}
        try:
            spec = RunSpec.from_dict(d["spec"])
        except (BenchsuiteError, TypeError, ValueError, AttributeError) as exc:
            version = d.get("provenance", {}).get("versions", {}).get("benchsuite", "unknown")
            raise ResultsError(f"Result file {source}: its spec cannot be read by this benchsuite ({exc}); it "
                               f"was written by benchsuite {version}: {_REDO}") from None
        return cls(**{**{k: v for k, v in d.items() if k in names}, "spec": spec})


def _json_object(text: str, source: str) -> dict[str, Any]:
    try:
        d = loads_strict(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ResultsError(f"Broken result file {source}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ResultsError(f"Broken result file {source}: expected a JSON object")
    return d


def _check_fields(d: Mapping[str, Any], source: str) -> None:
    version = d.get("schema_version")
    if _is_int(version) and version > SCHEMA_VERSION:
        writer = _writer(d)
        raise NewerSchemaError(f"Result file {source} has schema_version {version}, written by benchsuite {writer}; "
                               f"this benchsuite reads schema {SCHEMA_VERSION}: upgrade benchsuite to use it "
                               f"(it is left untouched)")
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise ResultsError(f"Result file {source} has schema_version {version!r}; this benchsuite reads "
                           f"{SCHEMA_VERSION}: {_REDO}")
    missing = sorted(n for n in ("run_id", "spec", "status", "reason") if n not in d)
    if missing:
        raise ResultsError(f"Broken result file {source}: missing field(s) {missing}")
    spec = d["spec"]
    spec_missing = [k for k in ("task", "activation", "optimizer", "seed") if not isinstance(spec, dict) or k not in spec]
    if spec_missing:
        raise ResultsError(f"Broken result file {source}: spec lacks {spec_missing}")
    if not isinstance(d["status"], str) or d["status"] not in {s.value for s in Status}:
        raise ResultsError(f"Broken result file {source}: unknown status {d['status']!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _writer(d: Mapping[str, Any]) -> str:
    prov = d.get("provenance")
    versions = prov.get("versions") if isinstance(prov, Mapping) else None
    return str(versions.get("benchsuite", "unknown")) if isinstance(versions, Mapping) else "unknown"


def _number_table(v: Any) -> bool:
    return isinstance(v, Mapping) and all(isinstance(k, str) and (_is_number(x) or x is None) for k, x in v.items())


def _rows(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(row, Mapping) for row in v)


_FIELD_CHECKS: dict[str, tuple[Any, str]] = {
    "run_id": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "reason": (lambda v: isinstance(v, str), "a string"),
    "steps": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "train_seconds": (_is_number, "a number"),
    "wall_seconds": (_is_number, "a number"),
    "step_log": (lambda v: isinstance(v, Mapping) and all(
        isinstance(c, list) and all(_is_number(x) for x in c) for c in v.values()), "a table of number lists"),
    "evals": (lambda v: _rows(v) and all(_number_table(r) for r in v), "a list of tables of numbers"),
    "stats": (_rows, "a list of tables"),
    "target": (lambda v: v is None or isinstance(v, Mapping), "a table or null"),
    "time_to_target": (lambda v: v is None or _number_table(v), "a table of numbers or null"),
    "peak_memory_bytes": (lambda v: v is None or _is_int(v), "an integer or null"),
    "peak_rss_bytes": (lambda v: v is None or _is_int(v), "an integer or null"),
    "provenance": (lambda v: isinstance(v, Mapping), "a table"),
}


def _check_types(d: Mapping[str, Any], source: str) -> None:
    """Raise a :class:`ResultsError` naming the first field whose value has the wrong type."""
    for name, (ok, what) in _FIELD_CHECKS.items():
        if name in d and not ok(d[name]):
            shown = json.dumps(d[name], default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ResultsError(f"Broken result file {source}: field '{name}' is {shown}, not {what}")
