"""Torch-native linear algebra on products: block Lanczos, dense blocks, the cached Hessian operator.

References are dense float64 matrices (``torch.linalg.eigvalsh``, ``dense_hessian``).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from benchsuite.curvature import GGNOperator, LossKind, dense_ggn, dense_hessian
from benchsuite.curvature.linalg import (
    block_lanczos,
    dense_block,
    flat_product,
    lanczos_min,
    start_block,
    top_eigenvalues,
)
from benchsuite.curvature.products import HessianOperator, flatten_vectors, hessian_matrix_product
from tests.curvature.conftest import make_case


def _sym(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q @ torch.diag(eigs) @ q.T


def _start(n: int, b: int, seed: int = 1) -> torch.Tensor:
    return start_block(n, b, torch.Generator().manual_seed(seed), torch.float64, torch.device("cpu"))


@pytest.mark.parametrize("b", [1, 2, 4])
def test_block_lanczos_top_and_bottom_match_eigvalsh(b):
    eigs = torch.cat([torch.tensor([5.0, 4.0, 3.5, -2.0]), torch.linspace(-1, 1, 76)]).double()
    a = _sym(eigs)
    ref = torch.linalg.eigvalsh(a)
    top = block_lanczos(lambda v: v @ a, _start(80, b), 3, tol=1e-12, max_products=80)
    assert top.converged
    assert torch.allclose(top.values, ref.flip(0)[:3], rtol=1e-10, atol=1e-12)
    low = block_lanczos(lambda v: v @ a, _start(80, b), 2, largest=False, tol=1e-12, max_products=80)
    assert torch.allclose(low.values, ref[:2], rtol=1e-10, atol=1e-12)
    assert low.vectors is not None and low.vectors.shape == (2, 80)
    # the bound is on the value (r²/gap); the isolated pair's vector is accurate too
    assert float((low.vectors[0] @ a - low.values[0] * low.vectors[0]).norm()) < 1e-6


def test_block_lanczos_survives_a_degenerate_null_space():
    """A rank-5 PSD operator (like a dead-unit GN block): the Krylov space becomes invariant."""
    eigs = torch.cat([torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5]), torch.zeros(55)]).double()
    a = _sym(eigs, seed=3)
    out = block_lanczos(lambda v: v @ a, _start(60, 2), 3, tol=1e-10, max_products=60)
    assert out.converged and out.products < 60
    assert torch.allclose(out.values, torch.tensor([3.0, 2.0, 1.5], dtype=torch.float64), atol=1e-10)
    assert abs(lanczos_min(lambda v: v @ a, 60, _start(60, 1))) < 1e-10


def test_unconverged_values_are_nan():
    a = _sym(torch.linspace(0, 1, 200).double())
    out = block_lanczos(lambda v: v @ a, _start(200, 1), 1, tol=1e-12, max_products=5)
    assert not out.converged and torch.isnan(out.values).all()


def test_lanczos_min_is_an_upper_bound_that_tightens():
    eigs = torch.linspace(-3, 2, 120).double()
    a = _sym(eigs, seed=5)
    bounds = [lanczos_min(lambda v: v @ a, steps, _start(120, 1)) for steps in (3, 10, 30, 120)]
    assert all(x >= -3 - 1e-10 for x in bounds)
    assert all(x >= y - 1e-12 for x, y in itertools.pairwise(bounds))
    assert bounds[-1] == pytest.approx(-3.0, abs=1e-9)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("kind", [LossKind.MSE, LossKind.SOFTMAX_CROSS_ENTROPY])
def test_top_eigenvalues_of_network_operators_match_dense(act, kind):
    """Lanczos on the cached operators (gradient start) vs eigvalsh of the dense float64 H and G."""
    case = make_case(act, kind, n=6)
    params, idx = case.params, list(range(len(case.params)))
    n = sum(p.numel() for p in params)
    hop = HessianOperator(case.model, case.loss_fn, case.x, case.y)
    grad = flatten_vectors(hop.gradient)
    for op, dense in ((hop, dense_hessian), (GGNOperator(case.model, case.loss_fn, case.x, case.y), dense_ggn)):
        ref = torch.linalg.eigvalsh(dense(case.model, case.loss_fn, case.x, case.y)).flip(0)[:3]
        for b in (1, 3):
            start = start_block(n, b, torch.Generator().manual_seed(0), torch.float64, torch.device("cpu"), grad)
            got = top_eigenvalues(flat_product(op.matmat, params, idx), start, 3, tol=1e-12, max_products=n)
            assert torch.allclose(got, ref, rtol=1e-9, atol=1e-12), (type(op).__name__, b)


@pytest.mark.parametrize("act", ["relu", "prelu", "maxout", "softplus"])
def test_hessian_operator_matches_dense_and_leaves_no_grad(act):
    case = make_case(act, LossKind.SOFTMAX_CROSS_ENTROPY, n=5)
    h = dense_hessian(case.model, case.loss_fn, case.x, case.y)
    op = HessianOperator(case.model, case.loss_fn, case.x, case.y, max_elements=200)  # several chunks
    v = [torch.randn(7, *p.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) for p in case.params]
    got = flatten_vectors(op.matmat(v), batched=True)  # (7, P), one vector at a time on a CPU
    assert torch.allclose(got, flatten_vectors(v, batched=True) @ h, rtol=1e-10, atol=1e-12)
    op._batched = True  # the accelerator path: vmapped double backward in chunks
    assert torch.allclose(flatten_vectors(op.matmat(v), batched=True), got, rtol=1e-10, atol=1e-12)
    one = flatten_vectors(op.matvec([x[0] for x in v]))
    assert torch.allclose(one, got[0], rtol=1e-12, atol=1e-14)
    assert torch.allclose(got, flatten_vectors(hessian_matrix_product(case.model, case.loss_fn, case.x, case.y, v),
                                               batched=True), rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(case.loss_fn(case.model(case.x), case.y), case.params)
    assert torch.allclose(flatten_vectors(op.gradient), flatten_vectors(grads), rtol=1e-12, atol=1e-14)
    assert all(p.grad is None for p in case.params)


def test_dense_block_matches_dense_hessian_block():
    case = make_case("tanh", LossKind.MSE, n=4)
    h = dense_hessian(case.model, case.loss_fn, case.x, case.y)
    op = HessianOperator(case.model, case.loss_fn, case.x, case.y)
    sizes = [p.numel() for p in case.params]
    idx = [2, 3]  # the second Linear layer
    lo = sum(sizes[:2])
    hi = lo + sizes[2] + sizes[3]
    got = dense_block(op.matmat, case.params, idx)
    assert got.dtype == torch.float64
    assert torch.allclose(got, h[lo:hi, lo:hi], rtol=1e-10, atol=1e-12)


def test_start_block_uses_the_guess_and_ignores_a_zero_one():
    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(4)

    guess = torch.zeros(30, dtype=torch.float64)
    guess[3] = 2.0
    with_guess = start_block(30, 2, gen(), torch.float64, torch.device("cpu"), guess, mix=0.0)
    assert torch.allclose(with_guess[0], guess / 2)
    plain = start_block(30, 2, gen(), torch.float64, torch.device("cpu"))
    assert torch.equal(start_block(30, 2, gen(), torch.float64, torch.device("cpu"), torch.zeros(30)), plain)
    assert torch.allclose(plain.norm(dim=1), torch.ones(2, dtype=torch.float64))
