"""The Ray executor: each run is one Ray task on a local or remote Ray cluster.

``benchsuite run --executor ray [--address ADDR]`` (or ``run_suite(..., executor="ray")``)
sends every run that the store does not hold to Ray as one task and writes the
records that come back. It is a :class:`~benchsuite.run.executor.Backend` of the loop
every executor shares (:func:`~benchsuite.run.executor.run_specs`), so everything
but *where a run runs* is as with the local worker pool:

* the driver (this process) alone writes records, skips finished runs and takes
  each run's claim, and only when a slot is free for it, so several drivers (or a
  driver and ``benchsuite run`` processes elsewhere) can share one results directory;
* tasks are ``ray.remote`` functions with ``num_cpus`` = the suite's ``threads``
  (default 1) and ``num_gpus`` = ``gpus_per_run`` on a ``device = "cuda"`` suite
  (default 1; a fraction such as 0.25 packs four small runs on one GPU, and their
  records then say ``gpu_shared: true``), so Ray's scheduler places them; Ray sets
  each task's ``CUDA_VISIBLE_DEVICES``, so ``cuda`` is the run's GPU;
* at most as many runs are in flight as the cluster has room for (its CPUs over
  ``num_cpus``, its GPUs over ``num_gpus``; ``--workers N`` caps it), and records are
  collected in completion order with ``ray.wait``;
* a task whose worker dies (a segfault, the OOM killer, a lost node) gives a
  ``failed`` record for that run only, retried on the next invocation (tasks are
  submitted with ``max_retries=0``: a deterministic crash would just recur); an
  error that :func:`~benchsuite.run.runner.run` raises before training (a bad spec, a
  broken task) is raised in the driver, as in-process;
* Ctrl-C writes the records of tasks that had already finished, then cancels the
  rest (``ray.cancel(force=True)``) and releases their claims.

Each record's provenance says ``executor: "ray"`` and the Ray node it ran on, and,
on a GPU, whether other runs shared it (``gpu_shared``). Records equal the
sequential executor's: the same run ids and, on the CPU, identical loss series
(every run seeds itself from its spec).

With no address, :class:`RaySession` starts a light local Ray (``num_cpus`` = the
workers times the threads per run, or the cores; no dashboard; a 128 MiB object
store; worker output stays in Ray's log files unless ``-v``) and stops it at the
end; with one it connects (``ray.init(address=...)``) and leaves the cluster
running; a Ray already initialised in this process is used as it is. Ray is an
optional dependency (``pip install "benchsuite[ray]"``): this module imports it
only when an executor needs it. Every node needs benchsuite installed, and on
several nodes checkpoints need a results directory on a shared file system.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchsuite.config.spec import RunSpec
from benchsuite.errors import ConfigError
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore
from benchsuite.run.executor import DIED, Backend, SuiteSummary, _checkpointing, run_specs
from benchsuite.run.provenance import GPU_SHARED_ENV, WORKERS_ENV
from benchsuite.run.runner import run

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RAY_INSTALL", "RayBackend", "RayPlan", "RaySession", "check_gpus_per_run", "import_ray", "plan",
           "run_ray"]
log = logging.getLogger(__name__)

RAY_INSTALL = 'pip install "benchsuite[ray]"'
OBJECT_STORE_BYTES = 128 * 1024**2  # records are small; Ray's minimum is 75 MiB
_WAIT_SECONDS = 1.0  # ray.wait in slices, so a Ctrl-C is seen promptly


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ConfigError: Ray is not installed (one line saying how to install it).
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(f"The ray executor needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def check_gpus_per_run(value: Any, where: str = "gpus_per_run") -> float | None:
    """``value`` as GPUs per run (None stays None): a fraction in (0, 1] or a whole number, as Ray accepts.

    Raises:
        ConfigError: anything else, naming ``where``.
    """
    if value is None:
        return None
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
            and value > 0 and (value <= 1 or value == int(value))
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        raise ConfigError(f"Invalid {where}: {value!r} (need a fraction in (0, 1] such as 0.25, or a whole "
                          f"number of GPUs)")
    return float(value)


@dataclass(frozen=True)
class RayPlan:
    """How runs are sent to Ray.

    Attributes:
        num_cpus: CPUs each task reserves (torch threads in it).
        num_gpus: GPUs each task reserves (0 on the CPU; a fraction shares a GPU).
        gpu_shared: Whether a run shares its GPU with other runs (None on the CPU).
        slots: Runs in flight at most.
    """

    num_cpus: int
    num_gpus: float
    gpu_shared: bool | None
    slots: int


def plan(device: str, *, gpus_per_run: float | None, threads: int | None, workers: int | None,
         resources: Mapping[str, float]) -> RayPlan:
    """The tasks' resources and the runs in flight for suites on ``device`` and a cluster with ``resources``.

    Args:
        device: The specs' device (``cpu`` or ``cuda``).
        gpus_per_run: GPUs per run on ``cuda`` (None: 1); must be unset on the CPU.
        threads: torch CPU threads per run (None: 1 CPU per task, Ray's one thread).
        workers: Runs in flight at most (None: as many as the cluster has room for).
        resources: ``ray.cluster_resources()``.

    Raises:
        ConfigError: GPUs per run on a CPU suite, a pinned ``cuda:N``, a cluster without room for one run.
    """
    num_cpus = threads or 1
    if device.startswith("cuda"):
        if device != "cuda":
            raise ConfigError(f"Device {device} cannot be used with the ray executor: Ray gives each run its "
                              f"GPU, use device cuda")
        num_gpus = gpus_per_run or 1.0
        have = resources.get("GPU", 0.0)
        if have < num_gpus:
            raise ConfigError(f"The Ray cluster has {have:g} GPU(s), a run needs {num_gpus:g}: connect to a "
                              f"cluster with GPUs (--address) or run on device cpu")
        room = int(have / num_gpus + 1e-9)
        gpu_shared: bool | None = num_gpus < 1
    else:
        if gpus_per_run is not None:
            raise ConfigError(f"gpus_per_run {gpus_per_run:g} given for runs on device {device}: run them with "
                              f"--device cuda")
        num_gpus, room, gpu_shared = 0.0, None, None
    cpus = resources.get("CPU", 0.0)
    if cpus < num_cpus:
        raise ConfigError(f"The Ray cluster has {cpus:g} CPU(s), a run needs {num_cpus} (threads): lower "
                          f"--threads or add CPUs")
    room = min(int(cpus // num_cpus), room) if room is not None else int(cpus // num_cpus)
    return RayPlan(num_cpus, num_gpus, gpu_shared, max(1, min(room, workers) if workers else room))


class RaySession:
    """Ray for a block (``with RaySession(...) as session:``), initialised on first use by :meth:`get`.

    A Ray already initialised in this process is used as it is and left running.
    Otherwise :meth:`get` connects to ``address``, or starts a light local Ray with
    ``num_cpus`` CPUs (None: the cores), no dashboard and a small object store; a
    Ray started or connected to here is shut down when the block ends (a remote
    cluster keeps running). Nothing is started when nothing needs to run.

    Args:
        address: A Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None: a local Ray.
        num_cpus: CPUs of a local Ray (None: the cores).

    Raises:
        ConfigError: Ray is not installed; ``num_cpus`` is not positive.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None):
        if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
            raise ConfigError(f"Invalid num_cpus for a local Ray: {num_cpus!r} (need a positive integer)")
        self.ray = import_ray()
        self.address, self.num_cpus = address, num_cpus
        self.started = False
        self.startup_seconds: float | None = None  # how long ray.init took, when it ran here

    def get(self) -> Any:
        """The ``ray`` module, initialised."""
        ray = self.ray
        if ray.is_initialized():
            return ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time
        common = {"include_dashboard": False, "configure_logging": False,
                  "log_to_driver": log.isEnabledFor(logging.INFO)}
        t0 = time.perf_counter()
        if self.address:
            ray.init(address=self.address, **common)
        else:
            ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES,
                     **common)
        self.started = True
        self.startup_seconds = time.perf_counter() - t0
        log.info("Ray %s in %.1f s: %s", f"connected to {self.address}" if self.address else "started",
                 self.startup_seconds, ray.cluster_resources())
        return ray

    def close(self) -> None:
        """Shut down the Ray this session initialised, if any."""
        if self.started:
            self.started = False
            self.ray.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _task(target: Callable[..., RunRecord], spec: RunSpec, kwargs: dict[str, Any], threads: int | None,
          workers: int, gpu_shared: bool | None) -> RunRecord:
    """One run in a Ray worker (the body of the remote function)."""
    os.environ[WORKERS_ENV] = str(workers)
    if gpu_shared is None:
        os.environ.pop(GPU_SHARED_ENV, None)
    else:
        os.environ[GPU_SHARED_ENV] = "1" if gpu_shared else "0"
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    record = target(spec, **kwargs)
    try:
        import ray

        if ray.is_initialized():  # in a Ray worker (never start a Ray here)
            record.provenance["ray_node"] = ray.get_runtime_context().get_node_id()
    except Exception as exc:  # noqa: BLE001 - provenance is a nicety, the record is what matters
        log.debug("no Ray node id: %r", exc)
    return record


class RayBackend(Backend):
    """Runs as Ray tasks (Ray must be initialised, e.g. by :meth:`RaySession.get`).

    Args:
        plan: The tasks' resources and the runs in flight (:func:`plan`).
        threads: torch CPU threads in each run (None: Ray's default, ``OMP_NUM_THREADS`` = ``num_cpus``).
        target: What runs a spec in the worker (:func:`~benchsuite.run.runner.run`; tests substitute one).
    """

    name = "ray"

    def __init__(self, plan: RayPlan, *, threads: int | None = None,
                 target: Callable[..., RunRecord] = run):
        self.ray = import_ray()
        self.plan, self.threads, self.target = plan, threads, target
        self.slots = plan.slots
        # a GPU task gets a fresh worker process each time (Ray's max_calls=1 for GPU tasks): CUDA state is released
        self.remote = self.ray.remote(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, max_retries=0)(_task)

    def submit(self, spec: RunSpec, checkpoints: Path | None) -> Hashable:
        return self.remote.remote(self.target, spec, _checkpointing(spec, checkpoints), self.threads,
                                  self.plan.slots, self.plan.gpu_shared)

    def wait(self, handles: Sequence[Hashable], timeout: float | None) -> list[Hashable]:
        refs = list(handles)
        if timeout == 0:
            return self.ray.wait(refs, num_returns=len(refs), timeout=0)[0]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SECONDS if deadline is None else max(0.0, min(_WAIT_SECONDS, deadline - time.monotonic()))
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=left)
            if ready or (deadline is not None and time.monotonic() >= deadline):
                return ready

    def collect(self, handle: Hashable, spec: RunSpec) -> RunRecord:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(handle)
        except exceptions.RayTaskError as exc:  # run() raised before training: as in-process, raise it here
            if isinstance(exc.cause, BaseException):
                raise exc.cause from None
            return self._failed(spec, exc)
        except exceptions.RayError as exc:  # the worker or its node died, the OOM killer struck, ...
            return self._failed(spec, exc)

    @staticmethod
    def _failed(spec: RunSpec, exc: BaseException) -> RunRecord:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        reason = f"{DIED}: Ray {type(exc).__name__}: {first}"
        log.warning("run %s: %s", spec.label, reason)
        return RunRecord(run_id=spec.run_id, spec=spec, status=Status.FAILED, reason=reason)

    def cancel(self, handles: Sequence[Hashable]) -> None:
        for ref in handles:
            try:
                self.ray.cancel(ref, force=True)
            except Exception as exc:  # noqa: BLE001 - already finished, or Ray is going down
                log.debug("cancel: %r", exc)


def run_ray(
    specs: Sequence[RunSpec],
    store: ResultStore,
    *,
    address: str | None = None,
    on_run_start: Callable[[RunSpec], None] | None = None,
    on_run_end: Callable[[RunSpec, RunRecord | None], None] | None = None,
    workers: int | None = None,
    threads: int | None = None,
    gpus_per_run: float | None = None,
    session: RaySession | None = None,
    target: Callable[..., RunRecord] = run,
) -> SuiteSummary:
    """Run ``specs`` as Ray tasks, skipping finished ones; this process writes the records.

    Uses ``session``, else the Ray initialised in this process, else connects to
    ``address``, else starts a local Ray for the call (pass one :class:`RaySession`
    to several calls to start it once). Ray starts only when a run needs it.

    Args:
        specs: The runs, in order (they are submitted in this order).
        store: Where the records go.
        address: A Ray cluster to connect to (None: a local Ray).
        on_run_start, on_run_end: Progress callbacks (``on_run_end`` gets None for a skipped run).
        workers: Runs in flight at most (None: as many as the cluster has room for).
        threads: torch CPU threads, and Ray CPUs, per run (None: 1 CPU).
        gpus_per_run: GPUs per run for ``device = "cuda"`` specs (None: 1; fractions share a GPU).
        session: The Ray to use (None: one for this call, from ``address``, ``workers`` and ``threads``).
        target: What runs a spec in the worker (tests substitute one).

    Raises:
        ConfigError: Ray is not installed; a bad setting (before any run starts).
        NewerSchemaError: a record of these specs was written by a newer benchsuite.
    """
    gpus_per_run = check_gpus_per_run(gpus_per_run)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"Invalid workers: {workers!r} (need a positive integer)")
    devices = sorted({spec.device for spec in specs})
    if len(devices) > 1:
        raise ConfigError(f"The ray executor runs one device per call, got {devices}: run each device separately")
    device = devices[0] if devices else "cpu"
    own = session is None
    if session is None:
        session = RaySession(address, num_cpus=workers * (threads or 1) if workers else None)

    def backend() -> RayBackend:  # opened once a run needs it: nothing to run starts no Ray
        ray = session.get()
        ray_plan = plan(device, gpus_per_run=gpus_per_run, threads=threads, workers=workers,
                        resources=ray.cluster_resources())
        log.info("ray executor: %s", ray_plan)
        return RayBackend(ray_plan, threads=threads, target=target)

    try:
        return run_specs(specs, store, backend, on_run_start=on_run_start, on_run_end=on_run_end)
    finally:
        if own:
            session.close()
