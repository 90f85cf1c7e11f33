"""asv benchmarks: optimizer step time, optimizer-state bytes and the training loss after k steps.

Every optimizer column of the smoke suite (:data:`benchmarks.helpers.COLUMNS`: sgd, adam,
rmsprop, kfgn-kfra, kfgn-kflr, kfgn-kfac, hf, diag_gn, diag_gn-exact) on the digits MLP and
the CURVES autoencoder at ``size="tiny"`` on the CPU, one thread (``setup`` pins it; the
``env_nobuild`` matrix of ``asv.conf.json`` sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
for the benchmark processes). In the style of pandas' and scipy's asv suites:

* ``params`` cover only what a benchmark depends on (the gradient depends on the task
  alone, so :class:`Gradient` is not repeated per optimizer);
* ``setup_cache`` makes each task's data set once per environment (asv pickles it);
* ``track_state_bytes`` counts the bytes of the optimizer's state tensors (moments,
  Kronecker factors, GN diagonals): a property of the code, unlike a whole-process
  ``peakmem_`` that measures the interpreter, torch and the data;
* ``track_train_loss`` is the full training loss after :data:`CONVERGENCE_STEPS`
  steps of a seeded run (``unit = "loss"``): a behavioural regression shows as a
  changed number, identical run to run on one machine.

Run ``asv run``, ``asv continuous HEAD~1 HEAD`` and ``asv compare`` as the README says;
asv builds and installs each commit into its own virtualenv (``asv.conf.json``) and finds
these classes through ``benchmarks/asv_suite`` (names ``optimizers.OptimizerStep.time_step``
and so on), the only folder it imports, so the pytest-benchmark files of ``benchmarks/``
never break an asv run of an older commit.
"""

from __future__ import annotations

from typing import Any

from benchmarks.helpers import (
    COLUMNS,
    TASKS_TINY,
    loss_after,
    make_data,
    pin_threads,
    state_bytes,
    step_bench,
)

#: Steps of the seeded runs behind ``track_train_loss``.
CONVERGENCE_STEPS = 30

_LABELS = list(COLUMNS)


def _task_data() -> dict[str, Any]:
    return {task: make_data(task, "tiny") for task in TASKS_TINY}


class OptimizerStep:
    """Seconds per optimizer step, and the bytes of the optimizer's state, per task x column."""

    params = (TASKS_TINY, _LABELS)
    param_names = ["task", "optimizer"]  # noqa: RUF012 - asv reads these class attributes
    timeout = 180
    # asv re-runs ``setup`` between samples (``number`` resolves to 1 with a setup), so a
    # sample is one step from the same seeded state, after one warm-up step. A step
    # takes 0.5-100 ms on one thread: 4-10 samples, stopping after 1.5 s, in one process
    # (``asv run -a processes=2`` adds the between-process spread).
    repeat = (4, 10, 1.5)
    sample_time = 0.02
    warmup_time = 0.05
    processes = 1

    def setup_cache(self) -> dict[str, Any]:
        return _task_data()

    def setup(self, data: dict[str, Any], task: str, optimizer: str) -> None:
        pin_threads(1)
        name, hparams = COLUMNS[optimizer]
        self.bench = step_bench(task, name, size="tiny", hparams=hparams, data=data[task])
        self.bench.step()  # warm-up: allocations, first factors

    def time_step(self, data: dict[str, Any], task: str, optimizer: str) -> None:
        self.bench.step()

    def track_state_bytes(self, data: dict[str, Any], task: str, optimizer: str) -> int:
        return state_bytes(self.bench.optimizer)

    track_state_bytes.unit = "bytes"  # type: ignore[attr-defined]


class Gradient:
    """Seconds per forward/backward pass on the same batch: the unit of an optimizer step's cost."""

    params = TASKS_TINY
    param_names = ["task"]  # noqa: RUF012 - asv reads these class attributes
    timeout = 60
    repeat = (4, 10, 1.5)
    sample_time = 0.02
    warmup_time = 0.05
    processes = 1

    def setup_cache(self) -> dict[str, Any]:
        return _task_data()

    def setup(self, data: dict[str, Any], task: str) -> None:
        pin_threads(1)
        self.bench = step_bench(task, "sgd", size="tiny", data=data[task])
        self.bench.gradient()

    def time_gradient(self, data: dict[str, Any], task: str) -> None:
        self.bench.gradient()


class Convergence:
    """Full training loss after :data:`CONVERGENCE_STEPS` steps of a seeded run, per task x column."""

    params = (TASKS_TINY, _LABELS)
    param_names = ["task", "optimizer"]  # noqa: RUF012 - asv reads these class attributes
    timeout = 180
    unit = "loss"

    def setup(self, task: str, optimizer: str) -> None:
        pin_threads(1)

    def track_train_loss(self, task: str, optimizer: str) -> float:
        name, hparams = COLUMNS[optimizer]
        return loss_after(task, name, CONVERGENCE_STEPS, size="tiny", hparams=hparams, seed=0)
