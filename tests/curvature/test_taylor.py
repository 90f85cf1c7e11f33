"""Taylor-mode Hessian quadratic forms ``zᵀ H z`` against the dense float64 Hessian."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from benchsuite.curvature import LossKind, UnsupportedModelError, dense_hessian
from benchsuite.curvature.linalg import rademacher
from benchsuite.curvature.taylor import (
    TaylorQuadraticForms,
    hessian_quadratic_forms,
    rademacher_probes,
)
from tests.curvature.conftest import LOSS_KINDS, REDUCTIONS, Case, make_case

TAYLOR_ACTIVATIONS = ["relu", "leaky_relu", "abs", "tanh", "sigmoid", "softplus", "gelu"]
TOL = 1e-10


def exact_forms(case: Case, vectors: list[Tensor]) -> Tensor:
    """``z_sᵀ H z_s`` (S,) from the dense float64 Hessian."""
    h = dense_hessian(case.model, case.loss_fn, case.x, case.y)  # (P, P)
    z = torch.cat([v.reshape(v.shape[0], -1) for v in vectors], dim=1)  # (S, P)
    return torch.einsum("sp,pq,sq->s", z, h, z)


def assert_close(got: Tensor, want: Tensor) -> None:
    scale = want.abs().max().clamp_min(1e-12)
    assert got.shape == want.shape
    assert float((got - want).abs().max() / scale) < TOL


@dataclass(frozen=True)
class Grid:
    """One activation × loss × reduction case of the agreement grid."""

    act: str
    kind: LossKind
    reduction: str

    @property
    def id(self) -> str:
        return f"{self.act}-{self.kind.value}-{self.reduction}"


GRID = [Grid(a, k, r) for a in TAYLOR_ACTIVATIONS for k in LOSS_KINDS for r in REDUCTIONS]


@pytest.mark.parametrize("grid", GRID, ids=lambda g: g.id)
def test_forms_match_dense_hessian(grid: Grid) -> None:
    case = make_case(grid.act, grid.kind, grid.reduction, n=5)
    z = rademacher(case.params, 4, torch.Generator().manual_seed(3))
    assert_close(hessian_quadratic_forms(case.model, case.loss_fn, case.x, case.y, z), exact_forms(case, z))


# Model or probe variations: name → what it checks (the ids of the test below).
VARIANTS = {
    "gaussian-probes": "non-Rademacher probes on GELU/CE",
    "no-bias-and-nested": "Linear without bias, nested Sequential",
    "ce-probability-targets": "CE with probability targets",
    "activation-before-first-linear": "an activation on the inputs (no tangent yet)",
    "deep-smooth-sum": "four Linear layers, softplus, MSE sum",
}


def build_variant(name: str) -> tuple[Case, list[Tensor]]:
    gen = torch.Generator().manual_seed(7)
    if name == "gaussian-probes":
        case = make_case("gelu", LossKind.SOFTMAX_CROSS_ENTROPY, "mean", n=6)
        return case, [torch.randn(3, *p.shape, generator=gen, dtype=p.dtype) for p in case.params]
    case = make_case("tanh", LossKind.SOFTMAX_CROSS_ENTROPY, "mean", n=5)
    if name == "no-bias-and-nested":
        torch.manual_seed(1)
        inner = nn.Sequential(nn.Linear(5, 4), nn.Softplus())
        case.model = nn.Sequential(nn.Linear(3, 5, bias=False), nn.Tanh(), inner,
                                   nn.Linear(4, 3, bias=False)).double()
    elif name == "ce-probability-targets":
        case.y = torch.softmax(torch.randn(5, 3, generator=gen, dtype=torch.float64), dim=1)
    elif name == "activation-before-first-linear":
        torch.manual_seed(2)
        case.model = nn.Sequential(nn.Tanh(), nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3)).double()
    elif name == "deep-smooth-sum":
        case = make_case("softplus", LossKind.MSE, "sum", n=4, sizes=[3, 4, 5, 4, 2])
    return case, rademacher(case.params, 3, gen)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_match_dense_hessian(variant: str) -> None:
    case, z = build_variant(variant)
    assert_close(hessian_quadratic_forms(case.model, case.loss_fn, case.x, case.y, z), exact_forms(case, z))


def test_chunking_does_not_change_the_result() -> None:
    case = make_case("gelu", LossKind.MSE, "mean", n=5)
    z = rademacher(case.params, 7, torch.Generator().manual_seed(0))
    whole = TaylorQuadraticForms(case.model, case.loss_fn, case.x, case.y)(z)
    pieces = TaylorQuadraticForms(case.model, case.loss_fn, case.x, case.y, max_elements=1)(z)
    torch.testing.assert_close(pieces, whole, rtol=1e-12, atol=1e-12)


def test_float32_model_gives_float32_forms() -> None:
    case = make_case("relu", LossKind.SOFTMAX_CROSS_ENTROPY, "mean", n=5)
    want = exact_forms(case, rademacher(case.params, 2, torch.Generator().manual_seed(4)))
    model = case.model.float()
    z = rademacher(list(model.parameters()), 2, torch.Generator().manual_seed(4))
    got = hessian_quadratic_forms(model, case.loss_fn, case.x.float(), case.y, z)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", ["prelu", "maxout"], ids=lambda a: f"unsupported={a}")
def test_unsupported_modules_raise(act: str) -> None:
    case = make_case(act, LossKind.MSE)
    z = rademacher(case.params, 1, torch.Generator().manual_seed(0))
    with pytest.raises(UnsupportedModelError, match="Taylor-mode"):
        hessian_quadratic_forms(case.model, case.loss_fn, case.x, case.y, z)


def test_rademacher_probes_are_signs_with_parameter_shapes() -> None:
    params = [torch.zeros(3, 5), torch.zeros(7), torch.zeros(2, 2, dtype=torch.float64)]
    z = rademacher_probes(params, 4, torch.Generator().manual_seed(0))
    assert [v.shape for v in z] == [(4, 3, 5), (4, 7), (4, 2, 2)]
    assert [v.dtype for v in z] == [torch.float32, torch.float32, torch.float64]
    assert all(bool((v.abs() == 1).all()) for v in z)
    again = rademacher_probes(params, 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(z, again))
    big = rademacher_probes([torch.zeros(100_000)], 1, torch.Generator().manual_seed(1))[0]
    assert abs(float(big.mean())) < 0.02  # ±1 with probability ½ each (σ of the mean ≈ 0.003)
