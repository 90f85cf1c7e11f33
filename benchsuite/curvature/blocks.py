"""Dense curvature matrices by ``torch.func`` (small models: tests, block checks).

``dense_hessian`` is ``torch.func.hessian`` of the loss as a function of the flat
parameter vector (``parameters_to_vector`` order); ``dense_ggn`` is
``Σ_n J_nᵀ ℋ_n J_n`` with ``J`` from ``torch.func.jacrev`` of the logits and ``ℋ_n``
from :mod:`benchsuite.curvature.losses`. The per-block forms restrict both to the
parameters of one :class:`~benchsuite.curvature.model.ParamBlock` (a Linear layer's
``[W.flatten(), b]`` or a PReLU slope), holding the others fixed. Memory is
``O(N·C·P + P²)``: meant for blocks up to a few thousand parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from benchsuite.curvature.chunking import DEFAULT_MAX_ELEMENTS, chunk_count
from benchsuite.curvature.errors import CurvatureError, choices
from benchsuite.curvature.losses import loss_curvature
from benchsuite.curvature.model import ParamBlock, SequentialModel, parsed

__all__ = ["dense_ggn", "dense_hessian", "layer_ggn_block", "layer_hessian_block"]


def _functional(
    model: nn.Module, indices: Sequence[int]
) -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor]:
    """``f(flat, x) -> logits`` with the parameters ``indices`` replaced by ``flat``."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    shapes = [params[i].shape for i in indices]
    sizes = [params[i].numel() for i in indices]

    def f(flat: Tensor, x: Tensor) -> Tensor:
        chosen = dict(zip([names[i] for i in indices],
                          [t.reshape(s) for t, s in zip(torch.split(flat, sizes), shapes)]))
        full = {n: chosen.get(n, p) for n, p in zip(names, params)}
        return torch.func.functional_call(model, full, (x,))

    flat0 = torch.cat([params[i].reshape(-1) for i in indices])
    return f, flat0


def _indices(model: nn.Module, block: ParamBlock | None) -> list[int]:
    return list(range(len(list(model.parameters())))) if block is None else list(block.param_indices)


def dense_hessian(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor,
                  block: ParamBlock | None = None, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Dense Hessian (P, P) of ``loss_fn(model(x), y)`` (or of one block).

    Reverse-over-reverse: the Jacobian of ``∇_θ E``, ``max_elements // P`` rows at a time.
    """
    f, flat0 = _functional(model, _indices(model, block))
    p = flat0.numel()
    grad = torch.func.grad(lambda t: loss_fn(f(t, x), y))
    return torch.func.jacrev(grad, chunk_size=chunk_count(max_elements, p, p))(flat0)  # (P, P)


def dense_ggn(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor,
              block: ParamBlock | None = None, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Dense GN matrix ``Σ_n J_nᵀ ℋ_n J_n`` (P, P) (or of one block).

    The logit Jacobian (N, C, P) is built ``max_elements // P`` logit rows at a time.
    """
    f, flat0 = _functional(model, _indices(model, block))
    logits = f(flat0, x)  # (N, C)
    p = flat0.numel()
    jac = torch.func.jacrev(lambda t: f(t, x), chunk_size=chunk_count(max_elements, p, logits.numel()))(flat0)
    hess = loss_curvature(loss_fn, logits, y).hessian()  # (N, C, C); jac: (N, C, P)
    return torch.einsum("ncp,ncd,ndq->pq", jac, hess, jac)


def layer_hessian_block(model: nn.Module | SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor,
                        name: str, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Dense Hessian block of the named :class:`ParamBlock` (``layer0``, ``prelu1``, ...)."""
    net = parsed(model)
    return dense_hessian(net.model, loss_fn, x, y, _block(net, name), max_elements=max_elements)


def layer_ggn_block(model: nn.Module | SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor,
                    name: str, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Dense GN block of the named :class:`ParamBlock`."""
    net = parsed(model)
    return dense_ggn(net.model, loss_fn, x, y, _block(net, name), max_elements=max_elements)


def _block(net: SequentialModel, name: str) -> ParamBlock:
    """The block called ``name``.

    Raises:
        CurvatureError: for an unknown name (the message lists the model's blocks).
    """
    for b in net.blocks:
        if b.name == name:
            return b
    raise CurvatureError(f"Unknown parameter block '{name}'. Valid choices: {choices(b.name for b in net.blocks)}")
