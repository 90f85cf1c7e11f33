"""GN- and Hessian-vector products against dense float64 torch.func references."""

from __future__ import annotations

import pytest
import torch

from benchsuite.curvature import (
    dense_ggn,
    dense_hessian,
    flatten_vectors,
    ggn_matrix_product,
    ggn_vector_product,
    ggn_vector_product_autodiff,
    hessian_matrix_product,
    hessian_vector_product,
    unflatten_vector,
)
from tests.curvature.conftest import ALL_CASES, LOSS_KINDS, REDUCTIONS, make_case, rel_err

TOL = 1e-10


@pytest.mark.parametrize("act,kind,reduction", ALL_CASES)
def test_products_match_dense(act, kind, reduction):
    case = make_case(act, kind, reduction)
    g = dense_ggn(case.model, case.loss_fn, case.x, case.y)
    h = dense_hessian(case.model, case.loss_fn, case.x, case.y)
    vs = torch.randn(3, g.shape[0], generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # (K, P)
    batched = unflatten_vector(vs, case.params)
    gv = flatten_vectors(ggn_matrix_product(case.model, case.loss_fn, case.x, case.y, batched), batched=True)
    hv = flatten_vectors(hessian_matrix_product(case.model, case.loss_fn, case.x, case.y, batched), batched=True)
    assert rel_err(gv, vs @ g) < TOL
    assert rel_err(hv, vs @ h) < TOL
    single = unflatten_vector(vs[0], case.params)
    assert rel_err(flatten_vectors(ggn_vector_product(case.model, case.loss_fn, case.x, case.y, single)), g @ vs[0]) < TOL
    assert rel_err(flatten_vectors(hessian_vector_product(case.model, case.loss_fn, case.x, case.y, single)), h @ vs[0]) < TOL
    auto = ggn_vector_product_autodiff(case.model, case.loss_fn, case.x, case.y, single)
    assert rel_err(flatten_vectors(auto), g @ vs[0]) < TOL


def test_dense_references_agree_with_autograd_hessian():
    """The oracle itself: dense_hessian equals the double-backward Hessian column by column."""
    case = make_case("tanh", LOSS_KINDS[1], "mean")
    h = dense_hessian(case.model, case.loss_fn, case.x, case.y)
    loss = case.loss_fn(case.model(case.x), case.y)
    grads = torch.autograd.grad(loss, case.params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    col = torch.cat([c.reshape(-1) for c in torch.autograd.grad(flat[5], case.params)])
    assert rel_err(col, h[5]) < 1e-12
    assert all(p.grad is None for p in case.params)


@pytest.mark.parametrize("kind", LOSS_KINDS, ids=lambda k: f"loss={k.value}")
def test_sum_is_n_times_mean_for_ce_and_n_d_for_entrywise(kind):
    """Reduction convention: G_sum = N·G_mean (CE) or N·D·G_mean (MSE, BCE: mean over entries)."""
    mean, total = make_case("relu", kind, "mean", n=5), make_case("relu", kind, "sum", n=5)
    v = [torch.randn_like(p) for p in mean.params]
    gm = flatten_vectors(ggn_vector_product(mean.model, mean.loss_fn, mean.x, mean.y, v))
    gs = flatten_vectors(ggn_vector_product(total.model, total.loss_fn, total.x, total.y, v))
    factor = 5 if kind.value == "softmax_cross_entropy" else 5 * 3
    assert rel_err(gs, factor * gm) < TOL


@pytest.mark.parametrize("kind", LOSS_KINDS, ids=lambda k: f"loss={k.value}")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_products_match_curvlinops(kind, reduction):
    curvlinops = pytest.importorskip("curvlinops")
    case = make_case("relu", kind, reduction, n=6)
    data = [(case.x, case.y)]
    ggn = curvlinops.GGNLinearOperator(case.model, case.loss_fn, case.params, data, check_deterministic=False)
    hess = curvlinops.HessianLinearOperator(case.model, case.loss_fn, case.params, data, check_deterministic=False)
    v = [torch.randn_like(p) for p in case.params]
    ours_g = flatten_vectors(ggn_vector_product(case.model, case.loss_fn, case.x, case.y, v))
    ours_h = flatten_vectors(hessian_vector_product(case.model, case.loss_fn, case.x, case.y, v))
    assert rel_err(ours_g, flatten_vectors(ggn @ v)) < TOL
    assert rel_err(ours_h, flatten_vectors(hess @ v)) < TOL


def test_flat_helpers_roundtrip():
    case = make_case("relu", LOSS_KINDS[0])
    flat = torch.arange(sum(p.numel() for p in case.params), dtype=torch.float64)
    parts = unflatten_vector(flat, case.params)
    assert [p.shape for p in parts] == [p.shape for p in case.params]
    assert torch.equal(flatten_vectors(parts), flat)
    batched = unflatten_vector(torch.stack([flat, -flat]), case.params)
    assert torch.equal(flatten_vectors(batched, batched=True)[1], -flat)
