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
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    gpus: Sequence[int] = (),
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
        gpus: GPU indices the workers take in turn, one each (empty: leave the GPUs alone).

    Raises:
        NewerSchemaError: a record of these specs was written by a newer benchsuite.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"Invalid workers: {workers!r} (need a positive integer)")
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

    todo = _claimed(pending, store, claims, skipped)
    ckpt = store.root / CHECKPOINTS
    ran = (_in_process(todo, on_run_start, ckpt) if workers == 1 and not gpus
           else _in_pool(todo, workers, threads, on_run_start, gpus, ckpt))
    try:
        for spec, record in ran:
            store.write(record)
            checkpoint_path(ckpt, spec.run_id).unlink(missing_ok=True)  # the record supersedes it
            claims.pop(spec.run_id).release()
            summary.statuses[record.status] += 1
            if record.status is not Status.COMPLETED:
                summary.problems.append((spec.label, record.status, record.reason))
            if on_run_end:
                on_run_end(spec, record)
    finally:
        for claim in claims.values():
            claim.release()
    summary.seconds = time.perf_counter() - t0
    return summary


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


def _in_process(specs: Iterable[RunSpec | None], on_start: Callable[[RunSpec], None] | None,
                checkpoints: Path | None = None) -> Iterator[tuple[RunSpec, RunRecord]]:
    for spec in specs:
        if spec is WAIT:  # nothing of ours in flight: just wait for the other process
            time.sleep(_POLL_SECONDS)
            continue
        if on_start:
            on_start(spec)
        yield spec, run(spec, **_checkpointing(spec, checkpoints))


def _checkpointing(spec: RunSpec, checkpoints: Path | None) -> dict[str, Any]:
    """``run``'s checkpoint argument, only for a spec that asks for checkpoints."""
    return {"checkpoint_dir": checkpoints} if spec.checkpoint_every and checkpoints is not None else {}


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


def _in_pool(specs: Iterable[RunSpec | None], workers: int, threads: int | None,
             on_start: Callable[[RunSpec], None] | None, gpus: Sequence[int] = (),
             checkpoints: Path | None = None) -> Iterator[tuple[RunSpec, RunRecord]]:
    """Records as runs finish, with at most ``workers`` runs in flight (started in ``specs`` order).

    A worker that dies (killed for memory, a segfault) fails the runs that were in
    flight (recorded as ``failed``, retried on the next invocation); a fresh pool goes on
    with the rest.
    """
    source = iter(specs)
    exhausted = False
    ctx = multiprocessing.get_context("spawn")
    while not exhausted:
        devices = None
        if gpus:
            devices = ctx.Queue()
            for k in range(workers):
                devices.put(gpus[k % len(gpus)])
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, os.getpid(), devices, workers, len(gpus))) as pool:
            flying: dict[Future[RunRecord], RunSpec] = {}
            broken = False
            try:
                while (not exhausted and not broken) or flying:
                    waiting = False
                    while not exhausted and not broken and not waiting and len(flying) < workers:
                        spec = next(source, _END)
                        if spec is _END:
                            exhausted = True
                        elif spec is WAIT:
                            waiting = True
                        else:
                            if on_start:
                                on_start(spec)
                            flying[pool.submit(run, spec, **_checkpointing(spec, checkpoints))] = spec
                    if not flying:
                        if waiting:
                            time.sleep(_POLL_SECONDS)
                        continue
                    done, _ = wait(flying, timeout=_POLL_SECONDS if waiting else None, return_when=FIRST_COMPLETED)
                    for future in done:
                        spec = flying.pop(future)
                        record = _outcome(future, spec)
                        broken |= record.reason.startswith(_DIED)
                        yield spec, record
            except BaseException:  # Ctrl-C or a failed write: stop the workers, keep what is written
                pool.shutdown(wait=False, cancel_futures=True)
                raise


_END = object()
CHECKPOINTS = ".checkpoints"  # under the results directory: <run_id>.pt of runs in progress
_DIED = "worker process died"


def _outcome(future: Future[RunRecord], spec: RunSpec) -> RunRecord:
    """The worker's record, or a failed record when the worker process died (OOM-killed, segfault, ...)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        log.warning("run %s: %s: %s", spec.label, _DIED, exc)
        return RunRecord(run_id=spec.run_id, spec=spec, status=Status.FAILED, reason=f"{_DIED}: {exc}")
