"""Gauss-Newton-vector and Hessian-vector products that never materialise a Jacobian.

GN-vector product (Schraudolph 2002; Martens 2010, "Hessian-free"):

    G v = Σ_n J_nᵀ ℋ_n J_n v,

with ``ℋ_n`` the output Hessian of the torch loss module (reduction included, see
:mod:`benchsuite.curvature.losses`). It is computed in three passes: a forward-mode
Jacobian-vector product ``u = J v`` (tangents pushed through the cached forward pass,
two matmuls per Linear layer), ``ℋ u`` per sample, and a reverse-mode product
``Jᵀ(ℋ u)`` (a backward pass with matmuls). All ``K`` vectors of a call share the
forward pass and travel as one batch (K, N, ·) through the layers, so the cost is
about two gradients for one vector and grows sub-linearly with K.

The Hessian-vector product uses reverse-over-reverse autodiff (Pearlmutter 1994):
``H v = ∇_θ(∇_θ E · v)`` (``torch.func.vjp`` of ``torch.func.grad``).
:class:`HessianOperator` is its cached form for many products at the same parameters:
the forward pass and the gradient graph are built once and every product is one
double backward through them (K vectors batched with ``is_grads_batched``).

Vectors are lists of tensors shaped like ``list(model.parameters())``; the
``*_matrix_product`` forms take tensors with a leading axis of K vectors. Flat
helpers convert to and from one vector in ``parameters_to_vector`` order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from benchsuite.curvature.chunking import DEFAULT_MAX_ELEMENTS, chunk_count, spans
from benchsuite.curvature.losses import loss_curvature
from benchsuite.curvature.model import SequentialModel, parsed

__all__ = [
    "GGNOperator",
    "HessianOperator",
    "flatten_vectors",
    "ggn_matrix_product",
    "ggn_vector_product",
    "ggn_vector_product_autodiff",
    "hessian_matrix_product",
    "hessian_vector_product",
    "unflatten_vector",
]

log = logging.getLogger(__name__)


def flatten_vectors(vectors: Sequence[Tensor], batched: bool = False) -> Tensor:
    """Concatenate parameter-shaped tensors into (P,) or, if ``batched``, (K, P)."""
    if batched:
        return torch.cat([v.reshape(v.shape[0], -1) for v in vectors], dim=1)  # (K, P)
    return torch.cat([v.reshape(-1) for v in vectors])  # (P,)


def unflatten_vector(flat: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Split (P,) or (K, P) into tensors shaped like ``params`` (with the leading K)."""
    lead = flat.shape[:-1]
    out, start = [], 0
    for p in params:
        out.append(flat[..., start : start + p.numel()].reshape(*lead, *p.shape))
        start += p.numel()
    return out


class _ChunkedOperator:
    """A curvature operator ``V ↦ C V`` whose K vectors go in chunks of bounded memory.

    Subclasses set ``max_elements`` and ``_per_vector`` (elements one vector's product
    holds at once) and implement ``_matmat`` for one chunk; results do not depend on the
    chunking.
    """

    max_elements: int
    _per_vector: int

    def _matmat(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        raise NotImplementedError

    def matmat(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """``C v_k`` for tensors shaped (K, *param.shape), one per parameter."""
        k = vectors[0].shape[0]
        size = chunk_count(self.max_elements, self._per_vector, k)
        if size >= k:
            return self._matmat(vectors)
        parts = [self._matmat([v[k0:k1] for v in vectors]) for k0, k1 in spans(k, size)]
        return [torch.cat(chunks) for chunks in zip(*parts)]

    def matvec(self, vector: Sequence[Tensor]) -> list[Tensor]:
        """``C v`` for one vector shaped like the parameters."""
        return [c[0] for c in self.matmat([v[None] for v in vector])]


class GGNOperator(_ChunkedOperator):
    """``V ↦ G V`` on one mini-batch with the forward pass and output Hessian cached.

    Hessian-free's CG calls the product tens of times at the same parameters; caching
    the forward pass (module inputs, activation derivatives, ℋ) leaves two passes
    per product: the JVP and the backward propagation. Build a new operator after the
    parameters change.

    Args:
        model: ``nn.Sequential`` (or a parsed :class:`SequentialModel`).
        loss_fn: Torch loss module.
        x: Inputs (N, D_in).
        y: Targets.
        max_elements: Bound on one chunk of (K, N, d) tangents; results do not depend on it.
    """

    def __init__(self, model: nn.Module | SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor,
                 *, max_elements: int = DEFAULT_MAX_ELEMENTS):
        self.net = parsed(model)
        self.cache = self.net.forward(x)
        self.curvature = loss_curvature(loss_fn, self.cache.output, y)
        widths = [a.shape[1] for a in self.cache.inputs] + [self.cache.output.shape[1]]
        self._per_vector = self.cache.num_samples * max(widths)  # elements of one (N, d) tangent
        self.max_elements = max_elements

    def _matmat(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        net, cache = self.net, self.cache
        u = net.jvp(cache, vectors)  # (K, N, C)
        hu = self.curvature.hessian_product(u)  # (K, N, C)
        out: list[Tensor | None] = [None] * len(net.params)

        def visit(i: int, s: Tensor) -> None:
            for j, g in zip(net.module_params[i], net.param_grads(cache, i, s)):
                out[j] = g

        net.backprop(cache, hu, visit)
        return [o if o is not None else torch.zeros_like(v) for o, v in zip(out, vectors)]



class HessianOperator(_ChunkedOperator):
    """``V ↦ H V`` on one mini-batch with the forward pass and the gradient graph kept.

    ``H v = ∇_θ(∇_θ E · v)`` (Pearlmutter 1994): the loss ``E`` and its gradient
    ``g = ∇_θ E`` are computed once with ``create_graph=True``; each product is the
    double backward ``∂(g · v)/∂θ`` through that retained graph; on an accelerator K
    vectors go at once by ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap
    over the backward), in chunks whose activations stay within ``max_elements``; on a
    CPU, where batching saves nothing, one at a time. The parameters are detached
    leaf copies, so no ``.grad`` is written. Build a new operator after the parameters
    change; drop it to free the graph.

    Args:
        model: ``nn.Sequential`` (or a parsed :class:`SequentialModel`).
        loss_fn: Torch loss module.
        x: Inputs (N, D_in).
        y: Targets.
        max_elements: Bound on one chunk's activations; results do not depend on it.
    """

    def __init__(self, model: nn.Module | SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor,
                 *, max_elements: int = DEFAULT_MAX_ELEMENTS):
        net = parsed(model)
        self.params = [p.detach().requires_grad_(True) for p in net.params]
        names = [n for n, _ in net.model.named_parameters()]
        with torch.enable_grad():
            self.loss = loss_fn(torch.func.functional_call(net.model, dict(zip(names, self.params)), (x,)), y)
            grads = torch.autograd.grad(self.loss, self.params, create_graph=True, allow_unused=True)
        # gradients that do not depend on θ (a loss linear in them) have zero Hessian rows
        self._live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self._grads = [grads[i] for i in self._live]
        #: ``∇_θ E`` (detached), shaped like the parameters: free with the graph (a good Lanczos start)
        self.gradient = [g.detach() if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params)]
        widths = sum(net.modules[i].weight.shape[0] for i in net.linear_indices)
        per_vector = sum(p.numel() for p in self.params) + 2 * x.shape[0] * widths  # one vmapped VJP
        self._per_vector = per_vector
        self.max_elements = max_elements
        # On a CPU a vmapped product costs as much as its vectors one by one, plus vmap's
        # overhead (measured 1.06-1.16x on one thread): batch only on accelerators.
        self._batched = x.device.type != "cpu"

    def _matmat(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        k = vectors[0].shape[0]
        vs = [vectors[i].detach().to(self.params[i].dtype) for i in self._live]
        if not self._grads:
            return [torch.zeros_like(v) for v in vectors]
        if k > 1 and self._batched:
            try:
                with torch.enable_grad():
                    hv = torch.autograd.grad(self._grads, self.params, vs, retain_graph=True,
                                             allow_unused=True, is_grads_batched=True)
                return [h.detach() if h is not None else torch.zeros_like(v) for h, v in zip(hv, vectors)]
            except (RuntimeError, NotImplementedError) as exc:  # an op without a batching rule
                log.debug("batched Hessian products unavailable (%s); one vector at a time", exc)
                self._batched = False
        cols = []
        with torch.enable_grad():
            for j in range(k):
                hv = torch.autograd.grad(self._grads, self.params, [v[j] for v in vs], retain_graph=True,
                                         allow_unused=True)
                cols.append([h.detach() if h is not None else torch.zeros_like(p) for h, p in zip(hv, self.params)])
        return [torch.stack(c) for c in zip(*cols)]



def ggn_matrix_product(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    vectors: Sequence[Tensor],
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> list[Tensor]:
    """``G V`` for K vectors at once: ``Σ_n J_nᵀ ℋ_n J_n v_k``.

    Args:
        model: ``nn.Sequential`` (or a parsed :class:`SequentialModel`).
        loss_fn: Torch loss module (MSE, CE, BCEWithLogits; mean or sum).
        x: Inputs (N, D_in).
        y: Targets.
        vectors: One tensor per parameter, shaped (K, *param.shape).
        max_elements: Bound on one chunk of (K, N, d) tangents.

    Returns:
        ``G v_k`` in the same layout, (K, *param.shape) per parameter.
    """
    return GGNOperator(model, loss_fn, x, y, max_elements=max_elements).matmat(vectors)


def ggn_vector_product(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    vector: Sequence[Tensor],
) -> list[Tensor]:
    """``G v = Σ_n J_nᵀ ℋ_n J_n v`` for one vector shaped like the parameters."""
    return [g[0] for g in ggn_matrix_product(model, loss_fn, x, y, [v[None] for v in vector])]


def ggn_vector_product_autodiff(
    model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, vector: Sequence[Tensor]
) -> list[Tensor]:
    """``G v`` for any differentiable model via ``torch.func.jvp`` and ``torch.func.vjp``.

    A generic (slower) path: forward-mode ``J v`` and reverse-mode ``Jᵀ(ℋ J v)`` with
    ``ℋ`` from the loss module, for models the structured engine does not parse.
    """
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for _, p in model.named_parameters())

    def logits_of(*ps: Tensor) -> Tensor:
        return torch.func.functional_call(model, dict(zip(names, ps)), (x,))

    logits, vjp_fn = torch.func.vjp(logits_of, *params)
    _, u = torch.func.jvp(logits_of, params, tuple(v.detach() for v in vector))  # (N, C)
    hu = loss_curvature(loss_fn, logits, y).hessian_product(u)  # (N, C)
    return list(vjp_fn(hu))


def hessian_matrix_product(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    vectors: Sequence[Tensor],
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> list[Tensor]:
    """``H V`` for K vectors (K, *param.shape) by reverse-over-reverse autodiff.

    ``H v = Hᵀ v`` is the vector-Jacobian product of ``θ ↦ ∇_θ E`` (``torch.func.vjp``
    of ``torch.func.grad``; the gradient graph is built once), vectorised over the K
    vectors with ``torch.func.vmap``, in chunks whose activations and parameter-sized
    buffers stay within ``max_elements``. No ``.grad`` is written.
    """
    net = parsed(model)
    widths = sum(net.modules[i].weight.shape[0] for i in net.linear_indices)
    per_vector = sum(p.numel() for p in net.params) + 2 * x.shape[0] * widths  # one vmapped VJP
    chunk_size = chunk_count(max_elements, per_vector, vectors[0].shape[0])
    names = [n for n, _ in net.model.named_parameters()]
    params = tuple(p.detach() for p in net.params)

    def loss_of(ps: tuple[Tensor, ...]) -> Tensor:
        return loss_fn(torch.func.functional_call(net.model, dict(zip(names, ps)), (x,)), y)

    _, vjp_fn = torch.func.vjp(torch.func.grad(loss_of), params)
    vs = tuple(v.detach() for v in vectors)
    if vs[0].shape[0] == 1:
        return [h[None] for h in vjp_fn(tuple(v[0] for v in vs))[0]]
    return list(torch.func.vmap(lambda *v: vjp_fn(v)[0], chunk_size=chunk_size)(*vs))


def hessian_vector_product(
    model: nn.Module | SequentialModel,
    loss_fn: nn.Module,
    x: Tensor,
    y: Tensor,
    vector: Sequence[Tensor],
) -> list[Tensor]:
    """``H v = ∇_θ(∇_θ E · v)`` for one vector shaped like the parameters."""
    return [h[0] for h in hessian_matrix_product(model, loss_fn, x, y, [v[None] for v in vector])]
