"""Parse a plain ``nn.Sequential`` into Linear layers and activations; structured passes.

The curvature engine works on the stack ``h_l = W_l ā_{l-1}``, ``a_l = f(h_l)`` of
Botev, Ritter & Barber (ICML 2017) with ``ā = [a; 1]`` (homogeneous coordinate,
``W_l = [W̃_l b_l]``). :class:`SequentialModel` walks the modules of the user's
``nn.Sequential`` (``nn.Linear`` plus the activations of
:mod:`benchsuite.contracts.activation`, torch's or the registry's) and provides three
structured passes shared by products, factors and diagonals:

* :meth:`SequentialModel.forward`: the forward pass, caching every module's input
  (``ā`` before a Linear layer, ``h`` before an activation) and maxout selections;
* :meth:`SequentialModel.jvp`: forward-mode Jacobian-vector products ``J v`` for a
  batch of ``K`` parameter tangents at once (two matmuls per Linear layer);
* :meth:`SequentialModel.backprop`: reverse-mode propagation of a batch of ``K``
  cotangent *columns* (K, N, d) through the layers with matmuls (Linear: ``S W̃``),
  elementwise scaling (``S ⊙ f'(h)``, i.e. ``B_l``) and scatters (maxout: ``S``
  selection), calling a visitor with the columns at every module's output. One pass
  with the columns of ``C_n`` gives KFLR factors and the exact GN diagonal; with
  sampled columns KFAC and the MC diagonal; with ``ℋ J v`` the GN-vector product.

Parameters follow ``list(model.parameters())`` order (BackPACK/curvlinops order):
Linear weight, Linear bias, PReLU slope, in module order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from benchsuite.contracts.activation import Maxout, derivatives, is_activation
from benchsuite.errors import ConfigError

__all__ = ["ForwardCache", "ParamBlock", "SequentialModel", "supported_modules"]

log = logging.getLogger(__name__)


def supported_modules() -> list[str]:
    """Names of the module types the curvature engine accepts in a Sequential."""
    from benchsuite.contracts.activation import _DERIVATIVES

    return sorted({"Linear", "Maxout", "Sequential", *(t.__name__ for t in _DERIVATIVES)})


@dataclass(frozen=True)
class ParamBlock:
    """A group of parameters that curvature statistics treat as one block.

    Attributes:
        name: ``layer{i}`` for the i-th Linear layer (weight and bias), ``prelu{i}`` for
            the slope of a PReLU that follows Linear layer ``i``.
        module_index: Position of the owning module in :attr:`SequentialModel.modules`.
        param_indices: Positions in ``list(model.parameters())``.
    """

    name: str
    module_index: int
    param_indices: tuple[int, ...]


@dataclass
class ForwardCache:
    """Inputs of every module of one forward pass (detached).

    Attributes:
        inputs: ``inputs[i]`` is the input of module ``i``: ``a`` (N, in) for a Linear
            layer, the pre-activation ``h`` (N, d) for an activation.
        output: The logits (N, C).
    """

    inputs: list[Tensor]
    output: Tensor
    selected: dict[int, Tensor] = field(default_factory=dict)  # maxout argmax (N, d)
    _df: dict[int, Tensor] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return self.output.shape[0]


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flatten(child)]
    return [module]


class SequentialModel:
    """A parsed ``nn.Sequential`` of ``nn.Linear`` layers and activation modules.

    Args:
        model: The user's network; nested ``nn.Sequential`` are flattened. It must map
            (N, D_in) inputs to (N, C) logits.

    Raises:
        ConfigError: for a module the engine cannot differentiate (the message lists
            the supported ones) or parameters outside Linear/PReLU modules.
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Sequential):
            raise ConfigError(f"Curvature code needs an nn.Sequential, got {type(model).__name__}")
        self.model = model
        self.modules = _flatten(model)
        for m in self.modules:
            if not (isinstance(m, nn.Linear) or is_activation(m)):
                raise ConfigError(
                    f"Unsupported module {type(m).__name__} for curvature code. "
                    f"Supported: {', '.join(supported_modules())}"
                )
        self.params = list(model.parameters())
        index = {id(p): i for i, p in enumerate(self.params)}
        self.module_params: dict[int, list[int]] = {}
        self.blocks: list[ParamBlock] = []
        self.linear_indices: list[int] = []
        seen = 0
        for i, m in enumerate(self.modules):
            own = [index[id(p)] for p in m.parameters(recurse=False)]
            seen += len(own)
            if isinstance(m, nn.Linear):
                self.module_params[i] = [index[id(m.weight)]] + ([index[id(m.bias)]] if m.bias is not None else [])
                self.blocks.append(ParamBlock(f"layer{len(self.linear_indices)}", i, tuple(self.module_params[i])))
                self.linear_indices.append(i)
            elif isinstance(m, nn.PReLU):
                self.module_params[i] = [index[id(m.weight)]]
                owner = max(len(self.linear_indices) - 1, 0)
                self.blocks.append(ParamBlock(f"prelu{owner}", i, tuple(self.module_params[i])))
        if seen != len(self.params):
            raise ConfigError("Parameters outside Linear/PReLU modules are not supported by curvature code")
        if not self.linear_indices:
            raise ConfigError("The model has no nn.Linear layer")

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> ForwardCache:
        """Forward pass without autograd, caching module inputs and maxout selections."""
        inputs: list[Tensor] = []
        selected: dict[int, Tensor] = {}
        with torch.no_grad():
            a = x
            for i, m in enumerate(self.modules):
                inputs.append(a)
                if isinstance(m, Maxout):
                    idx, a = m.argmax_and_max(a)  # (N, d), (N, d)
                    selected[i] = idx
                else:
                    a = m(a)
        return ForwardCache(inputs, a, selected)

    def df(self, cache: ForwardCache, i: int) -> Tensor:
        """``f'(h)`` (N, d) of activation ``i``; for maxout the 0/1 selection mask (N, k·d)."""
        if i not in cache._df:
            m, h = self.modules[i], cache.inputs[i]
            with torch.no_grad():
                if isinstance(m, Maxout):
                    mask = torch.zeros_like(h)  # (N, k·d)
                    cache._df[i] = mask.scatter_(1, cache.selected[i], 1.0)
                else:
                    cache._df[i] = derivatives(m).df(m, h)
        return cache._df[i]

    def d2f(self, cache: ForwardCache, i: int) -> Tensor | None:
        """``f''(h)`` (N, d) of elementwise activation ``i``; None if piecewise linear."""
        m = self.modules[i]
        if isinstance(m, Maxout):
            return None
        hooks = derivatives(m)
        return None if hooks.d2f is None else hooks.d2f(m, cache.inputs[i])

    # ------------------------------------------------------------------ products
    def jvp(self, cache: ForwardCache, tangents: Sequence[Tensor]) -> Tensor:
        """Jacobian-vector products ``J_θ h_L · v`` for K tangents (forward mode).

        Args:
            cache: A forward cache of the current parameters.
            tangents: One tensor per parameter, shaped (K, *param.shape).

        Returns:
            Logit tangents (K, N, C).
        """
        t: Tensor | None = None  # tangent of the current activation, (K, N, d)
        with torch.no_grad():
            for i, m in enumerate(self.modules):
                a = cache.inputs[i]
                if isinstance(m, nn.Linear):
                    ids = self.module_params[i]
                    dw = tangents[ids[0]]  # (K, out, in)
                    out = torch.matmul(a, dw.transpose(-1, -2))  # (K, N, out)
                    if m.bias is not None:
                        out = out + tangents[ids[1]][:, None, :]
                    if t is not None:
                        out = out + torch.matmul(t, m.weight.T)  # (K, N, out)
                    t = out
                elif t is None:
                    continue  # activation before the first Linear: input has no tangent
                elif isinstance(m, Maxout):
                    idx = cache.selected[i]  # (N, d)
                    t = torch.gather(t, 2, idx.expand(t.shape[0], *idx.shape))  # (K, N, d)
                else:
                    t = t * self.df(cache, i)
                    if isinstance(m, nn.PReLU):
                        neg = a.clamp(max=0)  # (N, d) ∂f/∂α = min(h, 0)
                        dalpha = tangents[self.module_params[i][0]]  # (K, 1) or (K, d)
                        t = t + neg * dalpha[:, None, :]
        if t is None:
            raise ConfigError("The model has no nn.Linear layer")
        return t

    def backprop(
        self,
        cache: ForwardCache,
        columns: Tensor,
        visit: Callable[[int, Tensor], None],
        *,
        top: Callable[[int], Tensor] | None = None,
        start: int | None = None,
        stop: int = -1,
    ) -> Tensor | None:
        """Propagate cotangent columns (K, N, C) from the logits down to the first layer.

        ``visit(i, S)`` is called for every parameterised module ``i`` (Linear, PReLU)
        with the columns ``S`` (K, N, d_out) at its output, from the top down. Through a
        Linear layer ``S ← S W̃``; through an elementwise activation ``S ← S ⊙ f'(h)``
        (``B_l``); through maxout ``S ← S Sel`` (scatter to the selected pieces).

        Args:
            cache: Forward cache.
            columns: Cotangents at the logits (K, N, C).
            visit: Callback per parameterised module.
            top: Optional shortcut for a top Linear layer: ``top(i)`` returns the
                columns at its *input* directly (used when the columns at the logits
                are diagonal, to skip a (K, N, C)·(C, in) matmul); the visitor must
                then handle module ``i`` itself.
            start: Module whose *output* the columns belong to (default: the last).
            stop: Return the columns at the output of module ``stop`` before visiting it.

        Returns:
            The columns at the output of module ``stop`` if it was reached, else None.
        """
        s = columns
        last = len(self.modules) - 1
        start = last if start is None else start
        first = min(i for i in self.module_params) if self.module_params else 0
        with torch.no_grad():
            for i in range(start, -1, -1):
                if i == stop:
                    return s
                m = self.modules[i]
                if i in self.module_params and not (top is not None and i == last):
                    visit(i, s)
                if i <= first:
                    break  # nothing below needs columns
                if isinstance(m, nn.Linear):
                    s = top(i) if (top is not None and i == last) else torch.matmul(s, m.weight)
                elif isinstance(m, Maxout):
                    idx = cache.selected[i]  # (N, d)
                    width = cache.inputs[i].shape[1]
                    out = s.new_zeros(*s.shape[:2], width)  # (K, N, k·d)
                    s = out.scatter_(2, idx.expand(s.shape[0], *idx.shape), s)
                else:
                    s = s * self.df(cache, i)
        return None

    def param_grads(self, cache: ForwardCache, i: int, s: Tensor) -> list[Tensor]:
        """Per-vector parameter cotangents of module ``i`` from output columns (K, N, d).

        Linear: ``∂W = Σ_n s_n ā_nᵀ`` (K, out, in), ``∂b = Σ_n s_n`` (K, out);
        PReLU: ``∂α = Σ_n s_n ⊙ min(h_n, 0)`` (K, d) or (K, 1) for a shared slope.
        """
        m, a = self.modules[i], cache.inputs[i]
        if isinstance(m, nn.Linear):
            grads = [torch.matmul(s.transpose(1, 2), a)]  # (K, out, in)
            if m.bias is not None:
                grads.append(s.sum(1))  # (K, out)
            return grads
        prod = s * a.clamp(max=0)  # (K, N, d)
        if m.weight.numel() == 1:
            return [prod.sum((1, 2))[:, None]]  # (K, 1)
        return [prod.sum(1)]  # (K, d)
