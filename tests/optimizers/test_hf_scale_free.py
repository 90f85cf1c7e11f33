"""HF's damping is in the papers' units: mean and sum reductions take the same steps."""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.hf import HessianFree, HFConfig
from optim_oracles import flat_params
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import StepClosure
from benchsuite.contracts.task import mlp

LOSSES = {
    "mse": (nn.MSELoss, lambda n, d, g: torch.randn(n, d, generator=g, dtype=torch.float64)),
    "bce": (nn.BCEWithLogitsLoss, lambda n, d, g: torch.rand(n, d, generator=g, dtype=torch.float64)),
    "ce": (nn.CrossEntropyLoss, lambda n, d, g: torch.randint(0, d, (n,), generator=g)),
}


def run_hf(loss: str, reduction: str, config: HFConfig, steps: int = 3, n: int = 12) -> torch.Tensor:
    """Parameters after ``steps`` HF steps on a fixed float64 problem (4 outputs)."""
    torch.manual_seed(0)
    model = mlp([3, 6, 5, 4], ACTIVATIONS.get("relu")).double()
    g = torch.Generator().manual_seed(1)
    make_loss, make_y = LOSSES[loss]
    loss_fn = make_loss(reduction=reduction)
    opt = HessianFree(model, loss_fn, config)
    for _ in range(steps):
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        y = make_y(n, 4, g)
        opt.step(StepClosure(model, loss_fn, x, y))
    return flat_params(model)


@pytest.mark.parametrize("loss", ["mse", "bce", "ce"])
@pytest.mark.parametrize("config", [
    pytest.param(HFConfig(), id="defaults"),  # held-out ρ and guard, preconditioner, LM
    pytest.param(HFConfig(damping=45.0, curvature_fraction=1.0, max_cg_iters=50), id="martens-lambda-whole-batch"),
    pytest.param(HFConfig(curvature_batch_size=5, precondition=False), id="curvature-5-of-12"),
])
def test_mean_and_sum_reductions_take_the_same_steps(loss, config):
    mean = run_hf(loss, "mean", config)
    total = run_hf(loss, "sum", config)
    torch.testing.assert_close(total, mean, rtol=1e-9, atol=1e-11)


def test_the_runs_move():  # the equality above is not the trivial one of two runs that never step
    torch.manual_seed(0)
    start = flat_params(mlp([3, 6, 5, 4], ACTIVATIONS.get("relu")).double())
    assert float((run_hf("mse", "mean", HFConfig()) - start).norm()) > 1e-2

