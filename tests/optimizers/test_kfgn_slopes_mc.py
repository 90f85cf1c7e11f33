"""KFGN's PReLU slopes: an unbiased Monte-Carlo GN diagonal from sampled output columns.

:func:`slope_diagonal_mc` backpropagates ``M`` sampled columns once (not one per
output); its average must equal the dense float64 GN diagonal of the slopes
(torch.func, :mod:`optim_oracles`) in expectation, checked with many samples.
"""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.kfgn import KFGN, KFGNConfig, slope_diagonal_mc
from optim_oracles import dense_ggn_oracle
from torch import nn

from benchsuite.contracts.optimizer import StepClosure
from benchsuite.curvature import parsed
from benchsuite.curvature.kronecker import kfac

LOSSES = {
    "mse": (nn.MSELoss, lambda n, g: torch.randn(n, 3, generator=g, dtype=torch.float64)),
    "bce": (nn.BCEWithLogitsLoss, lambda n, g: torch.rand(n, 3, generator=g, dtype=torch.float64)),
    "ce": (nn.CrossEntropyLoss, lambda n, g: torch.randint(0, 3, (n,), generator=g)),
}


def problem(loss: str, shared: bool, n: int = 6):
    """A float64 4 → 5 → 4 → 3 PReLU MLP (per-channel or one shared slope per layer)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.PReLU(1 if shared else 5), nn.Linear(5, 4),
                          nn.PReLU(1 if shared else 4), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(-0.5, 0.8)  # distinct slopes, some negative
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)  # (N, 4)
    make_loss, make_y = LOSSES[loss]
    return model, make_loss(), x, make_y(n, g)


def slope_indices(model: nn.Module) -> list[int]:
    return [j for j, (name, _) in enumerate(model.named_parameters()) if name.split(".")[0] in
            {str(i) for i, m in enumerate(model) if isinstance(m, nn.PReLU)}]


def dense_slope_diagonal(model, loss_fn, x, y) -> dict[int, torch.Tensor]:
    diag = torch.diagonal(dense_ggn_oracle(model, loss_fn, x, y)).detach()  # (P,)
    params = list(model.parameters())
    offsets = torch.cumsum(torch.tensor([0] + [p.numel() for p in params]), 0)
    return {j: diag[offsets[j]:offsets[j + 1]].reshape(params[j].shape) for j in slope_indices(model)}


@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "shared"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_the_monte_carlo_slope_diagonal_is_unbiased(loss, shared):
    model, loss_fn, x, y = problem(loss, shared)
    exact = dense_slope_diagonal(model, loss_fn, x, y)
    gen = torch.Generator().manual_seed(3)
    # M = 40000 sampled columns, each scaled by 1/√M: the average of 40000 one-sample estimates.
    est = slope_diagonal_mc(parsed(model), loss_fn, x, y, slope_indices(model), mc_samples=40000, generator=gen)
    assert set(est) == set(exact)
    for j, d in exact.items():
        assert float(d.abs().max()) > 0
        torch.testing.assert_close(est[j], d, rtol=0.05, atol=0.02 * float(d.abs().max()))


def test_one_sample_estimates_average_to_the_exact_diagonal():
    # The default M = 1, averaged over independent draws (as the EMA over steps does).
    model, loss_fn, x, y = problem("bce", shared=False)
    exact = dense_slope_diagonal(model, loss_fn, x, y)
    gen, net, idx = torch.Generator().manual_seed(4), parsed(model), slope_indices(model)
    draws = [slope_diagonal_mc(net, loss_fn, x, y, idx, mc_samples=1, generator=gen) for _ in range(4000)]
    single = draws[0][idx[0]]
    assert (single - exact[idx[0]]).abs().max() > 0.05 * exact[idx[0]].abs().max()  # one draw is noisy
    for j in idx:
        mean = torch.stack([d[j] for d in draws]).mean(0)
        torch.testing.assert_close(mean, exact[j], rtol=0.1, atol=0.03 * float(exact[j].abs().max()))


def test_one_backward_pass_of_m_columns_whatever_the_output_count(monkeypatch):
    # 50 outputs: the exact diagonal backpropagates one column per output; the estimate, M.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.PReLU(6), nn.Linear(6, 50)).double()
    x = torch.randn(8, 4, dtype=torch.float64)  # (N, 4)
    y = torch.rand(8, 50, dtype=torch.float64)  # (N, 50)
    net = parsed(model)
    widths = []
    original = type(net).backprop

    def counting(self, cache, columns, visit, **kw):
        widths.append(columns.shape[0])
        return original(self, cache, columns, visit, **kw)

    monkeypatch.setattr(type(net), "backprop", counting)
    slope_diagonal_mc(net, nn.BCEWithLogitsLoss(), x, y, [2], mc_samples=2, generator=torch.Generator())
    assert widths == [2]


@pytest.mark.parametrize("variant", ["kfra", "kflr", "kfac"])
def test_kfgn_keeps_the_slopes_diagonal_as_a_moving_average_of_the_estimate(variant):
    model, loss_fn, x, y = problem("mse", shared=False, n=10)
    torch.manual_seed(5)
    opt = KFGN(model, loss_fn, KFGNConfig(variant=variant, factor_decay=0.0, adapt_damping=False, mc_samples=1))
    gen_state = opt.generator.get_state()
    before = {j: p.detach().clone() for j, p in enumerate(model.parameters())}
    ref_model, _, _, _ = problem("mse", shared=False, n=10)
    ref_model.load_state_dict(model.state_dict())
    opt.step(StepClosure(model, loss_fn, x, y))
    # Replay the generator: KFAC draws its factor columns first, then the slopes' columns.
    gen = torch.Generator().set_state(gen_state)
    if variant == "kfac":
        kfac(parsed(ref_model), loss_fn, x, y, mc_samples=1, generator=gen)
    expected = slope_diagonal_mc(parsed(ref_model), loss_fn, x, y, slope_indices(ref_model), mc_samples=1,
                                 generator=gen)
    for j in slope_indices(model):
        p = list(model.parameters())[j]
        torch.testing.assert_close(opt.state[p]["diag"], expected[j], rtol=1e-12, atol=1e-14)
        assert not torch.equal(p, before[j])
