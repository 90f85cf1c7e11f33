"""Kronecker factors of the per-layer Gauss-Newton blocks: KFRA, KFLR and KFAC.

For Linear layer ``l`` (``h = W ā``, ``ā = [a; 1]`` homogeneous, ``W = [W̃ b]``) the
exact GN block is ``Σ_n (ā_n ā_nᵀ) ⊗ 𝒢_{l,n}`` (Botev, Ritter & Barber, ICML 2017)
with ``𝒢_{l,n}`` the per-sample pre-activation GN *including the loss scale* (so
for ``reduction="mean"`` each ``𝒢_{l,n}`` carries a ``1/N``). It is approximated by

    Q̄ ⊗ Ḡ,   Q̄ = (1/N) Σ_n ā_n ā_nᵀ   ((in+1) × (in+1), "mean over samples"),
              Ḡ = Σ_n 𝒢_{l,n}          (out × out),

so at N = 1 the product is the exact block, for ``reduction="mean"`` ``Ḡ`` is the
average unit-loss pre-activation GN, and for ``reduction="sum"`` it carries the
factor N. Variants differ in ``Ḡ``:

* **KFLR** (exact): ``Ḡ = Σ_n C_{l,n} C_{l,n}ᵀ`` with the backpropagated square roots
  ``C_{l,n} = B_{l,n} W̃_{l+1}ᵀ C_{l+1,n}`` (one batched matmul per layer).
* **KFRA** (recursive): ``Ḡ_L = Σ_n ℋ_n``,
  ``Ḡ_l = (W̃_{l+1}ᵀ Ḡ_{l+1} W̃_{l+1}) ⊙ (1/N) Σ_n f'(h_n) f'(h_n)ᵀ``; for maxout the
  selection ``Sᵀ(·)S`` gives ``M[a//k, b//k] · (1/N) Σ_n m_n m_nᵀ`` with ``m_n`` the
  0/1 selection mask. Cost independent of the output size.
* **KFAC** (Martens & Grosse 2015): ``Ḡ = Σ_n Σ_m g g ᵀ`` with ``M`` columns sampled
  from the model's predictive distribution (scaled by ``1/√M``, unbiased for KFLR).

Kronecker ordering: with column-major ``vec([W b])`` the block is ``Q̄ ⊗ Ḡ``; with
torch's row-major flattening of ``[W b]`` (out, in+1) it is ``Ḡ ⊗ Q̄``.
:meth:`KroneckerFactors.dense` returns the block in *parameter order*
``[W.flatten(), b]`` (as in ``parameters_to_vector``). Biases: homogeneous
coordinates; a Linear layer without bias has ``Q̄ = (1/N) Σ a aᵀ`` (in × in).
PReLU slopes are not in any Linear block (use their exact GN diagonal).

Inverting a block with factored Tikhonov damping γ (Martens & Grosse 2015, §6.3;
Botev et al. 2017) uses :meth:`KroneckerFactors.damped_inverses`:

    (Q̄ ⊗ Ḡ + γ I)⁻¹ ≈ (Q̄ + π√γ I)⁻¹ ⊗ (Ḡ + (√γ/π) I)⁻¹,
    π = √( (tr Q̄ / dim Q̄) / (tr Ḡ / dim Ḡ) ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchsuite.curvature.chunking import DEFAULT_MAX_ELEMENTS
from benchsuite.curvature.columns import backprop_sqrt
from benchsuite.curvature.losses import loss_curvature
from benchsuite.curvature.model import ForwardCache, SequentialModel, parsed

__all__ = ["KroneckerFactors", "damped_inverse", "input_factor", "kfac", "kflr", "kfra"]


def damped_inverse(a: Tensor, shift: float) -> Tensor:
    """``(sym(a) + shift·I)⁻¹`` by Cholesky, retried in float64, then by a clamped eigendecomposition.

    ``sym(a) = (a + aᵀ)/2``. If both Cholesky attempts fail (``a`` indefinite beyond
    the shift), the eigenvalues of ``sym(a) + shift·I`` are clamped below at ``shift``
    (``1e-12`` for a zero shift) before inverting.

    Args:
        a: A square matrix (d, d), symmetric up to rounding.
        shift: The damping added to the diagonal.

    Returns:
        The inverse (d, d), in the dtype of ``a``.

    Raises:
        FloatingPointError: if ``a`` has non-finite entries (a diverged run).
    """
    if not bool(torch.isfinite(a).all()):
        raise FloatingPointError("non-finite Kronecker factor")
    a = 0.5 * (a + a.T)
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    for dtype in (a.dtype, torch.float64):
        m = (a + shift * eye).to(dtype)
        chol, info = torch.linalg.cholesky_ex(m)
        if int(info) == 0:
            return torch.cholesky_inverse(chol).to(a.dtype)
    evals, evecs = torch.linalg.eigh((a + shift * eye).double())
    evals = evals.clamp_min(shift if shift > 0 else 1e-12)
    return ((evecs / evals) @ evecs.T).to(a.dtype)


@dataclass(frozen=True)
class KroneckerFactors:
    """Factors of one Linear layer's GN block ``≈ Q̄ ⊗ Ḡ`` (column-major vec of [W b]).

    Attributes:
        name: ``layer{i}``.
        input: ``Q̄`` ((in+1) × (in+1) with bias, last row/column the homogeneous 1).
        output: ``Ḡ`` (out × out).
        has_bias: Whether the layer has a bias (and ``Q̄`` the homogeneous coordinate).
    """

    name: str
    input: Tensor  # (in+1, in+1)
    output: Tensor  # (out, out)
    has_bias: bool

    def pi(self) -> float:
        """``π = √((tr Q̄/dim Q̄) / (tr Ḡ/dim Ḡ))`` (Martens & Grosse 2015, §6.3); 1 if degenerate.

        It splits the damping so that both damped factors carry the same relative
        shift: ``(π√γ)/(tr Q̄/dim Q̄) = (√γ/π)/(tr Ḡ/dim Ḡ)``. Degenerate (a zero or
        non-finite mean eigenvalue): 1.
        """
        q, g = self.input, self.output
        tq, tg = float(torch.trace(q)) / q.shape[0], float(torch.trace(g)) / g.shape[0]
        if not (tq > 0 and tg > 0 and math.isfinite(tq) and math.isfinite(tg)):
            return 1.0
        return math.sqrt(tq / tg)

    def damped_inverses(self, damping: float) -> tuple[Tensor, Tensor]:
        """``((Q̄ + π√γ I)⁻¹, (Ḡ + (√γ/π) I)⁻¹)`` for damping ``γ = damping`` (factored Tikhonov).

        Their Kronecker product approximates ``(Q̄ ⊗ Ḡ + γ I)⁻¹``; a layer's step is
        ``Δ = (Ḡ + (√γ/π) I)⁻¹ ∇[W b] (Q̄ + π√γ I)⁻¹`` (Botev et al. 2017, eq. 17).

        Raises:
            FloatingPointError: if a factor has non-finite entries.
        """
        pi, root = self.pi(), math.sqrt(damping)
        return damped_inverse(self.input, pi * root), damped_inverse(self.output, root / pi)

    def dense(self) -> Tensor:
        """The dense block in parameter order ``[W.flatten(), b]`` (P × P)."""
        full = torch.kron(self.output, self.input)  # row-major vec of [W b]
        out, inp = self.output.shape[0], self.input.shape[0]
        if not self.has_bias:
            return full
        idx = torch.arange(out * inp, device=full.device).reshape(out, inp)  # (out, in+1)
        perm = torch.cat([idx[:, :-1].reshape(-1), idx[:, -1]])  # W entries, then b
        return full[perm][:, perm]


def input_factor(a: Tensor, bias: bool = True) -> Tensor:
    """``Q̄ = (1/N) Σ_n ā_n ā_nᵀ`` with ``ā = [a; 1]`` if ``bias`` ((in+1) × (in+1))."""
    if bias:
        a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1)  # (N, in+1)
    return a.T @ a / a.shape[0]


def _factors(net: SequentialModel, cache: ForwardCache, out: dict[int, Tensor]) -> list[KroneckerFactors]:
    res = []
    for k, i in enumerate(net.linear_indices):
        m = net.modules[i]
        has_bias = m.bias is not None
        res.append(KroneckerFactors(f"layer{k}", input_factor(cache.inputs[i], has_bias), out[i], has_bias))
    return res


def _sqrt_factors(net, loss_fn, x, y, mc_samples, generator, max_elements) -> list[KroneckerFactors]:
    cache = net.forward(x)
    lc = loss_curvature(loss_fn, cache.output, y)
    out: dict[int, Tensor] = {i: 0 for i in net.linear_indices}

    def visit(i: int, s: Tensor) -> None:  # (K, N, d)
        if i in out:  # Linear layers only
            flat = s.reshape(-1, s.shape[-1])  # (K·N, d)
            out[i] = out[i] + flat.T @ flat

    def top_diagonal(i: int, c: Tensor) -> None:  # (N, C)
        out[i] = out[i] + torch.diag((c * c).sum(0))

    with torch.no_grad():
        backprop_sqrt(net, cache, lc, visit, top_diagonal, mc_samples=mc_samples, generator=generator,
                      max_elements=max_elements)
        return _factors(net, cache, out)


def kflr(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> list[KroneckerFactors]:
    """KFLR factors per Linear layer: ``Ḡ = Σ_n C_{l,n} C_{l,n}ᵀ`` (Botev et al. 2017)."""
    return _sqrt_factors(parsed(model), loss_fn, x, y, None, None, max_elements)


def kfac(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> list[KroneckerFactors]:
    """KFAC factors per Linear layer with ``mc_samples`` sampled columns (Martens & Grosse 2015).

    ``E[Ḡ_KFAC] = Ḡ_KFLR``.
    """
    return _sqrt_factors(parsed(model), loss_fn, x, y, mc_samples, generator, max_elements)


def kfra(model: nn.Module | SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor) -> list[KroneckerFactors]:
    """KFRA factors per Linear layer by the recursion of Botev et al. (2017), eq. (12).

    ``Ḡ_L = Σ_n ℋ_n`` then, going down, ``Ḡ ← W̃ᵀ Ḡ W̃`` through a Linear layer and
    ``Ḡ ← Ḡ ⊙ (1/N) Σ_n f'_n f'_nᵀ`` through an elementwise activation (maxout:
    ``Ḡ[a//k, b//k] ⊙ (1/N) Σ_n m_n m_nᵀ``), each step by the module's handler.
    Exact at N = 1 and for the top layer.
    """
    net = parsed(model)
    with torch.no_grad():
        cache = net.forward(x)
        lc = loss_curvature(loss_fn, cache.output, y)
        d = lc.diagonal
        if d is not None:
            g = torch.diag((d * d).sum(0))  # (C, C)
        else:
            p = lc.probs  # (N, C)
            g = lc.scale * (torch.diag(p.sum(0)) - p.T @ p)  # (C, C)
        out: dict[int, Tensor] = {}
        linear, first = set(net.linear_indices), net.linear_indices[0]
        for i in range(len(net.modules) - 1, first - 1, -1):
            if i in linear:
                out[i] = g
            if i > first:
                g = net.kfra_step(cache, i, g)  # Ḡ at the module's input
        return _factors(net, cache, out)
