"""Helpers shared by the asv and pytest-benchmark benchmarks: one optimizer step, set up once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.optimizer import OPTIMIZERS, StepClosure
from benchsuite.contracts.task import TASKS
from benchsuite.run.runner import run
from benchsuite.run.seeding import seed_everything
from benchsuite.run.timing import synchronize


@dataclass
class StepBench:
    """A model, its optimizer and a fixed batch, ready for timing ``step()``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    closure: StepClosure
    device: torch.device

    def step(self) -> None:
        self.optimizer.step(self.closure)
        synchronize(self.device)

    def gradient(self) -> None:
        """One forward/backward pass on the same batch: the unit of cost."""
        self.closure()
        synchronize(self.device)


def step_bench(task: str, optimizer: str, *, activation: str = "relu", size: str = "default",
               batch_size: int | None = None, hparams: Mapping[str, Any] | None = None,
               device: str = "cpu", seed: int = 0) -> StepBench:
    seed_everything(seed)
    t = TASKS.get(task)(size)
    data = t.make_data(0).to(device)
    model = t.build_model(activation).to(device)
    loss_fn = t.loss_fn()
    n = batch_size or t.batch_size
    closure = StepClosure(model, loss_fn, data.train.inputs[:n], data.train.targets[:n])
    opt = OPTIMIZERS.get(optimizer).build(model, loss_fn, hparams)
    return StepBench(model, opt, closure, torch.device(device))


def loss_after(task: str, optimizer: str, steps: int, *, activation: str = "relu", size: str = "tiny",
               hparams: Mapping[str, Any] | None = None, seed: int = 0) -> float:
    """Final training loss of a short deterministic run (tracks behavioural regressions)."""
    rec = run(RunSpec(task=task, activation=activation, optimizer=optimizer, size=size, seed=seed,
                      hparams=dict(hparams or {}), budget=Budget(steps=steps), eval_every=steps))
    return rec.evals[-1]["train_loss"] if rec.evals else float("nan")


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in tensors of the optimizer's state (factors, inverses, moments, ...)."""
    total = 0

    def visit(obj: Any) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)

    visit(optimizer.state)
    return total
