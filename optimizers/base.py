"""Shared plumbing of the second-order optimizers: model binding, batch access, flat views.

The maths lives in pure functions (``cg``, ``damping``, ``line_search``, the
curvature engine and each optimizer module's ``*_step``/``*_update`` functions);
these classes hold param groups and state, as torch.optim does:

* every hyperparameter lives in ``param_groups`` (filled from the validated config)
  and is read at every ``step``, so ``torch.optim.lr_scheduler`` drives it;
* per-parameter state is keyed by the parameter; state of the group as a whole (step
  count, adapted damping, diagnostics) lives under the group's first parameter, as
  in ``torch.optim.LBFGS`` (see :meth:`CurvatureOptimizer.group_state`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.contracts.optimizer import OptimizerConfig
from benchsuite.curvature.errors import CurvatureError
from benchsuite.curvature.losses import LossKind, check_loss, per_example_scale
from benchsuite.curvature.model import SequentialModel
from benchsuite.errors import ConfigError

__all__ = ["CurvatureOptimizer", "check_finite", "follow_damping"]


def check_finite(what: str, *values: Tensor | float) -> None:
    """Raise :class:`FloatingPointError` naming ``what`` if any value is NaN or infinite.

    The runner records a run that raises it as ``diverged`` with the message, so a
    second-order step never writes NaN into the parameters silently. All tensors are
    reduced on their device and read back once: one host sync per call, not one per
    tensor, since these checks run inside the timed step.
    """
    finite = all(math.isfinite(float(v)) for v in values if not isinstance(v, Tensor))
    tensors = [v for v in values if isinstance(v, Tensor)]
    if finite and tensors:
        finite = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())  # one sync
    if not finite:
        raise FloatingPointError(f"non-finite {what}")


def follow_damping(current: float, base: float, scheduled: float, *, adapt: bool) -> tuple[float, bool]:
    """The damping to use now, given the group's (possibly rescheduled) hyperparameter.

    The group's ``damping`` is the hyperparameter; with Levenberg-Marquardt adaptation
    the optimizer keeps the adapted value ``λ`` and the hyperparameter value ``γ₀`` it
    last followed. When the group's value changes (a scheduler, or a user editing
    ``param_groups``) to ``γ₁``, the adapted value is re-based multiplicatively,
    ``λ ← λ · γ₁/γ₀``: the LM correction ``λ/γ`` accumulated so far is kept and the
    schedule sets the scale. Without adaptation the damping is the group's value.

    Args:
        current: The damping in use (adapted or not).
        base: The group value ``current`` follows.
        scheduled: The group's value now.
        adapt: Whether LM adaptation is on.

    Returns:
        ``(damping, changed)``: the damping to use and whether the group's value changed.
    """
    if scheduled == base:
        return current, False
    return (current * (scheduled / base) if adapt and base > 0 else scheduled), True


class CurvatureOptimizer(torch.optim.Optimizer):
    """A torch optimizer bound to a model and loss module, reading batches from the closure.

    Construction refuses, with a message naming what is unsupported, any model the
    curvature engine cannot parse (modules other than Linear and known activations)
    and any loss other than MSE, cross-entropy or BCE-with-logits (mean or sum).

    ``step(closure)`` must be given a :class:`~benchsuite.contracts.optimizer.StepClosure` (or any
    callable with ``inputs`` and ``targets`` attributes) so the optimizer can compute
    curvature on the same batch; in a plain loop with a scheduler::

        sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
        for x, y in loader:
            opt.step(StepClosure(model, loss_fn, x, y))
            sched.step()

    The validated ``config`` (with keyword ``overrides`` applied and validated again)
    fills ``defaults``, hence the one param group over ``model.parameters()``.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, config: OptimizerConfig,
                 overrides: dict[str, Any] | None = None):
        try:
            self.net = SequentialModel(model)
            self.loss_kind = check_loss(loss_fn)
        except CurvatureError as exc:  # unsupported module or loss: a configuration error to the suite
            raise ConfigError(str(exc)) from exc
        self.model, self.loss_fn = model, loss_fn
        super().__init__(model.parameters(), config.replace(**(overrides or {})).to_dict())
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

    @property
    def group(self) -> dict[str, Any]:
        """The one param group (hyperparameters; schedulers edit it)."""
        return self.param_groups[0]

    def group_state(self, group: dict[str, Any] | None = None) -> dict[str, Any]:
        """State of a param group as a whole, keyed by its first parameter (as torch.optim.LBFGS)."""
        return self.state[(group or self.group)["params"][0]]

    @property
    def damping(self) -> float:
        """The damping in use: the (LM-adapted, re-based) value of the group state once
        stepping, the group's hyperparameter before the first step."""
        return self.group_state().get("damping", self.group["damping"])

    def loss_scale(self, x: Tensor, y: Tensor) -> float:
        """``s``: the loss module's value over the papers' per-example, output-summed loss.

        See :func:`benchsuite.curvature.per_example_scale`: mean MSE/BCE ``1/D``, mean
        cross-entropy 1, sum ``N``. Damping hyperparameters are given in the papers'
        units and applied to the module's curvature as ``s·γ``. ``D`` is read from the
        targets (N, D); class-index targets of a cross-entropy need none.
        """
        n = x.shape[0]
        outputs = 1 if self.loss_kind is LossKind.SOFTMAX_CROSS_ENTROPY else max(y.numel() // max(n, 1), 1)
        return per_example_scale(self.loss_fn, n, outputs)

    def begin_step(self) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """The group, its state (initialised on the first step) and whether the group's
        damping changed since the last step; the state's ``damping`` is brought up to
        date by :func:`follow_damping`."""
        group = self.group
        st = self.group_state(group)
        if "step" not in st:
            st.update(step=0, damping=group["damping"], damping_base=group["damping"])
        st["damping"], changed = follow_damping(st["damping"], st["damping_base"], group["damping"],
                                                adapt=group.get("adapt_damping", False))
        st["damping_base"] = group["damping"]
        return group, st, changed

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError(f"{type(self).__name__} has one param group: the curvature couples all parameters")
        super().add_param_group(param_group)

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
