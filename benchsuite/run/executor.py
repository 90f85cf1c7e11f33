"""Executors: run the specs of a suite that the store does not already hold.

:func:`run_local` runs them one after the other in this process, or, with
``workers > 1``, in a pool of worker processes on this machine (``spawn``ed, so
no torch state is forked): each worker runs whole runs and sends the record back,
and only this process writes to the store, so writes stay atomic and a Ctrl-C
loses at most the runs in flight. A run's outcome does not depend on where it ran:
every run seeds itself from its spec.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from benchsuite.config.spec import RunSpec
from benchsuite.errors import ConfigError
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
    workers: int = 1,
    threads: int | None = None,
) -> SuiteSummary:
    """Run ``specs`` on this machine, skipping finished ones.

    Each record is written (atomically) as soon as its run ends, so an interrupted
    suite loses at most the runs in flight; re-running resumes where it stopped.
    Failed runs are recorded and retried on the next invocation. The store is read
    for every spec before the first run starts, so a record of a newer schema stops
    the suite before anything runs, and unreadable files are moved aside first
    (:meth:`ResultStore.is_finished`).

    Args:
        specs: The runs, in order (with workers, they start in this order).
        store: Where the records go.
        on_run_start, on_run_end: Progress callbacks (``on_run_end`` gets None for a skipped run).
        workers: Processes running runs at once (1: in this process).
        threads: torch CPU threads in each worker process (None: torch's default there).

    Raises:
        NewerSchemaError: a record of these specs was written by a newer benchsuite.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"Invalid workers: {workers!r} (need a positive integer)")
    summary = SuiteSummary(total=len(specs))
    t0 = time.perf_counter()
    seen: set[str] = set()
    pending: list[RunSpec] = []
    for spec in specs:
        run_id = spec.run_id
        if run_id in seen or store.is_finished(run_id):
            summary.skipped += 1
            if on_run_end:
                on_run_end(spec, None)
        else:
            pending.append(spec)
        seen.add(run_id)
    ran = _in_process(pending, on_run_start) if workers == 1 else _in_pool(pending, workers, threads, on_run_start)
    for spec, record in ran:
        store.write(record)
        summary.statuses[record.status] += 1
        if record.status is not Status.COMPLETED:
            summary.problems.append((spec.label, record.status, record.reason))
        if on_run_end:
            on_run_end(spec, record)
    summary.seconds = time.perf_counter() - t0
    return summary


def _in_process(specs: Sequence[RunSpec], on_start: Callable[[RunSpec], None] | None
                ) -> Iterator[tuple[RunSpec, RunRecord]]:
    for spec in specs:
        if on_start:
            on_start(spec)
        yield spec, run(spec)


def _init_worker(threads: int | None, parent: int) -> None:
    """Set up a worker: die with the parent (Linux), then set torch's CPU threads."""
    _die_with_parent(parent)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``).

    A worker whose parent was killed (``kill -9``, OOM) would otherwise finish its run
    for nobody: only the parent writes records. Elsewhere this is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except OSError:  # no glibc (e.g. musl): the worker outlives a killed parent, as before
        return
    if os.getppid() != parent:  # the parent died before the call: nobody would collect the records
        os._exit(1)


def _in_pool(specs: Sequence[RunSpec], workers: int, threads: int | None,
             on_start: Callable[[RunSpec], None] | None) -> Iterator[tuple[RunSpec, RunRecord]]:
    """Records as runs finish, with at most ``workers`` runs in flight (started in ``specs`` order).

    A worker that dies (killed for memory, a segfault) fails the runs that were in
    flight (recorded as ``failed``, retried on the next invocation); a fresh pool goes on
    with the rest.
    """
    queue = list(reversed(specs))
    ctx = multiprocessing.get_context("spawn")
    while queue:
        with ProcessPoolExecutor(max_workers=min(workers, len(queue)), mp_context=ctx,
                                 initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
            flying: dict[Future[RunRecord], RunSpec] = {}
            broken = False
            try:
                while (queue and not broken) or flying:
                    while queue and not broken and len(flying) < workers:
                        spec = queue.pop()
                        if on_start:
                            on_start(spec)
                        flying[pool.submit(run, spec)] = spec
                    done, _ = wait(flying, return_when=FIRST_COMPLETED)
                    for future in done:
                        spec = flying.pop(future)
                        record = _outcome(future, spec)
                        broken |= record.reason.startswith(_DIED)
                        yield spec, record
            except BaseException:  # Ctrl-C or a failed write: stop the workers, keep what is written
                pool.shutdown(wait=False, cancel_futures=True)
                raise


_DIED = "worker process died"


def _outcome(future: Future[RunRecord], spec: RunSpec) -> RunRecord:
    """The worker's record, or a failed record when the worker process died (OOM-killed, segfault, ...)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        log.warning("run %s: %s: %s", spec.label, _DIED, exc)
        return RunRecord(run_id=spec.run_id, spec=spec, status=Status.FAILED, reason=f"{_DIED}: {exc}")
