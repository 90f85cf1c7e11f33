"""Run a whole suite from Python: tuning trials, selection of the winners, then the final runs.

``run_suite(load_suite("paper", size="tiny"), ResultStore("results/paper"))`` does
what ``benchsuite run --suite paper --size tiny`` does, short of the report:

1. every spec of the suite is validated (unknown names and bad values raise here);
2. with a ``[tuning]`` table, the tuning trials run (finished ones are skipped);
3. each tuned column's winner is selected on the suite's metric from the stored trials
   (:mod:`benchsuite.run.tuning`), and the final runs use its hyperparameters;
4. the final runs run (finished ones are skipped).

Progress is reported to a :class:`SuiteProgress` (the CLI's draws rich progress bars;
the default does nothing), so the sequence itself has no output of its own. The runs
of both phases run on this machine (``executor="local"``: in this process or a pool
of worker processes) or as Ray tasks (``executor="ray"``: one Ray session for both
phases, see :mod:`benchsuite.run.ray_executor`).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchsuite.config.spec import RunSpec
from benchsuite.config.suite import Suite
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.run.executor import SuiteSummary, run_local

EXECUTORS = ("local", "ray")

__all__ = ["Phase", "SuiteProgress", "SuiteResult", "run_suite"]
log = logging.getLogger(__name__)


class Phase(str, enum.Enum):
    """The two phases of a suite: tuning trials (tuned suites only), then the final runs."""

    TUNING = "tuning"
    RUNS = "runs"

    def __str__(self) -> str:
        return self.value


class SuiteProgress:
    """Hooks :func:`run_suite` calls as it goes; the base class ignores them all (override what you need)."""

    def start_phase(self, phase: Phase, suite: Suite, specs: Sequence[RunSpec]) -> None:
        """``specs`` of ``phase`` are about to run (finished ones will be skipped)."""

    def start_run(self, spec: RunSpec) -> None:
        """``spec`` starts training."""

    def end_run(self, spec: RunSpec, record: RunRecord | None) -> None:
        """``spec`` ended with ``record``, or was skipped as already finished (None)."""

    def end_phase(self, phase: Phase, summary: SuiteSummary) -> None:
        """``phase`` is over; ``summary`` counts its outcomes."""


@dataclass(frozen=True)
class SuiteResult:
    """What :func:`run_suite` did.

    Attributes:
        name: The suite's name.
        store: Where the records are.
        trials: The tuning trial specs (empty for an untuned suite).
        finals: The final run specs, with each tuned column's winning hyperparameters.
        tuning: Outcomes of the tuning phase (None for an untuned suite).
        runs: Outcomes of the final runs.
        tuning_metric: The suite's ``train_*`` or ``valid_*`` column that selected the winners (``valid_loss`` if untuned).
    """

    name: str
    store: ResultStore
    trials: list[RunSpec]
    finals: list[RunSpec]
    tuning: SuiteSummary | None
    runs: SuiteSummary
    tuning_metric: str = "valid_loss"

    def records(self) -> list[RunRecord]:
        """The stored records of the final runs, in the order of :attr:`finals` (missing ones left out)."""
        ids = {spec.run_id for spec in self.finals}
        by_id = {r.run_id: r for r in self.store.records()[0] if r.run_id in ids}
        return [by_id[spec.run_id] for spec in self.finals if spec.run_id in by_id]


def run_suite(suite: Suite, store: ResultStore | str | os.PathLike[str], *, progress: SuiteProgress | None = None,
              threads: int | None = None, workers: int | str | None = None,
              gpus: Sequence[int] | None = None, executor: str = "local", address: str | None = None,
              gpus_per_run: float | None = None) -> SuiteResult:
    """Run ``suite`` into ``store``: tuning trials, selection of the winners, final runs.

    Resumable: runs whose finished record is in ``store`` are skipped, so calling it
    again after an interruption goes on where it stopped (tuning included).

    Args:
        suite: The suite (e.g. from :func:`benchsuite.config.suite.load_suite`, narrowed as wanted).
        store: A :class:`ResultStore` or the path of its directory (created if missing).
        progress: Told about phases and runs as they start and end (default: nothing).
        threads: torch CPU threads for the runs (default: the suite's ``threads``; None in
            both leaves torch's setting alone). Recorded in each record's provenance.
        workers: Runs at once in worker processes on this machine (default: the suite's
            ``workers``, 1 if unset); ``"auto"``: one per ``threads`` CPU cores for CPU suites
            (one per GPU for CUDA suites). Outcomes do not depend on it.
        gpus: For a suite on ``device = "cuda"``: the GPU indices its workers take, one
            each (default: every visible GPU when there are several workers). A suite
            naming ``cuda:N`` itself is left alone. Not with the ray executor (Ray assigns GPUs).
        executor: ``"local"`` (this machine) or ``"ray"`` (one Ray task per run; ``workers``
            then caps the runs in flight, default: as many as the cluster has room for).
        address: The Ray cluster to connect to (ray executor only; None: start a local Ray).
        gpus_per_run: GPUs per run on ``device = "cuda"`` with the ray executor (default: the
            suite's ``gpus_per_run``, else 1; fractions share a GPU).

    Returns:
        The specs that ran and the outcome counts of each phase.

    Raises:
        BenchsuiteError: a bad name or value in the suite, before anything runs.
    """
    finals = suite.specs()  # validates every name and value before anything runs (or is created)
    trials = suite.trial_specs()
    threads = threads if threads is not None else suite.threads
    if executor not in EXECUTORS:
        raise ConfigError(f"Unknown executor {executor!r}. Valid choices: {', '.join(EXECUTORS)}")
    if executor != "ray" and (address is not None or gpus_per_run is not None):
        raise ConfigError(f"A Ray address or GPUs per run given for the {executor} executor: they are for "
                          f"executor ray (--executor ray)")
    _set_threads(threads)
    with contextlib.ExitStack() as stack:
        if executor == "ray":
            execute = stack.enter_context(_ray_executor(suite, threads, workers, gpus, address, gpus_per_run))
        else:
            execute = _local_executor(suite, threads, workers, gpus)
        store = store if isinstance(store, ResultStore) else ResultStore(Path(store))
        progress = progress or SuiteProgress()
        tuning = None
        if trials:
            tuning = _run_phase(Phase.TUNING, suite, trials, store, progress, execute)
            finals = suite.final_specs(store.records()[0])
        runs = _run_phase(Phase.RUNS, suite, finals, store, progress, execute)
    metric = suite.tuning.metric if suite.tuning else "valid_loss"
    return SuiteResult(suite.name, store, trials, finals, tuning, runs, metric)


_Execute = Callable[[Sequence[RunSpec], ResultStore, SuiteProgress], SuiteSummary]


def _local_executor(suite: Suite, threads: int | None, workers: int | str | None,
                    gpus: Sequence[int] | None) -> _Execute:
    """Runs on this machine: in this process, or in a pool of worker processes."""
    pool = resolve_workers(workers if workers is not None else suite.workers, threads, suite.base.device,
                           gpus=gpus)
    if gpus and not suite.base.device.startswith("cuda"):
        raise ConfigError(f"GPUs {list(gpus)} given for suite '{suite.name}' on device {suite.base.device}: "
                          f"run it with --device cuda")
    pinned = _pinned_gpus(suite.base.device, pool, gpus)

    def execute(specs: Sequence[RunSpec], store: ResultStore, progress: SuiteProgress) -> SuiteSummary:
        return run_local(specs, store, on_run_start=progress.start_run, on_run_end=progress.end_run,
                         workers=pool, threads=threads, gpus=pinned)

    return execute


@contextlib.contextmanager
def _ray_executor(suite: Suite, threads: int | None, workers: int | str | None, gpus: Sequence[int] | None,
                  address: str | None, gpus_per_run: float | None) -> Iterator[_Execute]:
    """Runs as Ray tasks, both phases in one Ray session (started when the first run needs it)."""
    from benchsuite.run.ray_executor import RaySession, check_gpus_per_run, run_ray

    if gpus:
        raise ConfigError(f"GPUs {list(gpus)} given for the ray executor: Ray assigns each run its GPU "
                          f"(set GPUs per run with --gpus-per-run instead)")
    if gpus_per_run is None and suite.base.device.startswith("cuda"):  # a CPU run of a GPU suite: no GPUs
        gpus_per_run = suite.gpus_per_run
    gpus_per_run = check_gpus_per_run(gpus_per_run, "GPUs per run")
    if workers == "auto":
        workers = None  # as many runs as the cluster has room for
    elif workers is not None:
        workers = resolve_workers(workers, threads, suite.base.device)
    with RaySession(address, num_cpus=workers * (threads or 1) if workers else None) as session:

        def execute(specs: Sequence[RunSpec], store: ResultStore, progress: SuiteProgress) -> SuiteSummary:
            return run_ray(specs, store, on_run_start=progress.start_run, on_run_end=progress.end_run,
                           workers=workers, threads=threads, gpus_per_run=gpus_per_run, session=session)

        yield execute


def resolve_workers(workers: int | str, threads: int | None, device: str, *, gpus: Sequence[int] | None = None
                    ) -> int:
    """The number of worker processes: ``workers``, or for ``"auto"`` one per GPU (CUDA suites:
    ``gpus``, else every visible one) or the CPU cores / ``threads`` (CPU suites)."""
    if workers == "auto":
        if device.startswith("cuda"):
            return len(gpus) if gpus else max(1, _gpu_count())
        return max(1, (os.cpu_count() or 1) // (threads or 1))
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"Invalid workers: {workers!r} (need a positive integer or \"auto\")")
    return workers


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _pinned_gpus(device: str, workers: int, gpus: Sequence[int] | None) -> tuple[int, ...]:
    """The GPUs the workers take in turn: only for ``device = "cuda"`` (not ``cuda:N``) with a pool."""
    if device != "cuda" or (workers == 1 and not gpus):
        return ()
    return tuple(gpus) if gpus else tuple(range(max(1, _gpu_count())))


def _run_phase(phase: Phase, suite: Suite, specs: Sequence[RunSpec], store: ResultStore,
               progress: SuiteProgress, execute: _Execute) -> SuiteSummary:
    progress.start_phase(phase, suite, specs)
    summary = execute(specs, store, progress)
    log.info("%s %s: ran %d, skipped %d, in %.1f s", suite.name, phase, summary.ran, summary.skipped, summary.seconds)
    progress.end_phase(phase, summary)
    return summary


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"Invalid threads: {threads} (need a positive integer)")
    import torch

    torch.set_num_threads(threads)
