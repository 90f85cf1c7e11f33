"""Teaching the engine a new module type through the type tables (BackPACK style)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from benchsuite.curvature import (
    ElementwiseDerivatives,
    UnsupportedModelError,
    activations,
    dense_ggn,
    dense_hessian,
    diag_ggn_exact,
    flatten_vectors,
    handlers,
    kfra,
    layer_ggn_block,
    supported_modules,
)


class SiLUDerivatives(ElementwiseDerivatives):
    """``f = h σ(h)``: ``f' = σ(1 + h(1 − σ))``, ``f'' = σ(1 − σ)(2 + h(1 − 2σ))``."""

    def df(self, module: nn.Module, h: Tensor) -> Tensor:
        s = torch.sigmoid(h)
        return s * (1 + h * (1 - s))

    def d2f(self, module: nn.Module, h: Tensor) -> Tensor:
        s = torch.sigmoid(h)
        return s * (1 - s) * (2 + h * (1 - 2 * s))


class Scale(nn.Module):
    """An elementwise module with a parameter, which no handler knows how to differentiate."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))

    def forward(self, h: Tensor) -> Tensor:
        return self.a * h


def _model(act: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), act, nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def test_unregistered_module_is_refused_when_parsed():
    assert "SiLU" not in supported_modules()
    with pytest.raises(UnsupportedModelError, match="Unsupported module SiLU.*Supported: .*GELU.*Linear"):
        diag_ggn_exact(_model(nn.SiLU()), nn.MSELoss(), torch.zeros(2, 3, dtype=torch.float64),
                       torch.zeros(2, 2, dtype=torch.float64))


def test_registered_derivatives_give_exact_curvature(monkeypatch):
    monkeypatch.setitem(activations._TABLE, nn.SiLU, SiLUDerivatives())
    assert "SiLU" in supported_modules()
    model, loss_fn = _model(nn.SiLU()), nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, 3, generator=gen, dtype=torch.float64), torch.tensor([1])
    ggn = dense_ggn(model, loss_fn, x, y)
    torch.testing.assert_close(flatten_vectors(diag_ggn_exact(model, loss_fn, x, y)), ggn.diagonal(),
                               rtol=1e-10, atol=1e-14)
    assert torch.dist(ggn, dense_hessian(model, loss_fn, x, y)) > 1e-6  # smooth: H differs from G
    top = layer_ggn_block(model, loss_fn, x, y, "layer0")
    torch.testing.assert_close(kfra(model, loss_fn, x, y)[0].dense(), top, rtol=1e-10, atol=1e-14)  # exact at N=1


def test_parameters_of_an_elementwise_module_are_refused(monkeypatch):
    monkeypatch.setitem(activations._TABLE, Scale, SiLUDerivatives())
    with pytest.raises(UnsupportedModelError, match="Scale with parameters is not supported.*PReLU"):
        handlers.handler_for(Scale())
