"""Exact and Monte-Carlo GN diagonals against dense references and BackPACK."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.curvature import (
    LossKind,
    dense_ggn,
    dense_hessian,
    diag_ggn_exact,
    diag_ggn_mc,
    flatten_vectors,
)
from tests.curvature.conftest import ALL_CASES, LOSS_KINDS, REDUCTIONS, make_case, rel_err

TOL = 1e-10


@pytest.mark.parametrize("act,kind,reduction", ALL_CASES)
def test_exact_diagonal_is_diag_of_dense_ggn(act, kind, reduction):
    case = make_case(act, kind, reduction)
    ours = flatten_vectors(diag_ggn_exact(case.model, case.loss_fn, case.x, case.y))
    assert rel_err(ours, dense_ggn(case.model, case.loss_fn, case.x, case.y).diagonal()) < TOL


@pytest.mark.parametrize("kind", LOSS_KINDS, ids=lambda k: f"loss={k.value}")
def test_exact_diagonal_chunked_equals_unchunked(kind):
    """Chunking the backpropagated columns (memory bound) must not change the sum."""
    case = make_case("prelu", kind, "sum", n=5)
    full = flatten_vectors(diag_ggn_exact(case.model, case.loss_fn, case.x, case.y))
    tiny = flatten_vectors(diag_ggn_exact(case.model, case.loss_fn, case.x, case.y, max_elements=1))
    assert rel_err(tiny, full) < TOL


MC_CASES = [pytest.param(a, k, id=f"act={a}-loss={k.value}") for a in ("relu", "prelu", "gelu") for k in LOSS_KINDS]


@pytest.mark.parametrize("act,kind", MC_CASES)
def test_mc_diagonal_unbiased(act, kind):
    """Mean of R MC diagonals within 5 standard errors (estimated from the R runs) of the exact one."""
    case = make_case(act, kind, "mean")
    exact = flatten_vectors(diag_ggn_exact(case.model, case.loss_fn, case.x, case.y))
    gen = torch.Generator().manual_seed(3)
    runs = 400
    ests = torch.stack([flatten_vectors(diag_ggn_mc(case.model, case.loss_fn, case.x, case.y, mc_samples=4,
                                                    generator=gen)) for _ in range(runs)])  # (R, P)
    mean, se = ests.mean(0), ests.std(0) / runs**0.5
    assert torch.all((mean - exact).abs() <= 5 * se + 1e-12 * exact.abs().max())
    assert torch.all(ests >= 0)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "prelu", "abs", "maxout"])
@pytest.mark.parametrize("kind", LOSS_KINDS, ids=lambda k: f"loss={k.value}")
def test_piecewise_linear_diag_hessian_equals_diag_ggn(act, kind):
    case = make_case(act, kind, "mean")
    ours = flatten_vectors(diag_ggn_exact(case.model, case.loss_fn, case.x, case.y))
    assert rel_err(ours, dense_hessian(case.model, case.loss_fn, case.x, case.y).diagonal()) < TOL
    assert torch.all(ours >= 0)


BACKPACK_ACTS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _backpack(model, loss_fn, x, y, ext):
    backpack = pytest.importorskip("backpack")
    from backpack import extensions

    model, loss_fn = backpack.extend(model), backpack.extend(loss_fn)
    with backpack.backpack(getattr(extensions, ext)()):
        loss_fn(model(x), y).backward()
    attr = {"DiagGGNExact": "diag_ggn_exact", "DiagHessian": "diag_h"}[ext]
    return torch.cat([getattr(p, attr).reshape(-1) for p in model.parameters()])


def _bp_case(act, kind, reduction):
    """BackPACK's BCEWithLogitsLoss supports scalar predictions only: one output there."""
    torch.manual_seed(8)
    c = 1 if kind == LossKind.SIGMOID_CROSS_ENTROPY else 3
    model = nn.Sequential(nn.Linear(3, 5), BACKPACK_ACTS[act](), nn.Linear(5, 4), BACKPACK_ACTS[act](),
                          nn.Linear(4, c)).double()
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    if kind == LossKind.SOFTMAX_CROSS_ENTROPY:
        y = torch.randint(0, 3, (6,), generator=gen)
    elif kind == LossKind.SIGMOID_CROSS_ENTROPY:
        y = torch.rand(6, 1, generator=gen, dtype=torch.float64)
    else:
        y = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    return model, kind.module(reduction), x, y


@pytest.mark.parametrize("act", list(BACKPACK_ACTS))
@pytest.mark.parametrize("kind", LOSS_KINDS, ids=lambda k: f"loss={k.value}")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_exact_diagonal_matches_backpack(act, kind, reduction):
    pytest.importorskip("backpack")
    model, loss_fn, x, y = _bp_case(act, kind, reduction)
    ours = flatten_vectors(diag_ggn_exact(model, loss_fn, x, y))
    assert rel_err(ours, _backpack(model, loss_fn, x, y, "DiagGGNExact")) < TOL


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("kind", [LossKind.MSE, LossKind.SOFTMAX_CROSS_ENTROPY], ids=lambda k: f"loss={k.value}")
def test_backpack_diag_hessian_equals_our_diag_ggn_for_piecewise_linear(act, kind):
    pytest.importorskip("backpack")
    model, loss_fn, x, y = _bp_case(act, kind, "mean")
    ours = flatten_vectors(diag_ggn_exact(model, loss_fn, x, y))
    assert rel_err(ours, _backpack(model, loss_fn, x, y, "DiagHessian")) < TOL


@pytest.mark.parametrize("kind", LOSS_KINDS, ids=lambda k: f"loss={k.value}")
@pytest.mark.parametrize("act", ["relu", "prelu", "maxout", "tanh"])
def test_bottleneck_compression_is_exact(act, kind):
    """A 16-output autoencoder-like net with a 2-unit code: the 16 columns are compressed
    to 4 then 2 square-root columns on the way down; diag and KFLR stay exact."""
    from benchsuite.curvature import kflr, layer_ggn_block

    case = make_case(act, kind, "sum", n=5, sizes=[3, 8, 4, 2, 4, 8, 16])
    ours = flatten_vectors(diag_ggn_exact(case.model, case.loss_fn, case.x, case.y, max_elements=200))
    assert rel_err(ours, dense_ggn(case.model, case.loss_fn, case.x, case.y).diagonal()) < TOL
    for f in kflr(case.model, case.loss_fn, case.x, case.y):
        exact = layer_ggn_block(case.model, case.loss_fn, case.x, case.y, f.name)
        nb = f.output.shape[0]
        assert rel_err(f.output, exact[-nb:, -nb:]) < TOL, f.name
