"""Executors: run the specs of a suite that the store does not already hold."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchsuite.config.spec import RunSpec
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore
from benchsuite.run.runner import run

__all__ = ["SuiteSummary", "run_local"]
log = logging.getLogger(__name__)


@dataclass
class SuiteSummary:
    """What an executor did: counts by outcome and the runs that did not complete."""

    total: int = 0
    skipped: int = 0
    statuses: Counter[Status] = field(default_factory=Counter)  # Status compares equal to its string value
    problems: list[tuple[str, Status, str]] = field(default_factory=list)  # (label, status, reason)
    seconds: float = 0.0

    @property
    def ran(self) -> int:
        return sum(self.statuses.values())


def run_local(
    specs: Sequence[RunSpec],
    store: ResultStore,
    *,
    on_run_start: Callable[[RunSpec], None] | None = None,
    on_run_end: Callable[[RunSpec, RunRecord | None], None] | None = None,
) -> SuiteSummary:
    """Run ``specs`` one after the other in this process, skipping finished ones.

    Each record is written (atomically) as soon as its run ends, so an interrupted
    suite loses at most the run in flight; re-running resumes where it stopped.
    Failed runs are recorded and retried on the next invocation. The store is read
    for every spec before the first run starts, so a record of a newer schema stops
    the suite before anything runs, and unreadable files are moved aside first
    (:meth:`ResultStore.is_finished`).

    Raises:
        NewerSchemaError: a record of these specs was written by a newer benchsuite.
    """
    summary = SuiteSummary(total=len(specs))
    t0 = time.perf_counter()
    seen: set[str] = set()
    todo: list[RunSpec | None] = []  # None: skipped (finished, or a duplicate spec)
    for spec in specs:
        run_id = spec.run_id
        todo.append(None if run_id in seen or store.is_finished(run_id) else spec)
        seen.add(run_id)
    for spec, pending in zip(specs, todo, strict=True):
        if pending is None:
            summary.skipped += 1
            if on_run_end:
                on_run_end(spec, None)
            continue
        if on_run_start:
            on_run_start(spec)
        record = run(spec)
        store.write(record)
        summary.statuses[record.status] += 1
        if record.status is not Status.COMPLETED:
            summary.problems.append((spec.label, record.status, record.reason))
        if on_run_end:
            on_run_end(spec, record)
    summary.seconds = time.perf_counter() - t0
    return summary
