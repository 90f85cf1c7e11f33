"""Activation functions: registry entries that build a layer's module and state its facts.

A registry entry (:class:`Activation`) builds the ``nn.Module`` for a layer of a
given width and declares its facts: piecewise linear (so ``f'' = 0`` a.e. and the
within-layer Hessian equals the Gauss-Newton block, Botev et al. 2017), elementwise
or not (maxout maps ``k·d`` inputs to ``d`` outputs), parameters or not (PReLU's
slope). The modules torch lacks (:class:`Abs`, :class:`Maxout`) and the derivatives
of every module type live in the curvature engine (:mod:`benchsuite.curvature`);
a new elementwise module needs ``register_derivatives`` there as well as an entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from benchsuite.contracts.registry import Registry
from benchsuite.curvature.modules import Abs, Maxout
from benchsuite.errors import ConfigError

__all__ = ["ACTIVATIONS", "Abs", "Activation", "Maxout"]


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


def _maxout(width: int, pieces: int) -> nn.Module:
    if int(pieces) < 2:
        raise ConfigError(f"Invalid maxout pieces: {pieces} (need an integer >= 2)")
    return Maxout(int(pieces))


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
                _maxout, piecewise_linear=True, elementwise=False,
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
