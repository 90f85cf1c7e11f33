"""Damping in the papers' units: the same run with ``reduction="mean"`` and ``"sum"`` takes the same steps.

KFGN's γ and DiagGN's λ are given per example, summed over outputs (Botev et al. 2017;
Martens & Grosse 2015) and applied to the loss module's curvature as ``s·γ``
(:func:`benchsuite.curvature.per_example_scale`). The module's gradient and curvature
carry the same ``s``, so the step must not depend on the reduction nor on the number
of outputs (MSE and BCE with D = 3 outputs, mean ``s = 1/3``, sum ``s = N``).
"""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.diag_gn import DiagGN, DiagGNConfig
from benchsuite.optimizers.kfgn import KFGN, KFGNConfig
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import StepClosure
from benchsuite.contracts.task import mlp

LOSSES = {
    "mse": (nn.MSELoss, lambda n, g: torch.randn(n, 3, generator=g, dtype=torch.float64)),
    "bce": (nn.BCEWithLogitsLoss, lambda n, g: torch.rand(n, 3, generator=g, dtype=torch.float64)),
    "ce": (nn.CrossEntropyLoss, lambda n, g: torch.randint(0, 3, (n,), generator=g)),
}
OPTIMIZERS = {
    **{f"kfgn-{v}": (KFGN, KFGNConfig(variant=v, damping=1e-2)) for v in ("kfra", "kflr", "kfac")},
    **{f"diag_gn-{e}": (DiagGN, DiagGNConfig(estimator=e, damping=0.1, lr=0.5)) for e in ("exact", "mc")},
}


def trajectory(name: str, loss: str, reduction: str, act: str, steps: int = 3) -> list[torch.Tensor]:
    """Parameters before and after each of ``steps`` steps (float64, fixed data, fixed seeds)."""
    cls, config = OPTIMIZERS[name]
    make_loss, make_y = LOSSES[loss]
    torch.manual_seed(0)
    model = mlp([4, 6, 5, 3], ACTIVATIONS.get(act)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)  # (N, D_in)
    y = make_y(8, g)
    loss_fn = make_loss(reduction=reduction)
    torch.manual_seed(2)  # the optimizer's Monte-Carlo generator is seeded from the global RNG
    opt = cls(model, loss_fn, config)
    out = [torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()]
    for _ in range(steps):
        opt.step(StepClosure(model, loss_fn, x, y))
        out.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone())
    return out


@pytest.mark.parametrize("act", ["relu", "prelu"])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_mean_and_sum_reductions_take_the_same_steps(name, loss, act):
    mean, total = trajectory(name, loss, "mean", act), trajectory(name, loss, "sum", act)
    assert len(mean) == 4 and (mean[-1] - mean[0]).abs().max() > 1e-3  # the run moved
    for a, b in zip(mean[1:], total[1:]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
