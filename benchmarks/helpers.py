"""Helpers shared by the asv and pytest-benchmark benchmarks: pinned threads, the optimizer
columns, one optimizer step set up once, optimizer-state bytes and short deterministic runs.

Importing this module pins the CPU threads of the process to one (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` unless already set, before torch is imported here, and
:func:`pin_threads`): on a shared machine an unpinned torch oversubscribes the cores
and a step's time then measures the other processes (two asv runs of one commit once
differed by 124x, and an SGD step "cost" 61 gradients).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.optimizer import OPTIMIZERS, StepClosure
from benchsuite.contracts.task import TASKS, TaskData
from benchsuite.run.runner import run
from benchsuite.run.seeding import seed_everything
from benchsuite.run.timing import synchronize

__all__ = ["COLUMNS", "TASKS_TINY", "StepBench", "loss_after", "make_data", "pin_threads", "state_bytes",
           "step_bench"]

#: The tasks of the CPU benchmarks (at ``size="tiny"``).
TASKS_TINY = ["digits_mlp", "curves_autoencoder"]

#: Every optimizer column of the smoke suite, label -> (registry name, hyperparameters), with
#: the smoke suite's CPU-sized hyperparameters. ``diag_gn`` is the registry default, whose
#: estimator is Monte-Carlo (one sampled column per example); ``diag_gn-exact`` is the
#: exact GN diagonal (``estimator = "exact"``): a ``diag_gn-mc`` column would repeat ``diag_gn``.
COLUMNS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("sgd", {"lr": 0.05, "momentum": 0.9}),
    "adam": ("adam", {"lr": 0.003}),
    "rmsprop": ("rmsprop", {"lr": 0.001}),
    "kfgn-kfra": ("kfgn", {"variant": "kfra"}),
    "kfgn-kflr": ("kfgn", {"variant": "kflr"}),
    "kfgn-kfac": ("kfgn", {"variant": "kfac"}),
    "hf": ("hf", {"max_cg_iters": 30, "curvature_batch_size": 64}),
    "diag_gn": ("diag_gn", {}),
    "diag_gn-exact": ("diag_gn", {"estimator": "exact"}),
}


def pin_threads(threads: int = 1) -> None:
    """Give torch ``threads`` intra-op CPU threads (and the OpenMP/MKL variables of children)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)


pin_threads(int(os.environ["OMP_NUM_THREADS"]))


@dataclass
class StepBench:
    """A model, its optimizer and a fixed batch, ready for timing ``step()``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    closure: StepClosure
    device: torch.device

    def step(self) -> None:
        """One optimizer step on the fixed batch (synchronised on CUDA)."""
        self.optimizer.step(self.closure)
        synchronize(self.device)

    def gradient(self) -> None:
        """One forward/backward pass on the same batch: the unit of cost."""
        self.closure()
        synchronize(self.device)


def make_data(task: str, size: str = "tiny", data_seed: int = 0) -> TaskData:
    """The task's data set (what asv's ``setup_cache`` computes once and pickles)."""
    return TASKS.get(task)(size).make_data(data_seed)


def step_bench(task: str, optimizer: str, *, activation: str = "relu", size: str = "default",
               batch_size: int | None = None, hparams: Mapping[str, Any] | None = None,
               device: str = "cpu", seed: int = 0, data: TaskData | None = None) -> StepBench:
    """Set up one optimizer on one task's model and a fixed mini-batch.

    Args:
        task: Task registry name.
        optimizer: Optimizer registry name.
        activation: Activation registry name.
        size: The task's size preset.
        batch_size: Examples in the fixed batch (None: the task's default).
        hparams: Optimizer hyperparameters.
        device: Where to run.
        seed: Seeds the model's initialisation.
        data: The task's data (None: made here with data seed 0).

    Returns:
        The :class:`StepBench`.
    """
    seed_everything(seed)
    t = TASKS.get(task)(size)
    data = (data if data is not None else t.make_data(0)).to(device)
    model = t.build_model(activation).to(device)
    loss_fn = t.loss_fn()
    n = batch_size or t.batch_size
    closure = StepClosure(model, loss_fn, data.train.inputs[:n], data.train.targets[:n])
    opt = OPTIMIZERS.get(optimizer).build(model, loss_fn, hparams)
    return StepBench(model, opt, closure, torch.device(device))


def loss_after(task: str, optimizer: str, steps: int, *, activation: str = "relu", size: str = "tiny",
               hparams: Mapping[str, Any] | None = None, seed: int = 0) -> float:
    """Full training loss after ``steps`` steps of a deterministic run (tracks behavioural regressions).

    The run is the runner's (seeded model, batches and RNGs), so the value is a property of
    the code under test, not of the machine's load; NaN if the run did not evaluate.
    """
    rec = run(RunSpec(task=task, activation=activation, optimizer=optimizer, size=size, seed=seed,
                      hparams=dict(hparams or {}), budget=Budget(steps=steps), eval_every=steps))
    return rec.evals[-1]["train_loss"] if rec.evals else float("nan")


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in tensors of the optimizer's state (factors, inverses, moments, ...)."""
    total = 0
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += obj.numel() * obj.element_size()
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)

    visit(optimizer.state)
    return total
