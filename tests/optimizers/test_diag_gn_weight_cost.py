"""Diagonal GN with the closure's ℓ2 weight cost: ``c`` on the diagonal of the weights."""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.diag_gn import DiagGN
from test_hf_chunks import dense_gn
from test_hf_weight_cost import C_PAPER, problem, weight_mask
from torch import nn

from benchsuite.curvature.losses import per_example_scale


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_diag_gn_adds_the_weight_cost_to_the_diagonal_of_the_weights(reduction):
    model, loss_fn, x, y, closure = problem(reduction)
    lr, lam = 0.5, 0.2
    opt = DiagGN(model, loss_fn, estimator="exact", rescale=False, adapt_damping=False, lr=lr, damping=lam)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    diag = torch.diagonal(dense_gn(model, loss_fn, x, y))  # (P,) module units
    s = per_example_scale(loss_fn, x.shape[0], 2)
    c = s * C_PAPER  # the closure's cost, module units
    mask = weight_mask(model)
    with torch.enable_grad():
        l2 = sum(m.weight.square().sum() for m in model if isinstance(m, nn.Linear))
        objective = loss_fn(model(x), y) + 0.5 * c * l2
        grad = torch.cat([t.reshape(-1) for t in torch.autograd.grad(objective, list(model.parameters()))])
    expected = theta - lr * grad / (diag + s * lam + c * mask)
    opt.step(closure)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(after, expected, rtol=1e-9, atol=1e-12)
