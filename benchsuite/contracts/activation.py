"""Activation functions: registry entries plus the derivative facts curvature code needs.

An activation contributes two things:

* a registry entry (:class:`Activation`) that builds the ``nn.Module`` for a layer of
  a given width and declares its facts: piecewise linear (so ``f'' = 0`` a.e. and
  the within-layer Hessian equals the Gauss-Newton block, Botev et al. 2017),
  elementwise or not (maxout maps ``k·d`` inputs to ``d`` outputs), parameters or
  not (PReLU's slope);
* derivative hooks by module type (:func:`derivatives`) that the curvature engine
  uses on any ``nn.Sequential``, including torch's own ``nn.ReLU``, ``nn.Tanh``, ...

At kinks the one-sided derivative torch's autograd uses is returned
(``relu'(0) = 0``, ``|x|'(0) = 0``, ``leaky_relu'(0) = slope``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.errors import ConfigError, UnknownNameError
from benchsuite.contracts.registry import Registry

__all__ = [
    "ACTIVATIONS",
    "Abs",
    "Activation",
    "Derivatives",
    "Maxout",
    "derivatives",
    "is_activation",
]


class Abs(nn.Module):
    """Absolute-value rectification ``f(h) = |h|`` (a leaky ReLU with slope −1)."""

    def forward(self, h: Tensor) -> Tensor:
        return h.abs()


class Maxout(nn.Module):
    """Maxout with ``k`` pieces (Goodfellow et al. 2013).

    Unit ``i`` outputs ``max_j h[..., i·k + j]``: an input of ``k·d`` features gives
    ``d`` outputs, so the Linear layer before it is ``k`` times wider. Its Jacobian is
    a selection matrix ``S`` (d × k·d) with one 1 per row (ties: the first maximum,
    as ``torch.max`` routes the gradient).
    """

    def __init__(self, pieces: int = 2):
        super().__init__()
        if not isinstance(pieces, int) or pieces < 2:
            raise ConfigError(f"Invalid maxout pieces: {pieces} (need an integer >= 2)")
        self.pieces = pieces

    def forward(self, h: Tensor) -> Tensor:
        return self.argmax_and_max(h)[1]

    def argmax_and_max(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Indices into the last axis of ``h`` selected per output, and the outputs."""
        *lead, width = h.shape
        if width % self.pieces:
            raise ValueError(f"Maxout input width {width} is not a multiple of pieces={self.pieces}")
        grouped = h.reshape(*lead, width // self.pieces, self.pieces)  # (..., d, k)
        values, idx = grouped.max(dim=-1)  # (..., d)
        offsets = torch.arange(0, width, self.pieces, device=h.device)  # (d,)
        return idx + offsets, values

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


# --------------------------------------------------------------------------------------
# Derivative hooks, by module type
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Derivatives:
    """Elementwise ``f'`` and ``f''`` of an activation module at pre-activations ``h``.

    ``d2f is None`` declares the function piecewise linear (``f'' = 0`` a.e.).
    """

    df: Callable[[nn.Module, Tensor], Tensor]
    d2f: Callable[[nn.Module, Tensor], Tensor] | None = None

    @property
    def piecewise_linear(self) -> bool:
        return self.d2f is None


def _sigmoid_d2(s: Tensor) -> Tensor:
    return s * (1 - s) * (1 - 2 * s)


def _softplus_df(m: nn.Softplus, h: Tensor) -> Tensor:
    bh = m.beta * h
    return torch.where(bh > m.threshold, torch.ones_like(h), torch.sigmoid(bh))


def _softplus_d2f(m: nn.Softplus, h: Tensor) -> Tensor:
    bh = m.beta * h
    s = torch.sigmoid(bh)
    return torch.where(bh > m.threshold, torch.zeros_like(h), m.beta * s * (1 - s))


def _gelu_check(m: nn.GELU) -> None:
    if m.approximate != "none":
        raise ConfigError("Only exact GELU (approximate='none') has curvature support")


def _gelu_df(m: nn.GELU, h: Tensor) -> Tensor:
    _gelu_check(m)
    pdf = torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(h / math.sqrt(2)))
    return cdf + h * pdf


def _gelu_d2f(m: nn.GELU, h: Tensor) -> Tensor:
    _gelu_check(m)
    pdf = torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
    return pdf * (2 - h * h)


def _prelu_slope(m: nn.PReLU, h: Tensor) -> Tensor:
    # PReLU broadcasts its weight over dim 1 (features) of a (N, C) input.
    return m.weight if m.weight.numel() == 1 else m.weight.view(1, -1)


_DERIVATIVES: dict[type[nn.Module], Derivatives] = {
    nn.Identity: Derivatives(lambda m, h: torch.ones_like(h)),
    nn.ReLU: Derivatives(lambda m, h: (h > 0).to(h.dtype)),
    nn.LeakyReLU: Derivatives(
        lambda m, h: torch.where(h > 0, torch.ones_like(h), torch.full_like(h, m.negative_slope))
    ),
    nn.PReLU: Derivatives(
        lambda m, h: torch.where(h > 0, torch.ones_like(h), _prelu_slope(m, h).to(h.dtype).expand_as(h))
    ),
    Abs: Derivatives(lambda m, h: torch.sign(h)),
    nn.Tanh: Derivatives(
        lambda m, h: 1 - torch.tanh(h) ** 2,
        lambda m, h: -2 * torch.tanh(h) * (1 - torch.tanh(h) ** 2),
    ),
    nn.Sigmoid: Derivatives(
        lambda m, h: torch.sigmoid(h) * (1 - torch.sigmoid(h)),
        lambda m, h: _sigmoid_d2(torch.sigmoid(h)),
    ),
    nn.Softplus: Derivatives(_softplus_df, _softplus_d2f),
    nn.GELU: Derivatives(_gelu_df, _gelu_d2f),
}


def is_activation(module: nn.Module) -> bool:
    """Whether curvature code knows how to differentiate through ``module``."""
    return isinstance(module, Maxout) or type(module) in _DERIVATIVES


def derivatives(module: nn.Module) -> Derivatives:
    """The derivative hooks of an elementwise activation module.

    Raises:
        UnknownNameError: for a module type without hooks (the message lists them).
        ConfigError: for :class:`Maxout`, which is not elementwise (use its selection).
    """
    if isinstance(module, Maxout):
        raise ConfigError("Maxout is not elementwise: use Maxout.argmax_and_max (selection Jacobian)")
    try:
        return _DERIVATIVES[type(module)]
    except KeyError:
        known = [t.__name__ for t in _DERIVATIVES] + ["Maxout"]
        raise UnknownNameError("activation module", type(module).__name__, known) from None


def register_derivatives(module_type: type[nn.Module], hooks: Derivatives) -> None:
    """Extension hook: teach the curvature code a new elementwise activation module."""
    _DERIVATIVES[module_type] = hooks


# --------------------------------------------------------------------------------------
# Registry entries
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """A registered activation: a module factory plus the facts curvature code needs.

    Attributes:
        name: Registry name.
        description: One line for ``benchsuite list``.
        factory: ``factory(width, **options) -> nn.Module`` for a layer of ``width`` outputs.
        piecewise_linear: ``f'' = 0`` almost everywhere.
        elementwise: False for maxout (``k·d → d``).
        has_params: True for PReLU (a learnable slope per unit).
        defaults: Default options (e.g. ``slope`` for leaky ReLU, ``pieces`` for maxout).
    """

    name: str
    description: str
    factory: Callable[..., nn.Module]
    piecewise_linear: bool
    elementwise: bool = True
    has_params: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def options(self, **overrides: Any) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "(none)"
            raise ConfigError(f"Unknown option(s) {unknown} for activation '{self.name}'. Valid: {valid}")
        return {**self.defaults, **overrides}

    def fan_in(self, width: int, **options: Any) -> int:
        """Inputs the activation needs to give ``width`` outputs (``k·width`` for maxout)."""
        return width * int(self.options(**options).get("pieces", 1))

    def build(self, width: int, **options: Any) -> nn.Module:
        """The module for a layer of ``width`` output units."""
        return self.factory(width, **self.options(**options))


ACTIVATIONS: Registry[Activation] = Registry("activation", group="benchsuite.activations")


def _add(act: Activation) -> None:
    ACTIVATIONS.add(act.name, act, act.description)


def _leaky(width: int, slope: float) -> nn.Module:
    if not math.isfinite(slope):
        raise ConfigError(f"Invalid leaky_relu slope: {slope}")
    return nn.LeakyReLU(negative_slope=float(slope))


def _prelu(width: int, init: float, shared: bool) -> nn.Module:
    return nn.PReLU(num_parameters=1 if shared else width, init=float(init))


_add(Activation("relu", "ReLU max(0, h): piecewise linear, dead units have f'=0",
                lambda width: nn.ReLU(), piecewise_linear=True))
_add(Activation("leaky_relu", "Leaky ReLU max(h, slope*h): piecewise linear, f' never 0",
                _leaky, piecewise_linear=True, defaults={"slope": 0.01}))
_add(Activation("prelu", "PReLU: leaky ReLU with a learnable slope per unit",
                _prelu, piecewise_linear=True, has_params=True, defaults={"init": 0.25, "shared": False}))
_add(Activation("abs", "Absolute-value rectification |h|: piecewise linear, |f'| = 1",
                lambda width: Abs(), piecewise_linear=True))
_add(Activation("maxout", "Maxout over k pieces: piecewise linear, not elementwise (k*d -> d)",
                lambda width, pieces: Maxout(int(pieces)), piecewise_linear=True, elementwise=False,
                defaults={"pieces": 2}))
_add(Activation("tanh", "tanh (smooth control: f'' != 0, Hessian blocks differ from GN)",
                lambda width: nn.Tanh(), piecewise_linear=False))
_add(Activation("sigmoid", "logistic sigmoid (smooth control; the units of the Hinton & Salakhutdinov and "
                "Martens autoencoders)", lambda width: nn.Sigmoid(), piecewise_linear=False))
_add(Activation("softplus", "softplus log(1+e^h) (smooth control)",
                lambda width, beta: nn.Softplus(beta=float(beta)), piecewise_linear=False,
                defaults={"beta": 1.0}))
_add(Activation("gelu", "GELU h*Phi(h), exact erf form (smooth control)",
                lambda width: nn.GELU(), piecewise_linear=False))
