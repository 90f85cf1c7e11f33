"""Factored Tikhonov damping on KroneckerFactors: π, the damped inverses, and their fallbacks (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from benchsuite.curvature import KroneckerFactors, damped_inverse


def _psd(d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    a = torch.randn(d, 2 * d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return scale * a @ a.T / (2 * d)  # (d, d)


def _factors(q_scale: float = 1.0, g_scale: float = 1.0) -> KroneckerFactors:
    return KroneckerFactors("layer0", input=_psd(4, 0, q_scale), output=_psd(3, 1, g_scale), has_bias=True)


@pytest.mark.parametrize("damping", [1e-3, 0.5], ids=lambda g: f"gamma={g}")
@pytest.mark.parametrize("scales", [(1.0, 1.0), (100.0, 1e-3)], ids=["balanced", "unbalanced"])
def test_damped_inverses_are_the_inverse_of_the_damped_kronecker_product(damping, scales):
    f = _factors(*scales)
    q_inv, g_inv = f.damped_inverses(damping)
    pi, root = f.pi(), math.sqrt(damping)
    q_d = f.input + pi * root * torch.eye(4, dtype=torch.float64)
    g_d = f.output + root / pi * torch.eye(3, dtype=torch.float64)
    dense = torch.kron(q_d, g_d)  # (12, 12), column-major vec of [W b]
    torch.testing.assert_close(torch.kron(q_inv, g_inv), torch.linalg.inv(dense), rtol=1e-10, atol=1e-12)
    # The layer step Ḡ_d⁻¹ V Q̄_d⁻¹ solves (Ḡ_d ⊗ Q̄_d) vec_row(Δ) = vec_row(V).
    v = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)  # (out, in+1)
    step = g_inv @ v @ q_inv
    torch.testing.assert_close(torch.kron(g_d, q_d) @ step.reshape(-1), v.reshape(-1), rtol=1e-10, atol=1e-12)


def test_pi_balances_the_relative_damping_of_both_factors():
    f = _factors(100.0, 1e-3)
    pi, root = f.pi(), math.sqrt(1e-2)
    mean_q, mean_g = float(f.input.trace()) / 4, float(f.output.trace()) / 3
    assert pi * root / mean_q == pytest.approx(root / pi / mean_g, rel=1e-12)
    assert pi == pytest.approx(math.sqrt(mean_q / mean_g), rel=1e-12) and pi > 10


@pytest.mark.parametrize("q, g", [
    (torch.eye(2), torch.zeros(3, 3)),
    (torch.zeros(2, 2), torch.eye(3)),
    (torch.full((2, 2), math.inf), torch.eye(3)),
    (torch.eye(2), torch.full((3, 3), math.nan)),
], ids=["G=0", "Q=0", "Q=inf", "G=nan"])
def test_pi_is_one_when_degenerate(q, g):
    assert KroneckerFactors("layer0", input=q, output=g, has_bias=False).pi() == 1.0


def test_damped_inverse_symmetrises():
    a = torch.tensor([[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    expected = torch.linalg.inv(torch.tensor([[2.5, 0.5], [0.5, 2.5]], dtype=torch.float64))
    torch.testing.assert_close(damped_inverse(a, 0.5), expected, rtol=1e-12, atol=1e-14)


def test_damped_inverse_clamps_an_indefinite_matrix():
    """Cholesky fails in both precisions; eigenvalues of sym(a) + shift·I are clamped at shift."""
    a = torch.diag(torch.tensor([-1.0, 2.0], dtype=torch.float32))
    got = damped_inverse(a, 0.5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.diag(torch.tensor([1 / 0.5, 1 / 2.5])), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_damped_inverse_refuses_non_finite(bad):
    a = torch.eye(3)
    a[1, 2] = bad
    with pytest.raises(FloatingPointError, match="non-finite"):
        damped_inverse(a, 1e-3)
    with pytest.raises(FloatingPointError):
        KroneckerFactors("layer0", input=torch.eye(2), output=a, has_bias=False).damped_inverses(1e-3)
