"""The pure functions under the second-order optimizers: CG, Levenberg-Marquardt, Armijo, step rules."""

from __future__ import annotations

import math

import pytest
import torch
from benchsuite.optimizers.base import follow_damping
from benchsuite.optimizers.cg import backtrack_iterates, martens_cg, storage_schedule
from benchsuite.optimizers.damping import lm_update, reduction_ratio
from benchsuite.optimizers.diag_gn import diag_gn_step
from benchsuite.optimizers.hf import hf_preconditioner
from benchsuite.optimizers.kfgn import (
    heavy_ball,
    kronecker_step,
    moving_average,
    rescale_step_sizes,
)
from benchsuite.optimizers.line_search import armijo


def spd(n: int, cond: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.logspace(0, math.log10(cond), n, dtype=torch.float64)) @ q.T


CG_CASES = [
    pytest.param(10, 10.0, False, id="n=10-cond=1e1-plain"),
    pytest.param(30, 1e4, False, id="n=30-cond=1e4-plain"),
    pytest.param(30, 1e4, True, id="n=30-cond=1e4-jacobi"),
]


@pytest.mark.parametrize(("n", "cond", "use_precond"), CG_CASES)
def test_cg_matches_linalg_solve_on_spd(n, cond, use_precond):
    a = spd(n, cond, seed=n)
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    precond = torch.diagonal(a).clone() if use_precond else None
    res = martens_cg(lambda v: a @ v, b, torch.zeros(n, dtype=torch.float64), precond=precond,
                     max_iters=5 * n, progress_tol=0.0, residual_tol=1e-28)
    expected = torch.linalg.solve(a, b)
    torch.testing.assert_close(res.x, expected, rtol=1e-8, atol=1e-10)
    assert res.stop == "converged"
    # φ decreases monotonically for CG on an SPD system
    assert all(p1 <= p0 + 1e-12 for p0, p1 in zip(res.phi, res.phi[1:]))


def test_cg_warm_start_is_used():
    a = spd(8, 10.0, seed=3)
    b = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    exact = torch.linalg.solve(a, b)
    res = martens_cg(lambda v: a @ v, b, exact.clone(), max_iters=50, progress_tol=0.0, residual_tol=1e-20)
    assert res.iters == 0 and res.stop == "converged"
    torch.testing.assert_close(res.x, exact)


def test_cg_bails_out_on_negative_curvature():
    a = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    b = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)  # first direction sees the negative eigenvalue
    res = martens_cg(lambda v: a @ v, b, torch.zeros(3, dtype=torch.float64), max_iters=10)
    assert res.stop == "negative_curvature"
    torch.testing.assert_close(res.x, torch.zeros(3, dtype=torch.float64))


def test_cg_progress_rule_stops_before_max_iters():
    # 10 well-scaled directions carry almost all of φ's decrease; 390 tiny eigenvalues
    # leave only negligible progress after them, which the relative-progress rule detects.
    g = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    evals = torch.cat([torch.linspace(1.0, 10.0, 10, dtype=torch.float64),
                       torch.logspace(-9, -6, 390, dtype=torch.float64)])
    a = q @ torch.diag(evals) @ q.T
    b = q @ torch.cat([torch.ones(10, dtype=torch.float64), 1e-6 * torch.ones(390, dtype=torch.float64)])
    res = martens_cg(lambda v: a @ v, b, torch.zeros(400, dtype=torch.float64), max_iters=400)
    assert res.stop == "progress" and res.iters < 400
    i, k = res.iters, max(10, math.ceil(0.1 * res.iters))
    assert res.phi[i] < 0 and (res.phi[i] - res.phi[i - k]) / res.phi[i] < k * 5e-4


def test_storage_schedule_is_ceil_5_times_1_3_power_j():
    assert sorted(storage_schedule(40)) == [5, 7, 9, 11, 15, 19, 25, 32]


def test_cg_stores_scheduled_iterates_and_the_last():
    a = spd(40, 1e3, seed=7)
    b = torch.randn(40, dtype=torch.float64)
    res = martens_cg(lambda v: a @ v, b, torch.zeros(40, dtype=torch.float64), max_iters=23, progress_tol=0.0,
                     residual_tol=0.0)
    assert [i for i, _ in res.iterates] == [5, 7, 9, 11, 15, 19, 23]


def test_backtracking_walks_back_while_objective_decreases():
    its = [(i, torch.tensor([float(i)])) for i in (5, 7, 9, 11)]
    values = {5: 3.0, 7: 1.0, 9: 2.0, 11: 4.0}  # best is 7; walking back from 11: 9 < 11, 7 < 9, 5 > 7 stop
    x, v = backtrack_iterates(its, lambda t: values[int(t.item())])
    assert int(x.item()) == 7 and v == 1.0
    values = {5: 0.0, 7: 1.0, 9: 5.0, 11: 4.0}  # 9 > 11: stop at the last one although 5 is better
    x, v = backtrack_iterates(its, lambda t: values[int(t.item())])
    assert int(x.item()) == 11 and v == 4.0


LM_CASES = [
    pytest.param(0.1, 1.5, id="rho<1/4-increase"),
    pytest.param(-3.0, 1.5, id="rho<0-increase"),
    pytest.param(0.5, 1.0, id="1/4<rho<3/4-keep"),
    pytest.param(0.9, 2.0 / 3.0, id="rho>3/4-decrease"),
    pytest.param(-math.inf, 1.5, id="rho=-inf-increase"),
]


@pytest.mark.parametrize(("rho", "factor"), LM_CASES)
def test_levenberg_marquardt_rule(rho, factor):
    assert lm_update(2.0, rho) == pytest.approx(2.0 * factor)


def test_lm_clips_to_bounds():
    assert lm_update(1e-8, 0.99, minimum=1e-6) == 1e-6
    assert lm_update(1e8, 0.0, maximum=1e8) == 1e8


def test_reduction_ratio_guards():
    assert reduction_ratio(-1.0, -2.0) == 0.5
    assert reduction_ratio(float("nan"), -1.0) == -math.inf
    assert reduction_ratio(-1.0, 0.0) == -math.inf  # a model that predicts no decrease cannot be trusted


def test_armijo_returns_first_sufficient_step():
    f = lambda a: (a - 0.2) ** 2  # noqa: E731  f(0)=0.04, f'(0)=-0.4
    alpha, value = armijo(f, 0.04, -0.4, shrink=0.5, c=1e-2)
    assert alpha == 0.25 and value == pytest.approx((0.25 - 0.2) ** 2)  # 1 and 0.5 fail, 0.25 passes


def test_armijo_gives_up_without_descent():
    assert armijo(lambda a: 1.0 + a, 1.0, 1.0) == (0.0, 1.0)  # ascent direction
    assert armijo(lambda a: 2.0, 1.0, -1.0, max_tries=5) == (0.0, 1.0)  # never sufficient


def test_rescale_step_sizes_is_botev_alpha_for_one_block():
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    d = torch.tensor([[0.5, -1.0, 0.0]], dtype=torch.float64)  # (1, 3)
    gd = torch.tensor([[2.0, -3.0, 1.0]], dtype=torch.float64)  # G·Δ
    alpha, g_s, s_g_s = rescale_step_sizes(g, d, gd, 0.1)
    expected = min(1.0, 2.5 / (4.0 + 0.1 * 1.25))  # gᵀΔ / (Δᵀ(G + γI)Δ)
    assert alpha == [pytest.approx(expected)]
    assert g_s == pytest.approx(expected * 2.5) and s_g_s == pytest.approx(expected**2 * 4.0)
    assert rescale_step_sizes(g, d, gd, 0.1, rescale=False)[0] == [1.0]
    assert rescale_step_sizes(g, -d, -gd, 0.1)[0] == [1.0]  # ascent along Δ: no rescaling


def test_rescale_step_sizes_solves_the_two_block_model():
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    d = torch.eye(2, dtype=torch.float64)  # one coordinate per block
    gd = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)  # G (symmetric)
    alpha, _, _ = rescale_step_sizes(g, d, gd, 0.0)
    sol = torch.linalg.solve(gd, g)
    assert alpha == [pytest.approx(float(sol[0])), pytest.approx(float(sol[1]))]


def test_kronecker_step_splits_weight_and_bias():
    gw, gb = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    q_inv, g_inv = spd(5, 10.0, seed=1), spd(3, 10.0, seed=2)
    dw, db = kronecker_step(gw, gb, q_inv, g_inv)
    full = g_inv @ torch.cat([gw, gb[:, None]], dim=1) @ q_inv
    torch.testing.assert_close(torch.cat([dw, db[:, None]], dim=1), full)
    dw, db = kronecker_step(gw, None, q_inv[:4, :4], g_inv)
    assert db is None and dw.shape == (3, 4)


def test_moving_average_and_heavy_ball():
    new, old = torch.tensor([2.0]), torch.tensor([1.0])
    assert moving_average(None, new, 0.9) is new and moving_average(old, new, 0.0) is new
    torch.testing.assert_close(moving_average(old, new, 0.75), torch.tensor([1.25]))
    assert heavy_ball(new, None, 0.9) is new and heavy_ball(new, old, 0.0) is new
    torch.testing.assert_close(heavy_ball(new, old, 0.5), torch.tensor([2.5]))


def test_diag_gn_step_bias_corrects_curvature_and_momentum():
    grad, diag = torch.tensor([1.0, -2.0]), torch.tensor([0.05, 0.5])  # EMA after one update, β = 0.95
    update, avg = diag_gn_step(grad, diag, None, step=1, curvature_updates=1, lr=0.5, damping=0.1, momentum=0.0,
                               curvature_decay=0.95)
    torch.testing.assert_close(update, -0.5 * grad / (diag / 0.05 + 0.1))
    assert avg is None
    update, avg = diag_gn_step(grad, diag, None, step=1, curvature_updates=1, lr=0.5, damping=0.1, momentum=0.9,
                               curvature_decay=0.95)
    torch.testing.assert_close(avg, 0.1 * grad)
    torch.testing.assert_close(update, -0.5 * grad / (diag / 0.05 + 0.1))  # m̂ = m / (1 − μ) = g


DAMPING_CASES = [
    pytest.param(0.3, 0.1, 0.1, True, 0.3, False, id="unchanged-adapted"),
    pytest.param(0.3, 0.1, 0.05, True, 0.15, True, id="halved-adapted-rebased"),
    pytest.param(0.1, 0.1, 0.05, False, 0.05, True, id="halved-not-adapted-follows"),
]


@pytest.mark.parametrize(("current", "base", "scheduled", "adapt", "expected", "changed"), DAMPING_CASES)
def test_follow_damping(current, base, scheduled, adapt, expected, changed):
    value, was_changed = follow_damping(current, base, scheduled, adapt=adapt)
    assert value == pytest.approx(expected) and was_changed is changed


def test_hf_preconditioner_is_martens_power():
    fisher = torch.tensor([0.0, 3.0, 15.0])
    torch.testing.assert_close(hf_preconditioner(fisher, 1.0, 0.75), torch.tensor([1.0, 4.0**0.75, 16.0**0.75]))
