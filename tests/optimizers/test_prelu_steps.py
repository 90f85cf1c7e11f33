"""KFGN on PReLU networks: the exact box-constrained step-size model and the slopes-only GN diagonal."""

from __future__ import annotations

import itertools

import pytest
import torch
from benchsuite.optimizers.kfgn import box_minimiser, rescale_step_sizes
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.task import mlp
from benchsuite.curvature import diag_ggn_exact, parsed


def grid_minimum(a: torch.Tensor, b: torch.Tensor, n: int = 401) -> float:
    """``min q`` over an (n × n) grid of [0, 1]² (a brute-force reference)."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)  # (n², 2)
    q = 0.5 * ((pts @ a) * pts).sum(1) - pts @ b
    return float(q.min())


@pytest.mark.parametrize("seed", range(20))
def test_box_minimiser_is_the_exact_minimiser_over_the_unit_square(seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(2, 2, generator=g, dtype=torch.float64)
    a = r @ r.T + 0.05 * torch.eye(2, dtype=torch.float64)  # (2, 2) PD
    b = 2 * torch.randn(2, generator=g, dtype=torch.float64)  # (2,)
    alpha = box_minimiser(a, b)
    assert bool(((alpha >= 0) & (alpha <= 1)).all())
    q = float(0.5 * alpha @ a @ alpha - b @ alpha)
    assert q <= grid_minimum(a, b) + 1e-12  # no grid point does better
    assert q >= grid_minimum(a, b) - 1e-3  # and the grid gets close


def test_box_model_does_not_keep_a_slope_step_sized_for_an_infeasible_linear_step():
    # The unconstrained solution has α_Linear < 0; clipping each coordinate would give
    # (0, α_slope*) with α_slope* solved *given* α_Linear < 0. The exact box minimiser
    # re-solves the slope coordinate on the edge α_Linear = 0.
    a = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    b = torch.tensor([-0.2, 0.5], dtype=torch.float64)
    unconstrained = torch.linalg.solve(a, b)
    assert float(unconstrained[0]) < 0 < float(unconstrained[1])
    alpha = box_minimiser(a, b)
    torch.testing.assert_close(alpha, torch.tensor([0.0, 0.5], dtype=torch.float64))  # b₂/a₂₂ on the edge
    clipped = unconstrained.clamp(0, 1)  # the old rule: (0, 1), twice the slope step of the model's minimiser
    def q(v: torch.Tensor) -> float:
        return float(0.5 * v @ a @ v - b @ v)

    assert clipped.tolist() == [0.0, 1.0] and q(alpha) < q(clipped)


def test_rescale_step_sizes_uses_the_box_minimiser_for_two_blocks():
    directions = torch.eye(2, dtype=torch.float64)
    gn = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    grad = torch.tensor([-0.2, 0.5], dtype=torch.float64)
    alpha, g_s, s_g_s = rescale_step_sizes(grad, directions, gn, 0.0)
    assert alpha == [0.0, pytest.approx(0.5)]
    assert g_s == pytest.approx(0.25) and s_g_s == pytest.approx(0.25)
    with pytest.raises(FloatingPointError, match="non-finite step-size model"):
        rescale_step_sizes(grad * float("nan"), directions, gn, 0.0)


LOSSES = {
    "ce": (nn.CrossEntropyLoss, lambda n, g: torch.randint(0, 3, (n,), generator=g)),
    "mse": (nn.MSELoss, lambda n, g: torch.randn(n, 3, generator=g, dtype=torch.float64)),
    "bce": (nn.BCEWithLogitsLoss, lambda n, g: torch.rand(n, 3, generator=g, dtype=torch.float64)),
}


@pytest.mark.parametrize(("loss", "reduction"), list(itertools.product(LOSSES, ("mean", "sum"))))
def test_slopes_only_diagonal_equals_the_slope_entries_of_the_full_diagonal(loss, reduction):
    torch.manual_seed(0)
    model = mlp([4, 7, 6, 3], ACTIVATIONS.get("prelu")).double()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.1, 0.6)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    make_loss, make_y = LOSSES[loss]
    loss_fn, y = make_loss(reduction=reduction), make_y(9, g)
    net = parsed(model)
    slopes = [j for i in net.module_params for j in net.module_params[i] if isinstance(net.modules[i], nn.PReLU)]
    assert slopes
    full = diag_ggn_exact(model, loss_fn, x, y)
    only = diag_ggn_exact(model, loss_fn, x, y, params=slopes)
    for j, (f, o) in enumerate(zip(full, only)):
        if j in slopes:
            assert bool((f > 0).any())
            torch.testing.assert_close(o, f, rtol=1e-12, atol=0.0)
        else:
            assert not bool(o.any())  # not asked for: zeros
