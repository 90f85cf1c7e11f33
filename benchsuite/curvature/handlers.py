"""What each module type contributes to the structured passes, dispatched by a type table.

:class:`~benchsuite.curvature.model.SequentialModel` walks its modules and calls the
handler of each one (``handler_for(module)``), never testing module types itself.
A handler knows, for its module type (notation of Botev, Ritter & Barber, ICML 2017:
``h = W ā``, ``a = f(h)``, ``B = diag f'(h)``):

* ``forward``: the output and any auxiliary state (maxout's selected pieces);
* ``df`` / ``d2f``: the local derivative (``f'``; maxout's 0/1 selection mask);
* ``jvp``: push a batch of tangents (K, N, d_in) forward, adding parameter tangents;
* ``vjp``: pull cotangent columns (K, N, d_out) back (``S W̃``, ``S ⊙ f'``, ``S Sel``);
* ``param_grads`` / ``squared_param_grads``: parameter cotangents ``Σ_n`` and the sum
  of their per-(column, sample) squares (GN diagonals, empirical Fisher);
* ``kfra_step``: the KFRA recursion ``Ḡ ← E[Jᵀ Ḡ J]`` through the module.

Modules a handler cannot differentiate are refused by ``check`` when the model is
parsed. Extension: :func:`register_handler` for a non-elementwise module type,
:func:`~benchsuite.curvature.activations.register_derivatives` for an elementwise one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from benchsuite.curvature.activations import derivatives_for, derivatives_table
from benchsuite.curvature.errors import UnsupportedModelError, choices
from benchsuite.curvature.modules import Maxout

if TYPE_CHECKING:
    from benchsuite.curvature.model import ForwardCache, SequentialModel

__all__ = [
    "ElementwiseHandler",
    "LinearHandler",
    "MaxoutHandler",
    "ModuleHandler",
    "PReLUHandler",
    "handler_for",
    "register_handler",
    "supported_modules",
]


class ModuleHandler:
    """Base handler: a module without parameters whose derivative the subclass defines.

    Attributes:
        is_linear: The module is an affine layer ``h = W ā`` with a Kronecker block.
        block_prefix: Name prefix of the module's parameter block (None: no parameters).
    """

    is_linear: ClassVar[bool] = False
    block_prefix: ClassVar[str | None] = None

    def check(self, module: nn.Module) -> None:
        """Raise :class:`UnsupportedModelError` if the engine cannot differentiate ``module``."""
        if self.block_prefix is None and any(True for _ in module.parameters()):
            raise UnsupportedModelError(
                f"{type(module).__name__} with parameters is not supported. "
                f"Supported parameterised modules: {choices(_parameterised())}"
            )

    def forward(self, module: nn.Module, a: Tensor) -> tuple[Tensor, Tensor | None]:
        """The output and the auxiliary state the other passes need (or None)."""
        return module(a), None

    def df(self, module: nn.Module, h: Tensor, aux: Tensor | None) -> Tensor:
        """The local derivative at input ``h`` (``f'(h)``; for maxout the selection mask)."""
        raise NotImplementedError

    def d2f(self, module: nn.Module, h: Tensor) -> Tensor | None:
        """``f''(h)`` or None if piecewise linear (``f'' = 0`` a.e.)."""
        return None

    def jvp(self, net: SequentialModel, cache: ForwardCache, i: int, t: Tensor | None,
            tangents: list[Tensor]) -> Tensor | None:
        """Output tangents (K, N, d_out) from input tangents ``t`` (None: zero) and parameter tangents."""
        return None if t is None else t * net.df(cache, i)

    def vjp(self, net: SequentialModel, cache: ForwardCache, i: int, s: Tensor) -> Tensor:
        """Input cotangents (K, N, d_in) from output columns ``s`` (K, N, d_out): ``S ⊙ f'(h)``."""
        return s * net.df(cache, i)

    def param_grads(self, module: nn.Module, a: Tensor, s: Tensor) -> list[Tensor]:
        """Per-column parameter cotangents ``Σ_n`` from output columns ``s`` (K, N, d_out)."""
        return []

    def squared_param_grads(self, module: nn.Module, a: Tensor, s: Tensor) -> list[Tensor]:
        """``Σ_k Σ_n g_{k,n} ⊙ g_{k,n}`` with ``g_{k,n}`` the cotangent of column k, sample n."""
        return []

    def kfra_step(self, net: SequentialModel, cache: ForwardCache, i: int, g: Tensor) -> Tensor:
        """KFRA through an elementwise module: ``Ḡ ⊙ (1/N) Σ_n f'_n f'_nᵀ`` (d × d)."""
        fp = net.df(cache, i)  # (N, d)
        return g * (fp.T @ fp / fp.shape[0])


class LinearHandler(ModuleHandler):
    """``h = W̃ a + b``: two matmuls forward, one back; block ``layer{k}``."""

    is_linear = True
    block_prefix = "layer"

    def check(self, module: nn.Module) -> None:
        pass

    def jvp(self, net, cache, i, t, tangents):
        m, a = net.modules[i], cache.inputs[i]
        out = torch.matmul(a, tangents[0].transpose(-1, -2))  # (K, N, out)
        if m.bias is not None:
            out = out + tangents[1][:, None, :]
        if t is not None:
            out = out + torch.matmul(t, m.weight.T)  # (K, N, out)
        return out

    def vjp(self, net, cache, i, s):
        return torch.matmul(s, net.modules[i].weight)  # (K, N, in)

    def param_grads(self, module, a, s):
        grads = [torch.matmul(s.transpose(1, 2), a)]  # (K, out, in)
        if module.bias is not None:
            grads.append(s.sum(1))  # (K, out)
        return grads

    def squared_param_grads(self, module, a, s):
        s2 = (s * s).sum(0)  # (N, out)
        grads = [s2.T @ (a * a)]  # (out, in)
        if module.bias is not None:
            grads.append(s2.sum(0))  # (out,)
        return grads

    def kfra_step(self, net, cache, i, g):
        w = net.modules[i].weight  # (out, in)
        return w.T @ g @ w  # (in, in)


class ElementwiseHandler(ModuleHandler):
    """An elementwise activation: ``B = diag f'(h)`` from its derivatives object."""

    def check(self, module: nn.Module) -> None:
        derivatives_for(module)
        super().check(module)

    def df(self, module, h, aux):
        return derivatives_for(module).df(module, h)

    def d2f(self, module, h):
        derivs = derivatives_for(module)
        return None if derivs.piecewise_linear else derivs.d2f(module, h)


class PReLUHandler(ElementwiseHandler):
    """PReLU: elementwise in ``h`` plus the slope ``α`` with ``∂f/∂α = min(h, 0)``; block ``prelu{l}``.

    A per-unit slope gets ``Σ_n s_n ⊙ min(h_n, 0)`` (K, d), a shared one its sum (K, 1).
    """

    block_prefix = "prelu"

    def jvp(self, net, cache, i, t, tangents):
        neg = cache.inputs[i].clamp(max=0)  # (N, d)
        out = neg * tangents[0][:, None, :]  # (K, N, d)
        return out if t is None else out + t * net.df(cache, i)

    def _per_sample(self, module: nn.PReLU, a: Tensor, s: Tensor) -> Tensor:
        g = s * a.clamp(max=0)  # (K, N, d)
        return g.sum(2, keepdim=True) if module.weight.numel() == 1 else g  # (K, N, 1) or (K, N, d)

    def param_grads(self, module, a, s):
        return [self._per_sample(module, a, s).sum(1)]  # (K, d) or (K, 1)

    def squared_param_grads(self, module, a, s):
        g = self._per_sample(module, a, s)
        return [(g * g).sum((0, 1))]  # (d,) or (1,)


class MaxoutHandler(ModuleHandler):
    """Maxout: the Jacobian is a selection ``Sel`` (d × k·d); ``Selᵀ(·)Sel`` replaces ``B(·)B``."""

    def forward(self, module: Maxout, a: Tensor) -> tuple[Tensor, Tensor | None]:
        idx, out = module.argmax_and_max(a)  # (N, d), (N, d)
        return out, idx

    def df(self, module, h, aux):
        return torch.zeros_like(h).scatter_(1, aux, 1.0)  # (N, k·d)

    def jvp(self, net, cache, i, t, tangents):
        if t is None:
            return None
        idx = cache.aux[i]  # (N, d)
        return torch.gather(t, 2, idx.expand(t.shape[0], *idx.shape))  # (K, N, d)

    def vjp(self, net, cache, i, s):
        idx = cache.aux[i]  # (N, d)
        out = s.new_zeros(*s.shape[:2], cache.inputs[i].shape[1])  # (K, N, k·d)
        return out.scatter_(2, idx.expand(s.shape[0], *idx.shape), s)

    def kfra_step(self, net, cache, i, g):
        k, mask = net.modules[i].pieces, net.df(cache, i)  # (N, k·d)
        return g.repeat_interleave(k, 0).repeat_interleave(k, 1) * (mask.T @ mask / mask.shape[0])


_ELEMENTWISE = ElementwiseHandler()
_HANDLERS: dict[type[nn.Module], ModuleHandler] = {
    nn.Linear: LinearHandler(),
    nn.PReLU: PReLUHandler(),
    Maxout: MaxoutHandler(),
}


def _parameterised() -> list[str]:
    return [t.__name__ for t, h in _HANDLERS.items() if h.block_prefix is not None]


def supported_modules() -> list[str]:
    """Names of the module types the engine accepts in a Sequential."""
    return sorted({"Sequential", *(t.__name__ for t in _HANDLERS), *(t.__name__ for t in derivatives_table())})


def handler_for(module: nn.Module) -> ModuleHandler:
    """The checked handler of ``module``.

    Raises:
        UnsupportedModelError: for a module type or option the engine cannot
            differentiate (the message lists the supported module types).
    """
    handler = _HANDLERS.get(type(module))
    if handler is None:
        if type(module) not in derivatives_table():
            raise UnsupportedModelError(
                f"Unsupported module {type(module).__name__} for curvature code. "
                f"Supported: {', '.join(supported_modules())}"
            )
        handler = _ELEMENTWISE
    handler.check(module)
    return handler


def register_handler(module_type: type[nn.Module], handler: ModuleHandler) -> None:
    """Extension hook: teach the engine a module type that is not elementwise."""
    _HANDLERS[module_type] = handler
