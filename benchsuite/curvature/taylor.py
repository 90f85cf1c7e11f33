"""Hessian quadratic forms ``zᵀ H z`` by second-order Taylor mode, without a double backward.

For a probe direction ``z`` let ``θ(t) = θ + t z`` and ``φ(t) = E(θ(t))``, with ``E``
the loss module's scalar. Then ``zᵀ H z = φ''(0)``. Univariate Taylor propagation
(Griewank & Walther, "Evaluating Derivatives", 2nd ed. 2008, ch. 13) pushes the
coefficients ``(h, ḣ, ḧ)`` of every intermediate through the network:

* Linear layer ``h' = W a + b`` with probe parts ``Z, z_b`` (of ``W, b``)::

      ḣ' = W ȧ + Z a + z_b,        ḧ' = W ä + 2 Z ȧ;

* elementwise activation ``a = f(h)``::

      ȧ = f'(h) ⊙ ḣ,               ä = f'(h) ⊙ ḧ + f''(h) ⊙ ḣ²

  (``f'' = 0`` for piecewise-linear activations);

* loss, per sample ``n`` (``ℋ_n`` the output Hessian of the loss module, reduction
  included, and ``g_n = ∂E/∂h_out,n``; :mod:`benchsuite.curvature.losses`)::

      φ''(0) = Σ_n [ ḣ_out,nᵀ ℋ_n ḣ_out,n + g_nᵀ ḧ_out,n ].

The second-order coefficients enter only linearly: ``ḧ`` obeys a linear recursion whose
sources are ``2 Z_l ȧ_{l-1}`` (at the output of Linear layer ``l``) and
``f''(h) ⊙ ḣ²`` (at the output of an activation). So ``gᵀ ḧ_out`` equals the sum of
each source paired with the *adjoint* at its position, i.e. the ordinary
backpropagated gradient (the reverse sweep of a linear map, Griewank & Walther ch. 3):

    Σ_n g_nᵀ ḧ_out,n = Σ_l 2 Σ_n δ_l,nᵀ Z_l ȧ_{l-1,n} + Σ_act Σ_n ε_nᵀ (f''(h_n) ⊙ ḣ_n²),

with ``δ_l = ∂E/∂h_l`` at the output of Linear layer ``l`` and ``ε = ∂E/∂a`` at the
output of an activation. Those adjoints do not depend on ``z``: they come from one
backward pass shared by all probes. Per probe and Linear layer (``in × out``) this costs
three products of size ``N·in·out`` (``W ȧ``, ``Z a``, ``δ Z``), one for the first layer
(``ȧ_0 = 0``); a double backward (Pearlmutter 1994) costs about six.

The ``S`` probes travel together as tangents (S, N, d): ``W ȧ`` for all probes is one
matmul, ``Z a`` and ``δ Z`` are batched matmuls. With Rademacher ``z`` the mean of the
forms is Hutchinson's (1989) unbiased estimate of ``tr H``.

Supported: ``nn.Linear`` and elementwise activations without parameters (the
:mod:`~benchsuite.curvature.activations` table: ReLU, LeakyReLU, Abs, Tanh, Sigmoid,
Softplus, GELU, Identity). Anything else (PReLU's slope, Maxout, a registered custom
handler) raises :class:`~benchsuite.curvature.errors.UnsupportedModelError`, so a
caller can fall back to Hessian-vector products.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from benchsuite.curvature.chunking import DEFAULT_MAX_ELEMENTS, chunk_count, spans
from benchsuite.curvature.errors import CurvatureError, UnsupportedModelError
from benchsuite.curvature.handlers import ElementwiseHandler, LinearHandler
from benchsuite.curvature.losses import loss_curvature
from benchsuite.curvature.model import ForwardCache, SequentialModel, parsed

__all__ = ["TaylorQuadraticForms", "check_taylor_support", "hessian_quadratic_forms", "rademacher_probes"]


def rademacher_probes(params: Sequence[Tensor], k: int, generator: torch.Generator) -> list[Tensor]:
    """K Rademacher vectors (i.i.d. entries ±1) shaped like the parameters, (K, *p.shape) each.

    Eight signs per random byte: one uniform byte in [0, 256) per 8 entries, expanded by a
    (256, 8) table of ±1 (bit ``j`` of the byte set ↦ +1). Same distribution as
    :func:`benchsuite.curvature.linalg.rademacher` (a different stream), with an eighth of
    its random draws and an int64 index per byte instead of per entry.
    """
    p0 = params[0]
    total = k * sum(p.numel() for p in params)
    nbytes = -(-total // 8)
    bits = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=generator, device=p0.device)  # (B,)
    codes = torch.arange(256, device=p0.device)[:, None]  # (256, 1)
    table = ((codes >> torch.arange(8, device=p0.device)) & 1).to(p0.dtype) * 2 - 1  # (256, 8)
    flat = torch.nn.functional.embedding(bits.long(), table).view(-1)[:total]  # (B, 8) → (K·P,)
    out, start = [], 0
    for p in params:
        size = k * p.numel()
        out.append(flat[start:start + size].view(k, *p.shape).to(p.dtype))
        start += size
    return out


def check_taylor_support(net: SequentialModel) -> None:
    """Raise :class:`UnsupportedModelError` unless Taylor mode supports every module.

    Supported: ``nn.Linear`` and elementwise activations without parameters.

    Args:
        net: A parsed model.

    Raises:
        UnsupportedModelError: naming the first unsupported module (e.g. PReLU, Maxout).
    """
    for m, handler in zip(net.modules, net.handlers):
        ok = type(handler) is LinearHandler or type(handler) is ElementwiseHandler
        if not ok:
            raise UnsupportedModelError(
                f"Taylor-mode Hessian quadratic forms do not support {type(m).__name__}. "
                "Supported: Linear and elementwise activations without parameters "
                "(use Hessian-vector products instead)"
            )


class TaylorQuadraticForms:
    """``z ↦ zᵀ H z`` on one mini-batch, with the forward pass and adjoints cached.

    The constructor runs the forward pass and one backward pass of the loss gradient
    (the adjoints ``δ_l = ∂E/∂h_l`` at Linear outputs and ``ε = ∂E/∂a`` at the outputs
    of activations with ``f'' ≠ 0``); every call then costs only the tangent sweep.
    Build a new object after the parameters change.

    Args:
        model: ``nn.Sequential`` (or a parsed :class:`SequentialModel`).
        loss_fn: Torch loss module (MSE, CE, BCEWithLogits; mean or sum).
        x: Inputs (N, D_in).
        y: Targets.
        max_elements: Bound on one chunk of (S, N, d) tangents; results do not depend on it.

    Raises:
        UnsupportedModelError: see :func:`check_taylor_support`.
        UnsupportedLossError: for an unsupported loss module or option.
    """

    def __init__(self, model: nn.Module | SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor,
                 *, max_elements: int = DEFAULT_MAX_ELEMENTS):
        net = parsed(model)
        check_taylor_support(net)
        self.net = net
        self.cache: ForwardCache = net.forward(x)
        self.curvature = loss_curvature(loss_fn, self.cache.output, y)
        self.max_elements = max_elements
        widths = [a.shape[1] for a in self.cache.inputs] + [self.cache.output.shape[1]]
        self._per_vector = 3 * self.cache.num_samples * max(widths)  # ȧ, ḣ and δZ of one probe
        self._first = min(net.linear_indices)
        self.adjoints = self._adjoints(y)

    def _adjoints(self, y: Tensor) -> dict[int, Tensor]:
        """``∂E/∂(output of module i)`` (N, d) where a second-order source sits.

        Needed at Linear layers above the first (source ``2 Z ȧ``) and at activations with
        ``f'' ≠ 0`` above the first Linear layer (source ``f''(h) ⊙ ḣ²``).
        """
        net, cache = self.net, self.cache
        s = self.curvature.gradient(y)  # (N, C): ∂E/∂h_out
        out: dict[int, Tensor] = {}
        with torch.no_grad():
            for i in range(len(net.modules) - 1, self._first, -1):
                handler = net.handlers[i]
                if handler.is_linear or net.d2f(cache, i) is not None:
                    out[i] = s  # (N, d_out of module i)
                if i - 1 > self._first:
                    s = handler.vjp(net, cache, i, s)  # (N, d_in)
        return out

    def __call__(self, vectors: Sequence[Tensor]) -> Tensor:
        """``z_sᵀ H z_s`` for S probes given as one tensor (S, *param.shape) per parameter.

        Returns:
            The S quadratic forms (S,), in the parameters' dtype.
        """
        s = vectors[0].shape[0]
        size = chunk_count(self.max_elements, self._per_vector, s)
        if size >= s:
            return self._forms(vectors)
        return torch.cat([self._forms([v[a:b] for v in vectors]) for a, b in spans(s, size)])

    def _forms(self, vectors: Sequence[Tensor]) -> Tensor:
        # Tangents are laid out (N, S, d), sample-major, so that ``Z a`` for all probes is
        # one matmul ``a (N, in) · [Z_1; …; Z_S]ᵀ (in, S·out)`` and ``W ȧ`` is one matmul
        # on (N·S, in) rows, both without copies.
        net, cache = self.net, self.cache
        dtype = cache.output.dtype
        k = vectors[0].shape[0]
        n = cache.num_samples
        q = torch.zeros(k, dtype=dtype, device=cache.output.device)  # (S,)
        t: Tensor | None = None  # ḣ or ȧ at the current module's output, (N, S, d)
        with torch.no_grad():
            for i, (m, handler) in enumerate(zip(net.modules, net.handlers)):
                if handler.is_linear:
                    own = [vectors[j].to(dtype) for j in net.module_params[i]]
                    z_w = own[0]  # (S, out, in)
                    d_out, d_in = z_w.shape[1:]
                    a = cache.inputs[i]  # (N, in)
                    h_dot = a @ z_w.reshape(k * d_out, d_in).T  # Z a: (N, S·out)
                    if t is not None:
                        t_rows = t.reshape(n, k * d_in)  # (N, S·in)
                        # Σ_n δ_nᵀ Z ȧ_n = ⟨Z, δᵀ ȧ⟩_F per probe: one matmul for all S
                        dta = (self.adjoints[i].T @ t_rows).view(d_out, k, d_in)  # (out, S, in): δᵀ ȧ_s
                        cross = torch.linalg.vecdot(dta, z_w.transpose(0, 1), dim=2).sum(0)  # (S,)
                        q = q + 2 * cross
                        h_dot = torch.addmm(h_dot.view(n * k, d_out), t_rows.view(n * k, d_in),
                                            m.weight.T)  # + W ȧ: (N·S, out)
                    h_dot = h_dot.view(n, k, d_out)  # (N, S, out)
                    if m.bias is not None:
                        h_dot.add_(own[1])  # + z_b, (S, out) broadcast over N
                    t = h_dot
                else:
                    if t is None:
                        continue  # no tangent below the first Linear layer
                    f2 = net.d2f(cache, i)  # (N, d) or None (piecewise linear)
                    if f2 is not None:
                        w = (self.adjoints[i] * f2)[:, None, :]  # (N, 1, d): ε ⊙ f''(h)
                        q = q + (w * t * t).sum((0, 2))
                    t = t.mul_(net.df(cache, i)[:, None, :])  # ȧ = f'(h) ⊙ ḣ in place, (N, S, d)
            if t is None:
                raise CurvatureError("No parameter reaches the logits: nothing to differentiate")
            u = t.transpose(0, 1)  # (S, N, C) view
            hu = self.curvature.hessian_product(u)  # (S, N, C): ℋ_n ḣ_out,n
            q = q + (u * hu).sum((1, 2))
        return q


def hessian_quadratic_forms(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    vectors: Sequence[Tensor],
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """``z_sᵀ H z_s`` for S probes by second-order Taylor mode (no backward pass through ``z``).

    ``zᵀ H z = φ''(0)`` for ``φ(t) = E(θ + t z)`` (Griewank & Walther 2008, Taylor mode);
    see the module docstring for the propagation rules and the adjoint form of the
    ``g·ḧ`` term. With Rademacher probes the mean is Hutchinson's (1989) estimate of
    ``tr H``.

    Args:
        model: ``nn.Sequential`` of Linear layers and parameter-free elementwise activations.
        loss_fn: Torch loss module (MSE, CE, BCEWithLogits; mean or sum).
        x: Inputs (N, D_in).
        y: Targets.
        vectors: One tensor per parameter (``list(model.parameters())`` order), shaped
            (S, *param.shape).
        max_elements: Bound on one chunk of (S, N, d) tangents.

    Returns:
        The quadratic forms (S,).

    Raises:
        UnsupportedModelError: for PReLU, Maxout or another unsupported module.
    """
    return TaylorQuadraticForms(model, loss_fn, x, y, max_elements=max_elements)(vectors)
