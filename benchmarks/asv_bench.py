"""asv benchmarks: optimizer step time, peak memory and loss after k steps.

Run with ``asv run --python=same`` (``asv.conf.json`` uses the existing environment)
or ``asv dev``. Parameters cover every registered optimizer on the digits MLP and
the CURVES autoencoder at their default sizes.
"""

from __future__ import annotations

import torch

from benchmarks.helpers import loss_after, step_bench
from benchsuite.contracts.optimizer import OPTIMIZERS

TASKS = ["digits_mlp", "curves_autoencoder"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class OptimizerStep:
    params = (TASKS, OPTIMIZERS.names())
    param_names = ["task", "optimizer"]
    timeout = 300

    def setup(self, task: str, optimizer: str) -> None:
        self.bench = step_bench(task, optimizer, device=DEVICE)
        self.bench.step()  # warm-up: allocations, factor initialisation

    def time_step(self, task: str, optimizer: str) -> None:
        self.bench.step()

    def time_gradient(self, task: str, optimizer: str) -> None:
        self.bench.gradient()

    def peakmem_step(self, task: str, optimizer: str) -> None:
        self.bench.step()


class LossAfterSteps:
    params = (TASKS, OPTIMIZERS.names())
    param_names = ["task", "optimizer"]
    timeout = 300
    unit = "training loss"

    def track_loss_after_100_steps(self, task: str, optimizer: str) -> float:
        return loss_after(task, optimizer, 100)
