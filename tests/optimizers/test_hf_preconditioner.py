"""HF's preconditioner statistic against a dense per-case computation on the summed loss."""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.hf import per_case_sq_grads
from torch import nn
from torch.func import functional_call, grad, vmap

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.task import mlp
from benchsuite.curvature.model import SequentialModel

LOSSES = {
    "mse": (nn.MSELoss, lambda n, d, g: torch.randn(n, d, generator=g, dtype=torch.float64)),
    "bce": (nn.BCEWithLogitsLoss, lambda n, d, g: torch.rand(n, d, generator=g, dtype=torch.float64)),
    "ce": (nn.CrossEntropyLoss, lambda n, d, g: torch.randint(0, d, (n,), generator=g)),
}


def dense_mean_sq_per_case_grads(model: nn.Module, loss: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_n ∇L_n ⊙ ∇L_n`` (P,) with ``L_n`` example n's loss summed over its outputs
    (torch.func per-case gradients; the reduction of the optimizer's module plays no part)."""
    per_case = LOSSES[loss][0](reduction="sum")
    params = {k: v.detach() for k, v in model.named_parameters()}

    def case_loss(p, xn, yn):  # L_n: one example, summed over outputs
        return per_case(functional_call(model, p, (xn[None],)), yn[None])

    grads = vmap(grad(case_loss), in_dims=(None, 0, 0))(params, x, y)  # {name: (N, *shape)}
    flat = torch.cat([grads[k].reshape(x.shape[0], -1) for k, _ in model.named_parameters()], dim=1)  # (N, P)
    return (flat**2).mean(0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", ["mse", "bce", "ce"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_per_case_sq_grads_match_the_summed_loss(loss, reduction, act):
    torch.manual_seed(0)
    model = mlp([3, 5, 4], ACTIVATIONS.get(act)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = LOSSES[loss][1](7, 4, g)
    got = per_case_sq_grads(SequentialModel(model), LOSSES[loss][0](reduction=reduction), x, y)
    torch.testing.assert_close(got, dense_mean_sq_per_case_grads(model, loss, x, y), rtol=1e-10, atol=1e-12)
