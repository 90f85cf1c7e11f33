"""HF's paper mode: curvature on one rotating chunk of a full batch (Martens' ``numchunks``)."""

from __future__ import annotations

import pytest
import torch
from benchsuite.optimizers import hf as hf_module
from benchsuite.optimizers.hf import HessianFree, HFConfig
from torch import nn
from torch.func import functional_call, hessian, jacrev

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.optimizer import StepClosure
from benchsuite.contracts.task import mlp
from benchsuite.errors import ConfigError


def dense_gn(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``Jᵀ ℋ J`` (P, P) in float64 by torch.func: J = ∂ outputs/∂θ, ℋ = ∂² loss/∂ outputs²."""
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}

    def outputs(flat: torch.Tensor) -> torch.Tensor:  # (N·D,)
        params, start = {}, 0
        for n in names:
            params[n] = flat[start:start + theta[n].numel()].view_as(theta[n])
            start += theta[n].numel()
        return functional_call(model, params, (x,)).reshape(-1)

    flat = torch.cat([theta[n].reshape(-1) for n in names])  # (P,)
    out = outputs(flat)
    jac = jacrev(outputs)(flat)  # (N·D, P)
    h = hessian(lambda o: loss_fn(o.view(x.shape[0], -1), y))(out.detach())  # (N·D, N·D)
    return jac.T @ h @ jac


def problem(n: int = 12, reduction: str = "mean"):
    torch.manual_seed(0)
    model = mlp([3, 5, 4, 2], ACTIVATIONS.get("tanh")).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return model, nn.MSELoss(reduction=reduction), x, y


@pytest.mark.parametrize(("n", "chunks"), [(12, 4), (13, 4), (12, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gn_products_at_step_k_are_the_dense_gn_of_chunk_k_mod_n(n, chunks, reduction):
    model, loss_fn, x, y = problem(n, reduction)
    opt = HessianFree(model, loss_fn, curvature_chunks=chunks, max_cg_iters=8)
    parts = list(zip(torch.tensor_split(x, chunks), torch.tensor_split(y, chunks)))
    real = HessianFree._gn_product
    checked: list[int] = []

    def spy(self, xs, ys):
        gn = real(self, xs, ys)
        k = self.group_state().get("step", 0)
        own = dense_gn(model, loss_fn, *parts[k % chunks])
        other = dense_gn(model, loss_fn, *parts[(k + 1) % chunks])
        v = torch.randn(own.shape[0], generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        torch.testing.assert_close(gn(v), own @ v, rtol=1e-10, atol=1e-12)
        assert float((other @ v - own @ v).norm()) > 1e-3 * float((own @ v).norm())  # chunks do differ
        checked.append(k % chunks)
        return gn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HessianFree, "_gn_product", spy)
        for _ in range(chunks + 1):
            opt.step(StepClosure(model, loss_fn, x, y))
    assert checked == [*range(chunks), 0]
    assert opt.group_state()["chunk"] == chunks % chunks


def test_chunk_mode_measures_rho_on_the_chunk_and_guards_nothing():
    model, loss_fn, x, y = problem()
    opt = HessianFree(model, loss_fn, curvature_chunks=4)
    seen: list[int] = []
    real = HessianFree._objective

    def spy(self, delta, xs, ys, wc, scale=1.0):
        seen.append(xs.shape[0])
        return real(self, delta, xs, ys, wc, scale)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HessianFree, "_objective", spy)
        opt.step(StepClosure(model, loss_fn, x, y))
    assert set(seen) == {12, 3}  # backtracking and line search on B (12), ρ on the chunk (3); no held-out set


def test_chunks_0_and_1_are_the_split_mode():
    steps = []
    for chunks in (0, 1):
        model, loss_fn, x, y = problem()
        opt = HessianFree(model, loss_fn, curvature_chunks=chunks)
        for _ in range(3):
            opt.step(StepClosure(model, loss_fn, x, y))
        steps.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=0)


def test_more_chunks_than_examples_is_refused():
    model, loss_fn, x, y = problem(n=3)
    with pytest.raises(ValueError, match="curvature_chunks"):
        HessianFree(model, loss_fn, curvature_chunks=4).step(StepClosure(model, loss_fn, x, y))
    with pytest.raises(ConfigError):
        HFConfig(curvature_chunks=-1)
    assert hf_module.HFConfig().curvature_chunks == 0
