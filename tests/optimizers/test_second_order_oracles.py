"""Each second-order update against a dense float64 reference on a tiny net."""

from __future__ import annotations

import math

import pytest
import torch
from benchsuite.optimizers.diag_gn import DiagGN, DiagGNConfig
from benchsuite.optimizers.hf import HessianFree, HFConfig
from benchsuite.optimizers.kfgn import KFGN, KFGNConfig
from optim_oracles import dense_ggn_oracle, flat_grad, flat_params
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import StepClosure
from benchsuite.contracts.task import mlp
from benchsuite.curvature import per_example_scale

LOSSES = {
    "mse": (lambda: nn.MSELoss(), lambda n, c, g: torch.randn(n, c, generator=g)),
    "ce": (lambda: nn.CrossEntropyLoss(), lambda n, c, g: torch.randint(0, c, (n,), generator=g)),
    "bce": (lambda: nn.BCEWithLogitsLoss(), lambda n, c, g: torch.rand(n, c, generator=g)),
}


def problem(act: str, loss: str, n: int, seed: int = 0, sizes=(3, 5, 4, 3)):
    torch.manual_seed(seed)
    model = mlp(list(sizes), ACTIVATIONS.get(act)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, sizes[0], generator=g, dtype=torch.float64)
    make_loss, make_y = LOSSES[loss]
    y = make_y(n, sizes[-1], g)
    y = y.double() if y.is_floating_point() else y
    return model, make_loss(), x, y


def module_units(gamma: float, loss_fn: nn.Module, x: torch.Tensor, model: nn.Module) -> float:
    """A damping in the papers' units as the loss module applies it: ``s·γ``."""
    return per_example_scale(loss_fn, x.shape[0], model(x).shape[-1]) * gamma


KFGN_CASES = [
    pytest.param(v, a, l, id=f"variant={v}-act={a}-loss={l}")
    for v in ("kfra", "kflr")
    for a, l in (("relu", "ce"), ("leaky_relu", "mse"), ("tanh", "bce"), ("maxout", "ce"), ("abs", "mse"))
]


@pytest.mark.parametrize(("variant", "act", "loss"), KFGN_CASES)
def test_kfgn_at_batch_size_one_is_the_damped_layer_block_newton_step(variant, act, loss):
    model, loss_fn, x, y = problem(act, loss, n=1)
    gamma = 0.1
    ggn = dense_ggn_oracle(model, loss_fn, x, y).detach()  # (P, P) independent oracle
    grad = flat_grad(model, loss_fn, x, y)
    before = flat_params(model)
    # inputs of every Linear layer, by running the prefix of the Sequential
    inputs, h = [], x
    for m in model:
        if isinstance(m, nn.Linear):
            inputs.append(h)
        h = m(h)
    opt = KFGN(model, loss_fn, KFGNConfig(variant=variant, damping=gamma, factor_decay=0.0, rescale=False,
                                          adapt_damping=False))
    gamma = module_units(gamma, loss_fn, x, model)  # the expectation is in the module's units
    opt.step(StepClosure(model, loss_fn, x, y))
    delta = before - flat_params(model)  # θ ← θ − Δ
    offset, layer = 0, 0
    for m in model:
        if not isinstance(m, nn.Linear):
            continue
        out, inp = m.weight.shape
        w_idx = torch.arange(offset, offset + out * inp)
        b_idx = torch.arange(offset + out * inp, offset + out * inp + out)
        idx = torch.cat([w_idx.reshape(out, inp), b_idx[:, None]], dim=1).reshape(-1)  # row-major [W b]
        block = ggn[idx][:, idx]  # exact layer block, row-major vec of [W b]
        g_fac = ggn[b_idx][:, b_idx]  # ā_bias = 1: the bias block is the output factor
        a_bar = torch.cat([inputs[layer][0], torch.ones(1, dtype=torch.float64)])  # (in+1,)
        q_fac = torch.outer(a_bar, a_bar)
        torch.testing.assert_close(block, torch.kron(g_fac, q_fac), rtol=1e-10, atol=1e-12)
        tq, tg = float(q_fac.trace()) / q_fac.shape[0], float(g_fac.trace()) / g_fac.shape[0]
        pi = math.sqrt(tq / tg) if tg > 0 else 1.0  # the stated rule for a dead layer (G = 0)
        damped = torch.kron(g_fac + math.sqrt(gamma) / pi * torch.eye(out, dtype=torch.float64),
                            q_fac + pi * math.sqrt(gamma) * torch.eye(inp + 1, dtype=torch.float64))
        expected = torch.linalg.solve(damped, grad[idx])
        torch.testing.assert_close(delta[idx], expected, rtol=1e-8, atol=1e-10)
        offset += out * inp + out
        layer += 1
    assert offset == before.numel()


HF_CASES = [pytest.param(a, l, pc, id=f"act={a}-loss={l}-precond={pc}")
            for a, l in (("relu", "ce"), ("tanh", "mse"), ("prelu", "bce"), ("maxout", "mse"))
            for pc in (False, True)]


@pytest.mark.parametrize(("act", "loss", "precondition"), HF_CASES)
def test_hf_solves_the_damped_gauss_newton_system(act, loss, precondition):
    model, loss_fn, x, y = problem(act, loss, n=6)
    lam = 0.5
    ggn = dense_ggn_oracle(model, loss_fn, x, y)
    grad = flat_grad(model, loss_fn, x, y)
    # λ in the papers' units: the module's system is (G + s·λ I) p = −g (s = 1/D for MSE/BCE).
    expected = -torch.linalg.solve(ggn + module_units(lam, loss_fn, x, model) * torch.eye(ggn.shape[0],
                                                                                       dtype=torch.float64), grad)
    before = flat_params(model)
    cfg = HFConfig(damping=lam, adapt_damping=False, precondition=precondition, backtrack=False,
                   line_search=False, max_cg_iters=1000, cg_tol=0.0, min_damping=lam, curvature_fraction=1.0)
    opt = HessianFree(model, loss_fn, cfg)
    opt.step(StepClosure(model, loss_fn, x, y))
    torch.testing.assert_close(flat_params(model) - before, expected, rtol=1e-7, atol=1e-9)


def linear_regression(n: int = 20, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return model, nn.MSELoss(), x, y


def test_hf_levenberg_marquardt_decreases_damping_when_the_model_is_exact():
    # Linear model + squared loss: f is quadratic and G = H, so ρ = 1 and λ ← 2/3 λ.
    model, loss_fn, x, y = linear_regression()
    opt = HessianFree(model, loss_fn, HFConfig(damping=3.0, backtrack=False, line_search=False,
                                               curvature_fraction=1.0))
    opt.step(StepClosure(model, loss_fn, x, y))
    assert opt.group_state()["rho"] == pytest.approx(1.0, rel=1e-9)
    assert opt.damping == pytest.approx(2.0)


def test_hf_levenberg_marquardt_increases_damping_when_the_model_overpromises():
    # A tiny damping on a strongly non-quadratic problem: the first full GN step overshoots.
    model, loss_fn, x, y = problem("relu", "ce", n=8, sizes=(3, 16, 16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6.0)  # large logits: the GN model is poor far from the current point
    opt = HessianFree(model, loss_fn, HFConfig(damping=1e-3, min_damping=1e-3, backtrack=False,
                                               line_search=False, curvature_fraction=1.0))
    opt.step(StepClosure(model, loss_fn, x, y))
    rho = opt.group_state()["rho"]
    assert rho < 0.25
    assert opt.damping == pytest.approx(1.5e-3)


def test_kfgn_levenberg_marquardt_on_an_exact_quadratic():
    model, loss_fn, x, y = linear_regression()
    opt = KFGN(model, loss_fn, KFGNConfig(damping=0.3, adapt_damping=True, lm_period=1, rescale=True))
    opt.step(StepClosure(model, loss_fn, x, y))
    assert opt.damping == pytest.approx(0.2)


@pytest.mark.parametrize(("act", "loss"), [("relu", "ce"), ("prelu", "mse"), ("tanh", "bce")],
                         ids=lambda v: str(v))
def test_diag_gn_first_step_is_damped_diagonal_newton(act, loss):
    model, loss_fn, x, y = problem(act, loss, n=5)
    ggn = dense_ggn_oracle(model, loss_fn, x, y).detach()
    diag = torch.diagonal(ggn)
    grad = flat_grad(model, loss_fn, x, y)
    before = flat_params(model)
    lam = module_units(0.1, loss_fn, x, model)
    cfg = DiagGNConfig(lr=0.5, damping=0.1, estimator="exact", rescale=False, adapt_damping=False)
    opt = DiagGN(model, loss_fn, cfg)
    opt.step(StepClosure(model, loss_fn, x, y))
    step = -0.5 * grad / (diag + lam)
    torch.testing.assert_close(flat_params(model) - before, step, rtol=1e-10, atol=1e-12)
    # With rescaling (the default) the same step is scaled by Botev et al.'s α.
    model, loss_fn, x, y = problem(act, loss, n=5)
    opt = DiagGN(model, loss_fn, DiagGNConfig(lr=0.5, damping=0.1, estimator="exact", adapt_damping=False))
    opt.step(StepClosure(model, loss_fn, x, y))
    alpha = min(1.0, float(-grad @ step) / float(step @ (ggn @ step) + lam * step @ step))
    assert opt.group_state()["alpha"] == pytest.approx(alpha, rel=1e-9)
    torch.testing.assert_close(flat_params(model) - before, alpha * step, rtol=1e-9, atol=1e-12)


def test_kfgn_rescaling_is_botev_alpha():
    # α = min(1, gᵀΔ / (Δᵀ(G + γI)Δ)) with the exact mini-batch GN.
    model, loss_fn, x, y = problem("relu", "mse", n=7)
    ggn = dense_ggn_oracle(model, loss_fn, x, y)
    grad = flat_grad(model, loss_fn, x, y)
    gamma = 0.05
    ref_model, _, _, _ = problem("relu", "mse", n=7)
    ref = KFGN(ref_model, loss_fn, KFGNConfig(damping=gamma, rescale=False, factor_decay=0.0, adapt_damping=False))
    before = flat_params(ref_model)
    ref.step(StepClosure(ref_model, loss_fn, x, y))
    delta = before - flat_params(ref_model)
    lam = module_units(gamma, loss_fn, x, model)
    alpha = min(1.0, float(grad @ delta) / float(delta @ (ggn @ delta) + lam * delta @ delta))
    opt = KFGN(model, loss_fn, KFGNConfig(damping=gamma, rescale=True, factor_decay=0.0, adapt_damping=False))
    opt.step(StepClosure(model, loss_fn, x, y))
    assert opt.group_state()["alpha"] == pytest.approx(alpha, rel=1e-9)
    torch.testing.assert_close(before - flat_params(model), alpha * delta, rtol=1e-9, atol=1e-12)
