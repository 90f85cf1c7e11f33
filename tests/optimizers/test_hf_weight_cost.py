"""HF with the closure's ℓ2 weight cost (Martens' ``weightcost·maskp``)."""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers import hf as hf_module
from benchsuite.optimizers.hf import HessianFree, per_case_sq_grads
from test_hf_chunks import dense_gn
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import StepClosure
from benchsuite.contracts.task import mlp
from benchsuite.curvature.losses import per_example_scale

C_PAPER = 0.3  # the ℓ2 coefficient in the papers' units


def problem(reduction: str, n: int = 10):
    torch.manual_seed(0)
    model = mlp([3, 5, 4, 2], ACTIVATIONS.get("tanh")).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    loss_fn = nn.MSELoss(reduction=reduction)
    weights = tuple(m.weight for m in model if isinstance(m, nn.Linear))
    closure = StepClosure(model, loss_fn, x, y, weight_cost=per_example_scale(loss_fn, n, 2) * C_PAPER,
                          l2_params=weights)
    return model, loss_fn, x, y, closure


def weight_mask(model: nn.Module) -> torch.Tensor:
    """(P,): 1 on Linear weights, 0 on biases."""
    return torch.cat([torch.full((p.numel(),), float(name.endswith("weight")), dtype=torch.float64)
                      for name, p in model.named_parameters()])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_cg_matrix_and_preconditioner_include_the_weight_cost(reduction, fraction):
    model, loss_fn, x, y, closure = problem(reduction)
    opt = HessianFree(model, loss_fn, curvature_fraction=fraction, damping=0.7, max_cg_iters=5)
    n_s = round(fraction * x.shape[0])
    s_s = per_example_scale(loss_fn, n_s, 2)
    mask = weight_mask(model)
    # Dense float64 references at θ before the step: (G_S,mod + s_S·(λ + c·mask)) v and Martens' M.
    a_dense = dense_gn(model, loss_fn, x[:n_s], y[:n_s]) + s_s * torch.diag(0.7 + C_PAPER * mask)
    precond = (per_case_sq_grads(opt.net, loss_fn, x, y) + 0.7 + C_PAPER * mask) ** 0.75
    seen = {}
    real = hf_module.martens_cg

    def spy(matvec, b, x0, **kwargs):
        v = torch.randn(b.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        seen["v"], seen["av"], seen["ref"] = v, matvec(v), a_dense @ v
        seen["precond"] = kwargs["precond"]
        return real(matvec, b, x0, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_module, "martens_cg", spy)
        opt.step(closure)
    torch.testing.assert_close(seen["av"], seen["ref"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(seen["precond"], precond, rtol=1e-10, atol=1e-12)
    # The cost is not a no-op here: the product without it is far from the one CG used.
    plain = (dense_gn(model, loss_fn, x[:n_s], y[:n_s]) + s_s * 0.7 * torch.eye(mask.numel())) @ seen["v"]
    assert float((seen["av"] - plain).norm()) > 0.1 * float(plain.norm())


def test_weight_cost_shrinks_the_weights():
    steps = {}
    for cost in (0.0, 5.0):
        model, loss_fn, x, y, _ = problem("mean")
        weights = tuple(m.weight for m in model if isinstance(m, nn.Linear))
        opt = HessianFree(model, loss_fn, curvature_fraction=1.0)
        for _ in range(3):
            opt.step(StepClosure(model, loss_fn, x, y, weight_cost=cost, l2_params=weights))
        steps[cost] = sum(float(w.detach().square().sum()) for w in weights)
    assert steps[5.0] < 0.5 * steps[0.0]
