"""KFGN's default Levenberg-Marquardt damping with rejection of steps that raise the batch objective.

By default (``adapt_damping``, ``lm_period = 1``) every step's reduction ratio
``ρ = (f(θ − lr·s) − f(θ)) / (−lr·gᵀs + ½ lr² sᵀGs)`` updates γ (Martens & Grosse
2015, §6.5) and a step that raised the batch objective is undone (Moré 1978). The
expectations are computed from a dense float64 GN (torch.func), not from the engine.
"""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers.kfgn import KFGN, KFGNConfig
from optim_oracles import dense_ggn_oracle, flat_grad, flat_params
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import StepClosure
from benchsuite.contracts.task import mlp


def problem(act: str = "abs", seed: int = 0, n: int = 16):
    """A float64 (4, 6, 5, 3) MLP with an MSE loss on a fixed batch."""
    torch.manual_seed(seed)
    model = mlp([4, 6, 5, 3], ACTIVATIONS.get(act)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)  # (N, 4)
    y = torch.randn(n, 3, generator=g, dtype=torch.float64)  # (N, 3)
    return model, nn.MSELoss(), x, y


def test_defaults_adapt_the_damping_every_step():
    config = KFGNConfig()
    assert config.adapt_damping and config.lm_period == 1 and config.momentum == 0


@pytest.mark.parametrize("variant", ["kfra", "kflr", "kfac"])
def test_a_step_that_raises_the_batch_loss_is_undone_and_the_damping_grows(variant):
    model, loss_fn, x, y = problem()
    before = flat_params(model)
    opt = KFGN(model, loss_fn, KFGNConfig(variant=variant, damping=1e-2), lr=100.0)  # overshoots
    loss = opt.step(StepClosure(model, loss_fn, x, y))
    st = opt.group_state()
    assert st["rho"] < 0 and st["rejected"] == 1
    torch.testing.assert_close(flat_params(model), before, rtol=0, atol=0)
    assert float(loss_fn(model(x), y)) == pytest.approx(float(loss), rel=1e-12)
    assert opt.damping == pytest.approx(1.5e-2)


def test_without_an_lm_evaluation_the_step_is_kept():
    # lm_period = 2: the first step is not evaluated, so the same overshooting step stays.
    model, loss_fn, x, y = problem()
    before = flat_params(model)
    opt = KFGN(model, loss_fn, KFGNConfig(damping=1e-2, lm_period=2), lr=100.0)
    loss = opt.step(StepClosure(model, loss_fn, x, y))
    assert not torch.equal(flat_params(model), before)
    assert float(loss_fn(model(x), y)) > float(loss)
    assert opt.damping == 1e-2 and "rejected" not in opt.group_state()


@pytest.mark.parametrize("act", ["relu", "abs", "tanh"])
def test_the_reduction_ratio_is_that_of_the_dense_undamped_model(act):
    # ρ = (f(θ⁺) − f(θ)) / (gᵀu + ½ uᵀGu) with u = θ⁺ − θ and the dense float64 GN.
    model, loss_fn, x, y = problem(act, seed=3)
    ggn = dense_ggn_oracle(model, loss_fn, x, y).detach()  # (P, P)
    grad = flat_grad(model, loss_fn, x, y)  # (P,)
    before, f0 = flat_params(model), float(loss_fn(model(x), y))
    opt = KFGN(model, loss_fn, KFGNConfig(variant="kflr", damping=1.0), lr=0.5)
    opt.step(StepClosure(model, loss_fn, x, y))
    st = opt.group_state()
    assert st.get("rejected", 0) == 0  # a small, accepted step
    u = flat_params(model) - before  # (P,)
    predicted = float(grad @ u + 0.5 * u @ ggn @ u)
    actual = float(loss_fn(model(x), y)) - f0
    assert actual < 0 and st["rho"] == pytest.approx(actual / predicted, rel=1e-8)
    assert opt.damping in (pytest.approx(1.0), pytest.approx(1.5), pytest.approx(2 / 3))


def test_repeated_rejections_keep_the_parameters_and_raise_the_damping_geometrically():
    model, loss_fn, x, y = problem()
    before = flat_params(model)
    opt = KFGN(model, loss_fn, KFGNConfig(damping=1e-2), lr=1e3)
    for _ in range(3):
        opt.step(StepClosure(model, loss_fn, x, y))
    assert opt.group_state()["rejected"] == 3
    torch.testing.assert_close(flat_params(model), before, rtol=0, atol=0)
    assert opt.damping == pytest.approx(1e-2 * 1.5**3)


# rescale off and a tiny γ: some |Δ| > 2, so lr·Δ with lr = 1e308 overflows to ±inf.
OVERFLOW = {"damping": 1e-8, "rescale": False, "lr": 1e308}


def test_a_step_to_non_finite_parameters_is_rejected_not_raised():
    model, loss_fn, x, y = problem()
    before = flat_params(model)
    opt = KFGN(model, loss_fn, KFGNConfig(), **OVERFLOW)
    opt.step(StepClosure(model, loss_fn, x, y))
    assert opt.group_state()["rejected"] == 1 and opt.damping == pytest.approx(1.5e-8)
    torch.testing.assert_close(flat_params(model), before, rtol=0, atol=0)


def test_without_lm_a_non_finite_step_still_raises():
    model, loss_fn, x, y = problem()
    opt = KFGN(model, loss_fn, KFGNConfig(adapt_damping=False), **OVERFLOW)
    with pytest.raises(FloatingPointError, match="parameters after the KFGN step"):
        opt.step(StepClosure(model, loss_fn, x, y))
