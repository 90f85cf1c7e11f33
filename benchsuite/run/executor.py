"""Executors: run the specs of a suite that the store does not already hold.

One loop, :func:`run_specs`, does what every executor shares: it skips finished
runs, takes each run's claim when a slot is free for it, hands the run to a
:class:`Backend` and writes each record as it comes back (only this process writes
to the store, so writes stay atomic), reporting progress as it goes. A backend
only *submits* runs and *collects* their records:

* in this process, one run after the other (:func:`run_local` with ``workers = 1``);
* in a pool of worker processes on this machine (:func:`run_local` with
  ``workers > 1``; ``spawn``ed, so no torch state is forked), each running whole runs;
* as Ray tasks on a local or remote Ray cluster (:mod:`benchsuite.run.ray_executor`).

A Ctrl-C writes the records of runs that had finished but were not collected yet,
then cancels the runs in flight; a worker that dies fails only the runs it held. A
run's outcome does not depend on where it ran: every run seeds itself from its spec.
"""

from __future__ import annotations

import abc
import ctypes
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchsuite.config.spec import RunSpec
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import Claim, ResultStore
from benchsuite.run.checkpoint import checkpoint_path
from benchsuite.run.provenance import GPU_SHARED_ENV, WORKERS_ENV
from benchsuite.run.runner import run

__all__ = ["Backend", "SuiteSummary", "run_local", "run_specs"]
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


class Backend(abc.ABC):
    """Where runs run: :func:`run_specs` submits specs to it and collects their records.

    Attributes:
        name: Recorded in each record's provenance as ``executor``.
        slots: Runs in flight at most (a run is claimed only when a slot is free for it).
        broken: Set when the backend can take no more runs (a process pool whose worker
            died): the loop collects what is in flight, closes it and opens a fresh one.
    """

    name: str = "?"
    slots: int = 1
    broken: bool = False

    @abc.abstractmethod
    def submit(self, spec: RunSpec, checkpoints: Path | None) -> Hashable:
        """Start ``spec`` (checkpointing under ``checkpoints`` if it asks to); returns its handle."""

    @abc.abstractmethod
    def wait(self, handles: Sequence[Hashable], timeout: float | None) -> list[Hashable]:
        """Handles of finished runs: at least one, unless ``timeout`` seconds pass (0: every finished one, now)."""

    @abc.abstractmethod
    def collect(self, handle: Hashable, spec: RunSpec) -> RunRecord:
        """The finished run's record, or a ``failed`` record whose reason starts with
        :data:`DIED` when its worker died.

        Raises what :func:`~benchsuite.run.runner.run` raised (a bad spec, a broken task),
        as running it in this process would.
        """

    def cancel(self, handles: Sequence[Hashable]) -> None:
        """Stop these runs (Ctrl-C or an error): their records will not be collected."""

    def close(self) -> None:
        """Release the workers (after :meth:`cancel` when runs were still in flight)."""


def run_local(
    specs: Sequence[RunSpec],
    store: ResultStore,
    *,
    on_run_start: Callable[[RunSpec], None] | None = None,
    on_run_end: Callable[[RunSpec, RunRecord | None], None] | None = None,
    workers: int = 1,
    threads: int | None = None,
    gpus: Sequence[int] = (),
) -> SuiteSummary:
    """Run ``specs`` on this machine, skipping finished ones (the loop is :func:`run_specs`).

    Args:
        specs: The runs, in order (with workers, they start in this order).
        store: Where the records go.
        on_run_start, on_run_end: Progress callbacks (``on_run_end`` gets None for a skipped run).
        workers: Processes running runs at once (1: in this process).
        threads: torch CPU threads in each worker process (None: torch's default there).
        gpus: GPU indices the workers take in turn, one each (empty: leave the GPUs alone).

    Raises:
        NewerSchemaError: a record of these specs was written by a newer benchsuite.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"Invalid workers: {workers!r} (need a positive integer)")
    if workers == 1 and not gpus:
        return run_specs(specs, store, _InProcess, on_run_start=on_run_start, on_run_end=on_run_end)
    return run_specs(specs, store, lambda: _Pool(workers, threads, gpus), on_run_start=on_run_start,
                     on_run_end=on_run_end)


def run_specs(
    specs: Sequence[RunSpec],
    store: ResultStore,
    backend: Callable[[], Backend],
    *,
    on_run_start: Callable[[RunSpec], None] | None = None,
    on_run_end: Callable[[RunSpec, RunRecord | None], None] | None = None,
) -> SuiteSummary:
    """Run ``specs`` on the backends ``backend()`` opens, skipping finished ones: every executor's loop.

    Each record is written (atomically) as soon as its run ends, so an interrupted
    suite loses at most the runs in flight; re-running resumes where it stopped.
    Failed runs are recorded and retried on the next invocation. The store is read
    for every spec before the first run starts, so a record of a newer schema stops
    the suite before anything runs, and unreadable files are moved aside first
    (:meth:`ResultStore.is_finished`). A run is claimed only when the backend has a
    free slot for it, so other processes on the same results directory share the
    rest. On Ctrl-C the records of runs that had finished but were not collected yet
    are written, the other runs in flight are cancelled, and the interrupt goes on.

    Args:
        specs: The runs, in order (they are submitted in this order).
        store: Where the records go.
        backend: Opens a backend (called again when one breaks).
        on_run_start, on_run_end: Progress callbacks (``on_run_end`` gets None for a skipped run).

    Raises:
        NewerSchemaError: a record of these specs was written by a newer benchsuite.
    """
    summary = SuiteSummary(total=len(specs))
    t0 = time.perf_counter()
    store.clean_temporary_files()
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
    claims: dict[str, Claim] = {}

    def skipped(spec: RunSpec) -> None:  # another process ran it meanwhile
        summary.skipped += 1
        if on_run_end:
            on_run_end(spec, None)

    ckpt = store.root / CHECKPOINTS

    def keep(spec: RunSpec, record: RunRecord) -> None:
        store.write(record)
        checkpoint_path(ckpt, spec.run_id).unlink(missing_ok=True)  # the record supersedes it
        claims.pop(spec.run_id).release()
        summary.statuses[record.status] += 1
        if record.status is not Status.COMPLETED:
            summary.problems.append((spec.label, record.status, record.reason))
        if on_run_end:
            on_run_end(spec, record)

    dispatcher = _Dispatcher(_claimed(pending, store, claims, skipped), backend, on_run_start, ckpt)
    try:
        for spec, record in dispatcher:
            keep(spec, record)
    except KeyboardInterrupt:
        salvaged = dispatcher.salvage()
        for spec, record in salvaged:  # finished before the Ctrl-C: nothing finished is lost
            keep(spec, record)
        log.info("interrupted: kept %d finished run(s), cancelling %d in flight", len(salvaged),
                 len(dispatcher.flying))
        raise
    finally:
        dispatcher.close()
        for claim in claims.values():
            claim.release()
    summary.seconds = time.perf_counter() - t0
    return summary


class _Dispatcher:
    """Feeds claimed specs to a backend, at most ``slots`` in flight, and yields records as runs finish."""

    def __init__(self, source: Iterator[RunSpec | None], open_backend: Callable[[], Backend],
                 on_start: Callable[[RunSpec], None] | None, checkpoints: Path | None):
        self.source, self.open_backend, self.on_start, self.checkpoints = source, open_backend, on_start, checkpoints
        self.backend: Backend | None = None
        self.flying: dict[Hashable, RunSpec] = {}
        self._records = self._run()

    def __iter__(self) -> Iterator[tuple[RunSpec, RunRecord]]:
        return self._records

    def _run(self) -> Iterator[tuple[RunSpec, RunRecord]]:
        first = next(self.source, _END)
        if first is _END:  # nothing to run: open no backend (no pool, no Ray)
            return
        self.source = itertools.chain([first], self.source)
        exhausted = False
        while not exhausted:
            self.backend = backend = self.open_backend()
            while (not exhausted and not backend.broken) or self.flying:
                waiting = False  # every remaining spec is claimed by another process right now
                while not exhausted and not backend.broken and not waiting and len(self.flying) < backend.slots:
                    spec = next(self.source, _END)
                    if spec is _END:
                        exhausted = True
                    elif spec is WAIT:
                        waiting = True
                    else:
                        if self.on_start:
                            self.on_start(spec)
                        self.flying[backend.submit(spec, self.checkpoints)] = spec
                if not self.flying:
                    if waiting:
                        time.sleep(_POLL_SECONDS)
                    continue
                for handle in backend.wait(list(self.flying), _POLL_SECONDS if waiting else None):
                    spec = self.flying.pop(handle)
                    yield spec, self._collect(backend, handle, spec)
            self.backend = None
            backend.close()

    @staticmethod
    def _collect(backend: Backend, handle: Hashable, spec: RunSpec) -> RunRecord:
        record = backend.collect(handle, spec)
        record.provenance.setdefault("executor", backend.name)
        return record

    def salvage(self) -> list[tuple[RunSpec, RunRecord]]:
        """After a Ctrl-C: the records of runs in flight that had finished (not of those whose worker died)."""
        backend = self.backend
        if backend is None or not self.flying:
            return []
        try:
            done = backend.wait(list(self.flying), 0)
        except BaseException as exc:  # noqa: BLE001 - the backend may be going down with the Ctrl-C
            log.debug("no records salvaged: %r", exc)
            return []
        out = []
        for handle in done:
            spec = self.flying.pop(handle)
            try:
                record = self._collect(backend, handle, spec)
            except BaseException as exc:  # noqa: BLE001 - e.g. a pool worker that got the Ctrl-C too
                log.debug("run %s not salvaged: %r", spec.label, exc)
                continue
            if not record.reason.startswith(DIED):
                out.append((spec, record))
        return out

    def close(self) -> None:
        """Stop taking specs and cancel the runs still in flight; idempotent."""
        self._records.close()
        backend, self.backend = self.backend, None
        if backend is None:
            return
        try:
            if self.flying:
                backend.cancel(list(self.flying))
        finally:
            self.flying.clear()
            backend.close()


WAIT = None  # what _claimed yields when every remaining spec is claimed by another process right now
_POLL_SECONDS = 0.2


def _claimed(specs: Sequence[RunSpec], store: ResultStore, claims: dict[str, Claim],
             skipped: Callable[[RunSpec], None]) -> Iterator[RunSpec | None]:
    """The specs this process claims, in order; those another process holds come last, once it lets go.

    A spec claimed elsewhere is skipped on the first pass. Then the deferred ones are
    polled: a spec whose claim frees up is run only if no finished record appeared (its
    holder may have died, or its run failed). While all of them are held elsewhere this
    yields :data:`WAIT`, so a caller with runs in flight can collect them meanwhile
    (waiting instead could deadlock two processes on each other's claims).
    """
    deferred = []

    def take(spec: RunSpec, claim: Claim) -> bool:
        if store.is_finished(spec.run_id):  # finished by another process before we claimed it
            claim.release()
            skipped(spec)
            return False
        claims[spec.run_id] = claim
        return True

    for spec in specs:
        claim = store.claim(spec.run_id)
        if claim is None:
            deferred.append(spec)
        elif take(spec, claim):
            yield spec
    while deferred:
        progressed = False
        for spec in list(deferred):
            claim = store.claim(spec.run_id)
            if claim is not None:
                deferred.remove(spec)
                progressed = True
                if take(spec, claim):
                    yield spec
        if not progressed and deferred:
            yield WAIT


def _checkpointing(spec: RunSpec, checkpoints: Path | None) -> dict[str, Any]:
    """``run``'s checkpoint argument, only for a spec that asks for checkpoints."""
    return {"checkpoint_dir": checkpoints} if spec.checkpoint_every and checkpoints is not None else {}


class _InProcess(Backend):
    """Runs each run in this process, right when it is submitted."""

    name = "local"
    slots = 1

    def __init__(self) -> None:
        self._records: dict[int, RunRecord] = {}
        self._next = 0

    def submit(self, spec: RunSpec, checkpoints: Path | None) -> Hashable:
        self._next += 1
        self._records[self._next] = run(spec, **_checkpointing(spec, checkpoints))  # run: looked up now (tests patch it)
        return self._next

    def wait(self, handles: Sequence[Hashable], timeout: float | None) -> list[Hashable]:
        return list(handles)

    def collect(self, handle: Hashable, spec: RunSpec) -> RunRecord:
        return self._records.pop(handle)


class _Pool(Backend):
    """A pool of ``spawn``ed worker processes on this machine; broken once a worker dies.

    A worker that dies (killed for memory, a segfault) fails the runs that were in
    flight (recorded as ``failed``, retried on the next invocation); the loop goes on
    with the rest in a fresh pool.
    """

    name = "pool"

    def __init__(self, workers: int, threads: int | None, gpus: Sequence[int]):
        self.slots = workers
        self._cancelled = False
        ctx = multiprocessing.get_context("spawn")
        devices = None
        if gpus:
            devices = ctx.Queue()
            for k in range(workers):
                devices.put(gpus[k % len(gpus)])
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(threads, os.getpid(), devices, workers, len(gpus)))

    def submit(self, spec: RunSpec, checkpoints: Path | None) -> Hashable:
        return self.pool.submit(run, spec, **_checkpointing(spec, checkpoints))

    def wait(self, handles: Sequence[Hashable], timeout: float | None) -> list[Hashable]:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def collect(self, handle: Hashable, spec: RunSpec) -> RunRecord:
        record = _outcome(handle, spec)
        self.broken |= record.reason.startswith(DIED)
        return record

    def cancel(self, handles: Sequence[Hashable]) -> None:
        self._cancelled = True
        self.pool.shutdown(wait=False, cancel_futures=True)  # stop the workers, keep what is written

    def close(self) -> None:
        if not self._cancelled:  # after a cancel, waiting would let the runs in flight finish for nobody
            self.pool.shutdown(wait=True)


def _init_worker(threads: int | None, parent: int, devices: Any, workers: int, n_devices: int) -> None:
    """Set up a worker: die with the parent (Linux), take a GPU, set torch's CPU threads.

    ``devices`` is a queue of GPU indices (None on the CPU): each worker takes one and
    sees only that GPU (``CUDA_VISIBLE_DEVICES``, set before CUDA is initialised), so a
    spec's ``device = "cuda"`` is that worker's GPU and run ids do not depend on it.
    With more workers than GPUs the indices come round again and the records say the
    GPU was shared.
    """
    _die_with_parent(parent)
    os.environ[WORKERS_ENV] = str(workers)
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
        os.environ[GPU_SHARED_ENV] = "1" if workers > n_devices else "0"
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


_END = object()
CHECKPOINTS = ".checkpoints"  # under the results directory: <run_id>.pt of runs in progress
DIED = "worker process died"  # how the reason of a run whose worker died starts (every backend)
_DIED = DIED  # earlier name


def _outcome(future: Future[RunRecord], spec: RunSpec) -> RunRecord:
    """The worker's record, or a failed record when the worker process died (OOM-killed, segfault, ...)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        log.warning("run %s: %s: %s", spec.label, DIED, exc)
        return RunRecord(run_id=spec.run_id, spec=spec, status=Status.FAILED, reason=f"{DIED}: {exc}")
