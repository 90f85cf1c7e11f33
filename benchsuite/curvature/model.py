"""Parse a plain ``nn.Sequential`` into Linear layers and activations; structured passes.

The curvature engine works on the stack ``h_l = W_l ā_{l-1}``, ``a_l = f(h_l)`` of
Botev, Ritter & Barber (ICML 2017) with ``ā = [a; 1]`` (homogeneous coordinate,
``W_l = [W̃_l b_l]``). :class:`SequentialModel` walks the modules of the user's
``nn.Sequential`` (``nn.Linear`` plus activation modules) through the per-type handlers of
:mod:`benchsuite.curvature.handlers` and provides three structured passes shared by
products, factors and diagonals:

* :meth:`SequentialModel.forward`: the forward pass, caching every module's input
  (``ā`` before a Linear layer, ``h`` before an activation) and auxiliary state
  (maxout selections);
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from benchsuite.curvature.errors import CurvatureError, UnsupportedModelError
from benchsuite.curvature.handlers import ModuleHandler, handler_for, supported_modules

__all__ = ["ForwardCache", "ParamBlock", "SequentialModel", "parsed", "supported_modules"]


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
        aux: Auxiliary state by module index (maxout: selected pieces, (N, d)).
    """

    inputs: list[Tensor]
    output: Tensor
    aux: dict[int, Tensor] = field(default_factory=dict)
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
        UnsupportedModelError: for a module (or module option) the engine cannot
            differentiate (the message lists the supported ones), parameters outside
            Linear/PReLU modules, or no Linear layer.
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Sequential):
            raise UnsupportedModelError(
                f"Curvature code needs an nn.Sequential, got {type(model).__name__}. "
                f"Supported modules inside it: {', '.join(supported_modules())}"
            )
        self.model = model
        self.modules = _flatten(model)
        self.handlers: list[ModuleHandler] = [handler_for(m) for m in self.modules]
        self.params = list(model.parameters())
        index = {id(p): i for i, p in enumerate(self.params)}
        self.module_params: dict[int, list[int]] = {}
        self.blocks: list[ParamBlock] = []
        self.linear_indices: list[int] = []
        for i, (m, handler) in enumerate(zip(self.modules, self.handlers)):
            own = [index[id(p)] for p in m.parameters(recurse=False)]
            if handler.is_linear:
                self.linear_indices.append(i)
            if not own:
                continue
            self.module_params[i] = own
            owner = max(len(self.linear_indices) - 1, 0)
            self.blocks.append(ParamBlock(f"{handler.block_prefix}{owner}", i, tuple(own)))
        if sum(len(v) for v in self.module_params.values()) != len(self.params):
            raise UnsupportedModelError(
                "Parameters outside Linear/PReLU modules are not supported by curvature code"
            )
        if not self.linear_indices:
            raise UnsupportedModelError("The model has no nn.Linear layer (supported: at least one)")

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> ForwardCache:
        """Forward pass without autograd, caching module inputs and auxiliary state."""
        inputs: list[Tensor] = []
        aux: dict[int, Tensor] = {}
        with torch.no_grad():
            a = x
            for i, (m, handler) in enumerate(zip(self.modules, self.handlers)):
                inputs.append(a)
                a, extra = handler.forward(m, a)
                if extra is not None:
                    aux[i] = extra
        return ForwardCache(inputs, a, aux)

    def df(self, cache: ForwardCache, i: int) -> Tensor:
        """``f'(h)`` (N, d) of activation ``i``; for maxout the 0/1 selection mask (N, k·d)."""
        if i not in cache._df:
            with torch.no_grad():
                cache._df[i] = self.handlers[i].df(self.modules[i], cache.inputs[i], cache.aux.get(i))
        return cache._df[i]

    def d2f(self, cache: ForwardCache, i: int) -> Tensor | None:
        """``f''(h)`` (N, d) of elementwise activation ``i``; None if piecewise linear."""
        return self.handlers[i].d2f(self.modules[i], cache.inputs[i])

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
            for i, handler in enumerate(self.handlers):
                own = [tangents[j] for j in self.module_params.get(i, ())]
                t = handler.jvp(self, cache, i, t, own)
        if t is None:
            raise CurvatureError("No parameter reaches the logits: nothing to differentiate")
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
        with the columns ``S`` (K, N, d_out) at its output, from the top down. Each
        module's handler pulls the columns through it: Linear ``S ← S W̃``, elementwise
        activation ``S ← S ⊙ f'(h)`` (``B_l``), maxout ``S ← S Sel`` (scatter).

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
        first = min(self.module_params, default=0)
        with torch.no_grad():
            for i in range(start, -1, -1):
                if i == stop:
                    return s
                shortcut = top is not None and i == last
                if i in self.module_params and not shortcut:
                    visit(i, s)
                if i <= first:
                    break  # nothing below needs columns
                s = top(i) if shortcut else self.handlers[i].vjp(self, cache, i, s)
        return None

    def param_grads(self, cache: ForwardCache, i: int, s: Tensor) -> list[Tensor]:
        """Per-vector parameter cotangents of module ``i`` from output columns (K, N, d).

        Linear: ``∂W = Σ_n s_n ā_nᵀ`` (K, out, in), ``∂b = Σ_n s_n`` (K, out);
        PReLU: ``∂α = Σ_n s_n ⊙ min(h_n, 0)`` (K, d) or (K, 1) for a shared slope.
        """
        return self.handlers[i].param_grads(self.modules[i], cache.inputs[i], s)

    def squared_param_grads(self, cache: ForwardCache, i: int, s: Tensor) -> list[Tensor]:
        """``Σ_k Σ_n g ⊙ g`` over the per-(column k, sample n) cotangents ``g`` of module ``i``.

        Linear: ``(Σ_k S²)ᵀ (ā ⊙ ā)`` (BackPACK's factorisation of the GN diagonal).
        """
        return self.handlers[i].squared_param_grads(self.modules[i], cache.inputs[i], s)

    def kfra_step(self, cache: ForwardCache, i: int, g: Tensor) -> Tensor:
        """KFRA recursion through module ``i``: ``Ḡ`` at its output → at its input."""
        return self.handlers[i].kfra_step(self, cache, i, g)


def parsed(model: nn.Module | SequentialModel) -> SequentialModel:
    """``model`` itself if already parsed, else ``SequentialModel(model)``."""
    return model if isinstance(model, SequentialModel) else SequentialModel(model)
