"""Elementwise activation derivatives ``f'`` and ``f''``, one small class per module type.

In the style of BackPACK (Dangel, Kunstner & Hennig, ICLR 2020), each activation
module type maps to a derivatives object in a type table::

    derivatives_for(nn.ReLU()).df(module, h)   # f'(h), same shape as h

The Hessian recursion of Botev, Ritter & Barber (ICML 2017) needs
``B_l = diag f'(h_l)`` and ``D_l = diag(f''(h_l) ⊙ ∂E/∂a_l)``; a class with
``piecewise_linear = True`` declares ``f'' = 0`` almost everywhere (ReLU, leaky
ReLU, PReLU, abs), so ``D_l = 0`` and each layer's Hessian block equals its GN block.
At kinks the one-sided derivative torch's autograd uses is returned
(``relu'(0) = 0``, ``|x|'(0) = 0``, ``leaky_relu'(0) = slope``).

Extension: :func:`register_derivatives` teaches the engine a new elementwise module.
Maxout is not elementwise: see :mod:`benchsuite.curvature.handlers`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from benchsuite.curvature.errors import UnsupportedModelError, choices
from benchsuite.curvature.modules import Abs

__all__ = [
    "ElementwiseDerivatives",
    "derivatives_for",
    "derivatives_table",
    "register_derivatives",
]


class ElementwiseDerivatives:
    """``f'`` and ``f''`` of an elementwise activation module at pre-activations ``h``.

    Subclasses implement :meth:`df`, and :meth:`d2f` unless ``piecewise_linear``.
    """

    piecewise_linear: ClassVar[bool] = False

    def check(self, module: nn.Module) -> None:
        """Raise :class:`UnsupportedModelError` for a module option without derivatives."""

    def df(self, module: nn.Module, h: Tensor) -> Tensor:
        """``f'(h)``, shaped like ``h``."""
        raise NotImplementedError

    def d2f(self, module: nn.Module, h: Tensor) -> Tensor:
        """``f''(h)``, shaped like ``h`` (zero for a piecewise-linear ``f``, away from kinks)."""
        if self.piecewise_linear:
            return torch.zeros_like(h)
        raise NotImplementedError


class IdentityDerivatives(ElementwiseDerivatives):
    piecewise_linear = True

    def df(self, module: nn.Module, h: Tensor) -> Tensor:
        return torch.ones_like(h)


class ReLUDerivatives(ElementwiseDerivatives):
    piecewise_linear = True

    def df(self, module: nn.Module, h: Tensor) -> Tensor:
        return (h > 0).to(h.dtype)


class LeakyReLUDerivatives(ElementwiseDerivatives):
    piecewise_linear = True

    def df(self, module: nn.LeakyReLU, h: Tensor) -> Tensor:
        return torch.where(h > 0, torch.ones_like(h), torch.full_like(h, module.negative_slope))


class PReLUDerivatives(ElementwiseDerivatives):
    """``f'(h) = 1[h > 0] + α·1[h ≤ 0]``; the slope ``α`` broadcasts over dim 1 of (N, C)."""

    piecewise_linear = True

    def df(self, module: nn.PReLU, h: Tensor) -> Tensor:
        slope = module.weight if module.weight.numel() == 1 else module.weight.view(1, -1)  # (1, C)
        return torch.where(h > 0, torch.ones_like(h), slope.to(h.dtype).expand_as(h))


class AbsDerivatives(ElementwiseDerivatives):
    piecewise_linear = True

    def df(self, module: nn.Module, h: Tensor) -> Tensor:
        return torch.sign(h)


class TanhDerivatives(ElementwiseDerivatives):
    def df(self, module: nn.Module, h: Tensor) -> Tensor:
        return 1 - torch.tanh(h) ** 2

    def d2f(self, module: nn.Module, h: Tensor) -> Tensor:
        t = torch.tanh(h)
        return -2 * t * (1 - t * t)


class SigmoidDerivatives(ElementwiseDerivatives):
    def df(self, module: nn.Module, h: Tensor) -> Tensor:
        s = torch.sigmoid(h)
        return s * (1 - s)

    def d2f(self, module: nn.Module, h: Tensor) -> Tensor:
        s = torch.sigmoid(h)
        return s * (1 - s) * (1 - 2 * s)


class SoftplusDerivatives(ElementwiseDerivatives):
    """``f = log(1 + e^{βh})/β``, linear above ``threshold`` as torch computes it."""

    def df(self, module: nn.Softplus, h: Tensor) -> Tensor:
        bh = module.beta * h
        return torch.where(bh > module.threshold, torch.ones_like(h), torch.sigmoid(bh))

    def d2f(self, module: nn.Softplus, h: Tensor) -> Tensor:
        bh = module.beta * h
        s = torch.sigmoid(bh)
        return torch.where(bh > module.threshold, torch.zeros_like(h), module.beta * s * (1 - s))


class GELUDerivatives(ElementwiseDerivatives):
    """Exact GELU ``h·Φ(h)``: ``f' = Φ + h φ``, ``f'' = φ (2 − h²)``."""

    def check(self, module: nn.GELU) -> None:
        if module.approximate != "none":
            raise UnsupportedModelError(
                f"GELU(approximate='{module.approximate}') has no curvature support. "
                "Supported: exact GELU (approximate='none')"
            )

    def df(self, module: nn.GELU, h: Tensor) -> Tensor:
        pdf = torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(h / math.sqrt(2)))
        return cdf + h * pdf

    def d2f(self, module: nn.GELU, h: Tensor) -> Tensor:
        pdf = torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
        return pdf * (2 - h * h)


_TABLE: dict[type[nn.Module], ElementwiseDerivatives] = {
    nn.Identity: IdentityDerivatives(),
    nn.ReLU: ReLUDerivatives(),
    nn.LeakyReLU: LeakyReLUDerivatives(),
    nn.PReLU: PReLUDerivatives(),
    Abs: AbsDerivatives(),
    nn.Tanh: TanhDerivatives(),
    nn.Sigmoid: SigmoidDerivatives(),
    nn.Softplus: SoftplusDerivatives(),
    nn.GELU: GELUDerivatives(),
}


def derivatives_table() -> dict[type[nn.Module], ElementwiseDerivatives]:
    """A copy of the type table (module type → derivatives)."""
    return dict(_TABLE)


def derivatives_for(module: nn.Module) -> ElementwiseDerivatives:
    """The derivatives of an elementwise activation module, checked against its options.

    Raises:
        UnsupportedModelError: for a module type without derivatives or an unsupported
            option (the message lists the supported ones).
    """
    try:
        derivs = _TABLE[type(module)]
    except KeyError:
        known = choices(t.__name__ for t in _TABLE)
        raise UnsupportedModelError(
            f"No elementwise derivatives for {type(module).__name__}. Supported: {known}"
        ) from None
    derivs.check(module)
    return derivs


def register_derivatives(module_type: type[nn.Module], derivatives: ElementwiseDerivatives) -> None:
    """Extension hook: teach the engine a new elementwise activation module type."""
    _TABLE[module_type] = derivatives
