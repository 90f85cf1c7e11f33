"""Dense float64 oracles for the optimizer tests (torch.func only, independent of the engine)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def dense_ggn_oracle(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``Jᵀ (∂²E/∂z²) J`` (P, P) from torch.func alone: Jacobian of the logits by jacrev and
    the output Hessian by torch.func.hessian of the loss module — independent of the engine."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def logits(flat: Tensor) -> Tensor:
        parts = torch.split(flat, [s.numel() for s in shapes])
        return torch.func.functional_call(model, {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}, (x,))

    z = logits(flat0)  # (N, C)
    jac = torch.func.jacrev(logits)(flat0).reshape(z.numel(), -1)  # (N·C, P)
    h = torch.func.hessian(lambda zz: loss_fn(zz, y))(z).reshape(z.numel(), z.numel())  # (N·C, N·C)
    return jac.T @ h @ jac


def flat_grad(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    loss = loss_fn(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
