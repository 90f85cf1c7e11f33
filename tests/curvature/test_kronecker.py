"""KFRA / KFLR / KFAC factors against dense layer blocks, in expectation, and against BackPACK."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.curvature import LossKind, input_factor, kfac, kflr, kfra, layer_ggn_block
from tests.curvature.conftest import ALL_CASES, LOSS_KINDS, REDUCTIONS, make_case, rel_err

TOL = 1e-10


@pytest.mark.parametrize("act,kind,reduction", ALL_CASES)
def test_kfra_and_kflr_equal_exact_block_at_batch_size_one(act, kind, reduction):
    case = make_case(act, kind, reduction, n=1)
    for f_lr, f_ra in zip(kflr(case.model, case.loss_fn, case.x, case.y),
                          kfra(case.model, case.loss_fn, case.x, case.y)):
        exact = layer_ggn_block(case.model, case.loss_fn, case.x, case.y, f_lr.name)
        assert rel_err(f_lr.dense(), exact) < TOL, f_lr.name
        assert rel_err(f_ra.dense(), exact) < TOL, f_ra.name


@pytest.mark.parametrize("act,kind,reduction", ALL_CASES)
def test_kflr_output_factor_is_the_exact_bias_block(act, kind, reduction):
    """Ḡ_KFLR = Σ_n 𝒢_{l,n} is exactly the bias-bias block of the GN at any N (ā's last entry is 1)."""
    case = make_case(act, kind, reduction, n=4)
    lins = [m for m in case.model if isinstance(m, nn.Linear)]
    factors = kflr(case.model, case.loss_fn, case.x, case.y)
    ra = kfra(case.model, case.loss_fn, case.x, case.y)
    for f, lin in zip(factors, lins):
        exact = layer_ggn_block(case.model, case.loss_fn, case.x, case.y, f.name)
        nb = lin.bias.numel()
        assert rel_err(f.output, exact[-nb:, -nb:]) < TOL, f.name
    assert rel_err(ra[-1].output, factors[-1].output) < TOL  # KFRA top: Σ_n ℋ_n


@pytest.mark.parametrize("act", ["relu", "tanh", "maxout"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kfra_exact_for_top_layer_under_squared_loss(act, reduction):
    case = make_case(act, LossKind.MSE, reduction, n=6)
    for fac in (kfra, kflr):
        top = fac(case.model, case.loss_fn, case.x, case.y)[-1]
        exact = layer_ggn_block(case.model, case.loss_fn, case.x, case.y, top.name)
        assert rel_err(top.dense(), exact) < TOL
    # ... but not for a hidden layer at N > 1 (the test can tell the difference)
    hidden = kfra(case.model, case.loss_fn, case.x, case.y)[0]
    assert rel_err(hidden.dense(), layer_ggn_block(case.model, case.loss_fn, case.x, case.y, "layer0")) > 1e-3


@pytest.mark.parametrize("kind", LOSS_KINDS, ids=lambda k: f"loss={k.value}")
def test_factor_convention_mean_vs_sum(kind):
    """Q̄ is a mean over samples in both reductions; Ḡ carries the reduction (×N, or ×N·D)."""
    n, d = 5, 3
    mean, total = make_case("relu", kind, "mean", n=n), make_case("relu", kind, "sum", n=n)
    factor = n if kind == LossKind.SOFTMAX_CROSS_ENTROPY else n * d
    for fac in (kflr, kfra):
        for fm, fs in zip(fac(mean.model, mean.loss_fn, mean.x, mean.y), fac(total.model, total.loss_fn, total.x, total.y)):
            assert rel_err(fs.input, fm.input) < TOL
            assert rel_err(fs.output, factor * fm.output) < TOL
    a = torch.randn(7, 3, dtype=torch.float64)
    q = input_factor(a)
    assert q.shape == (4, 4) and q[-1, -1] == 1.0
    assert rel_err(q[:3, :3], a.T @ a / 7) < TOL and rel_err(q[:3, -1], a.mean(0)) < TOL


def test_layer_without_bias():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5, bias=False), nn.ReLU(), nn.Linear(5, 3)).double()
    x, y = torch.randn(1, 3, dtype=torch.float64), torch.tensor([1])
    loss = nn.CrossEntropyLoss()
    for fac in (kflr, kfra):
        f = fac(model, loss, x, y)[0]
        assert f.input.shape == (3, 3) and not f.has_bias
        assert rel_err(f.dense(), layer_ggn_block(model, loss, x, y, "layer0")) < TOL


KFAC_CASES = [
    pytest.param(a, k, id=f"act={a}-loss={k.value}") for a in ("relu", "maxout", "tanh") for k in LOSS_KINDS
]


@pytest.mark.parametrize("act,kind", KFAC_CASES)
def test_kfac_equals_kflr_in_expectation(act, kind):
    """R independent KFAC estimates (M samples each): mean within 5 standard errors of KFLR, per entry.

    The standard error is estimated from the R estimates themselves; a wrong sampler
    scale (e.g. a missing √2 or 1/N) shifts the mean by tens of standard errors.
    """
    case = make_case(act, kind, "mean", n=4)
    exact = kflr(case.model, case.loss_fn, case.x, case.y)
    gen = torch.Generator().manual_seed(11)
    runs, m = 300, 8
    ests = [[f.output for f in kfac(case.model, case.loss_fn, case.x, case.y, mc_samples=m, generator=gen)]
            for _ in range(runs)]
    for j, f in enumerate(exact):
        stack = torch.stack([e[j] for e in ests])  # (R, out, out)
        mean, se = stack.mean(0), stack.std(0) / runs**0.5
        assert torch.all((mean - f.output).abs() <= 5 * se + 1e-12 * f.output.abs().max()), f.name
        inp = kfac(case.model, case.loss_fn, case.x, case.y, generator=gen)[j].input
        assert rel_err(inp, f.input) < TOL


# --------------------------------------------------------------------------- BackPACK


def _backpack_factors(model, loss_fn, x, y, ext_name):
    backpack = pytest.importorskip("backpack")
    from backpack import extensions

    model, loss_fn = backpack.extend(model), backpack.extend(loss_fn)
    with backpack.backpack(getattr(extensions, ext_name)()):
        loss_fn(model(x), y).backward()
    out = []
    for m in model:
        if isinstance(m, nn.Linear):
            g, a = getattr(m.weight, ext_name.lower())
            out.append((torch.kron(g.contiguous(), a.contiguous()), getattr(m.bias, ext_name.lower())[0]))
    return out


BACKPACK_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@pytest.mark.parametrize("ext", ["KFLR", "KFRA"])
@pytest.mark.parametrize("act", list(BACKPACK_ACTS))
@pytest.mark.parametrize("kind,reduction,dtype", [
    pytest.param(LossKind.SOFTMAX_CROSS_ENTROPY, "mean", torch.float64, id="ce-mean-f64"),
    pytest.param(LossKind.SOFTMAX_CROSS_ENTROPY, "sum", torch.float64, id="ce-sum-f64"),
    # BackPACK's MSE square root is built in float32: compare in float32.
    pytest.param(LossKind.MSE, "mean", torch.float32, id="mse-mean-f32"),
    pytest.param(LossKind.MSE, "sum", torch.float32, id="mse-sum-f32"),
])
def test_factors_match_backpack(ext, act, kind, reduction, dtype):
    """BackPACK keeps the bias as a separate block: compare Ḡ⊗Q̄[:in,:in] (weight) and Ḡ (bias)."""
    pytest.importorskip("backpack")
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 5), BACKPACK_ACTS[act](), nn.Linear(5, 4), BACKPACK_ACTS[act](),
                          nn.Linear(4, 3)).to(dtype)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(6, 3, generator=gen).to(dtype)
    y = torch.randint(0, 3, (6,), generator=gen) if kind == LossKind.SOFTMAX_CROSS_ENTROPY else torch.randn(6, 3, generator=gen).to(dtype)
    ours = (kflr if ext == "KFLR" else kfra)(model, kind.module(reduction), x, y)
    theirs = _backpack_factors(model, kind.module(reduction), x, y, ext)
    tol = TOL if dtype == torch.float64 else 1e-5
    for f, (w_block, b_block) in zip(ours, theirs):
        assert rel_err(torch.kron(f.output, f.input[:-1, :-1]), w_block) < tol, f.name
        assert rel_err(f.output, b_block) < tol, f.name
