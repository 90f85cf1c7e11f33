"""No silent NaN: KFGN and DiagGN raise FloatingPointError naming what went non-finite."""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.diag_gn import DiagGN, DiagGNConfig
from benchsuite.optimizers.kfgn import KFGN, KFGNConfig
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import StepClosure
from benchsuite.contracts.task import mlp

BUILDERS = {
    "kfgn": lambda m, l: KFGN(m, l, KFGNConfig()),
    "diag_gn": lambda m, l: DiagGN(m, l, DiagGNConfig()),
}


def problem(act: str = "prelu"):
    torch.manual_seed(0)
    model = mlp([4, 6, 3], ACTIVATIONS.get(act))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    return model, nn.CrossEntropyLoss(), x, y


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_non_finite_parameter_raises_with_the_reason(name):
    model, loss_fn, x, y = problem()
    opt = BUILDERS[name](model, loss_fn)
    opt.step(StepClosure(model, loss_fn, x, y))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        opt.step(StepClosure(model, loss_fn, x, y))
    for p, b in zip(model.parameters(), before):  # nothing was written
        torch.testing.assert_close(p.detach(), b, equal_nan=True)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_overflowing_curvature_raises_instead_of_writing_inf(name):
    model, loss_fn, x, y = problem("relu")
    opt = BUILDERS[name](model, loss_fn)
    x = x * 1e30  # finite loss (~1e29), overflowing curvature in float32
    with pytest.raises(FloatingPointError, match="non-finite (Kronecker factor|GN diagonal)"):
        opt.step(StepClosure(model, loss_fn, x, y))
