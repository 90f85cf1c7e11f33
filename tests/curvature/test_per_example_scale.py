"""The factor between a loss module's value and the papers' per-example, output-summed loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.curvature import dense_ggn
from benchsuite.curvature.losses import per_example_scale

CASES = [(cls, red) for cls in (nn.MSELoss, nn.CrossEntropyLoss, nn.BCEWithLogitsLoss) for red in ("mean", "sum")]


def _targets(cls: type[nn.Module], n: int, d: int, g: torch.Generator) -> torch.Tensor:
    if cls is nn.CrossEntropyLoss:
        return torch.randint(0, d, (n,), generator=g)  # (N,)
    if cls is nn.BCEWithLogitsLoss:
        return torch.rand(n, d, generator=g, dtype=torch.float64)  # (N, D)
    return torch.randn(n, d, generator=g, dtype=torch.float64)  # (N, D)


@pytest.mark.parametrize("cls,reduction", CASES, ids=[f"{c.__name__}-{r}" for c, r in CASES])
@pytest.mark.parametrize("n,d", [(1, 1), (3, 7), (8, 2)], ids=["n1-d1", "n3-d7", "n8-d2"])
def test_scale_relates_the_module_to_the_summed_per_example_loss(cls, reduction, n, d):
    g = torch.Generator().manual_seed(n * 10 + d)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)  # (N, D)
    y = _targets(cls, n, d, g)
    paper = cls(reduction="sum")(h, y) / n  # (1/N) Σ_n Σ_d ℓ
    s = per_example_scale(cls(reduction=reduction), n, d)
    assert float(cls(reduction=reduction)(h, y)) == pytest.approx(s * float(paper), rel=1e-12)


@pytest.mark.parametrize("cls", [nn.MSELoss, nn.BCEWithLogitsLoss, nn.CrossEntropyLoss], ids=lambda c: c.__name__)
def test_damping_in_paper_units_gives_the_same_damped_system_for_mean_and_sum(cls):
    """``(G_mod + s·γ I)⁻¹ g_mod`` does not depend on the reduction (dense float64 check)."""
    torch.manual_seed(0)
    n, d = 6, 4
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, d)).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    y = _targets(cls, n, d, torch.Generator().manual_seed(1))
    gamma, steps = 1e-2, []
    for red in ("mean", "sum"):
        loss_fn = cls(reduction=red)
        G = dense_ggn(model, loss_fn, x, y)  # (P, P)
        grad = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
        g_flat = torch.cat([t.reshape(-1) for t in grad])  # (P,)
        s = per_example_scale(loss_fn, n, d)
        steps.append(torch.linalg.solve(G + s * gamma * torch.eye(G.shape[0], dtype=G.dtype), g_flat))
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-9, atol=1e-12)


def test_unsupported_loss_is_refused():
    from benchsuite.curvature.errors import UnsupportedLossError

    with pytest.raises(UnsupportedLossError, match="L1Loss"):
        per_example_scale(nn.L1Loss(), 2, 2)
