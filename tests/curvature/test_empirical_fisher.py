"""diag_empirical_fisher against per-example gradients from torch.func (vmap of grad), float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.task import mlp
from benchsuite.curvature import diag_empirical_fisher

LOSSES = {
    "mse": (nn.MSELoss, lambda n, c, g: torch.randn(n, c, generator=g, dtype=torch.float64)),
    "ce": (nn.CrossEntropyLoss, lambda n, c, g: torch.randint(0, c, (n,), generator=g)),
    "bce": (nn.BCEWithLogitsLoss, lambda n, c, g: torch.rand(n, c, generator=g, dtype=torch.float64)),
}
CASES = [pytest.param(a, lo, r, id=f"act={a}-loss={lo}-reduction={r}")
         for a in ("relu", "prelu", "maxout", "tanh") for lo in LOSSES for r in ("mean", "sum")]


def per_example_oracle(model, loss_fn, x, y):
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(ps, xi, yi):
        return loss_fn(torch.func.functional_call(model, ps, (xi[None],)), yi[None])

    grads = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    sq = [(grads[n] ** 2).sum(0) for n in params]
    return [s / x.shape[0] if loss_fn.reduction == "mean" else s for s in sq]


@pytest.mark.parametrize(("act", "loss", "reduction"), CASES)
def test_matches_per_example_gradients(act, loss, reduction):
    torch.manual_seed(0)
    model = mlp([3, 5, 4, 3], ACTIVATIONS.get(act)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    cls, make_y = LOSSES[loss]
    loss_fn = cls(reduction=reduction)
    y = make_y(6, 3, g)
    got = diag_empirical_fisher(model, loss_fn, x, y)
    for a, b in zip(got, per_example_oracle(model, loss_fn, x, y)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
