"""Shared plumbing of the second-order optimizers: model binding, batch access, flat views.

The maths lives in pure functions (``cg``, ``damping``, ``line_search``, the
curvature engine); these classes hold param groups and state, as torch.optim does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.curvature.losses import _check_loss
from benchsuite.curvature.model import SequentialModel

__all__ = ["CurvatureOptimizer"]


class CurvatureOptimizer(torch.optim.Optimizer):
    """A torch optimizer bound to a model and loss module, reading batches from the closure.

    Construction refuses, with a message naming what is unsupported, any model the
    curvature engine cannot parse (modules other than Linear and known activations)
    and any loss other than MSE, cross-entropy or BCE-with-logits (mean or sum).

    ``step(closure)`` must be given a :class:`~benchsuite.contracts.optimizer.StepClosure` (or any
    callable with ``inputs`` and ``targets`` attributes) so the optimizer can compute
    curvature on the same batch; in a plain loop::

        opt.step(StepClosure(model, loss_fn, x, y))
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, defaults: dict[str, Any]):
        self.net = SequentialModel(model)
        self.loss_kind = _check_loss(loss_fn)
        self.model, self.loss_fn = model, loss_fn
        super().__init__(model.parameters(), defaults)
        # Monte-Carlo curvature draws come from a generator seeded from torch's global RNG
        # (so runs are reproducible under a seed); its state travels in state_dict.
        self.generator = torch.Generator(device=self.params[0].device)
        self.generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["generator"] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        gen = state_dict.pop("generator", None)
        super().load_state_dict(state_dict)
        if gen is not None:
            self.generator.set_state(gen)

    @property
    def params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    @staticmethod
    def batch(closure: Callable[[], Tensor] | None) -> tuple[Tensor, Tensor]:
        if closure is None or not hasattr(closure, "inputs") or not hasattr(closure, "targets"):
            raise TypeError(
                "Second-order optimizers need the batch: call step(StepClosure(model, loss_fn, inputs, targets))"
            )
        return closure.inputs, closure.targets

    def flat_grad(self) -> Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.params])  # (P,)

    def unflat(self, flat: Tensor) -> list[Tensor]:
        out, start = [], 0
        for p in self.params:
            out.append(flat[start : start + p.numel()].view_as(p))
            start += p.numel()
        return out

    @torch.no_grad()
    def add_to_params(self, delta: Tensor, scale: float = 1.0) -> None:
        """``θ ← θ + scale·delta`` for a flat (P,) ``delta``."""
        for p, d in zip(self.params, self.unflat(delta)):
            p.add_(d, alpha=scale)

    @torch.no_grad()
    def loss_at(self, delta: Tensor, x: Tensor, y: Tensor, scale: float = 1.0) -> float:
        """``f(θ + scale·delta)`` on ``(x, y)``, leaving θ unchanged."""
        saved = [p.detach().clone() for p in self.params]
        self.add_to_params(delta, scale)
        try:
            return float(self.loss_fn(self.model(x), y))
        finally:
            for p, s in zip(self.params, saved):  # exact restore (θ + d − d ≠ θ in floating point)
                p.copy_(s)
