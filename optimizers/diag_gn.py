"""Diagonal Gauss-Newton: a damped diagonal Newton step (Becker & LeCun 1988).

With ``d_t`` an exponential moving average of the GN diagonal (exact, or Monte-Carlo
with ``mc_samples`` sampled output columns; see :mod:`benchsuite.curvature.diagonal`)
and ``m_t`` the gradient, or its moving average when ``momentum > 0``,

    d_t = β d_{t−1} + (1 − β) diag(G_t),     θ ← θ − lr · m̂_t / (d̂_t + λ),

where the hats are Adam-style bias corrections ``x̂_t = x_t / (1 − βᵗ)`` (so the
first step uses the current diagonal rather than a shrunken one).

The diagonal ignores the coupling between parameters, so by default (``rescale``)
the update ``u`` is scaled by Botev et al.'s (2017, §4) ``α = min(1, −gᵀu/(uᵀ(G +
λI)u))`` with one exact mini-batch GN-vector product, and (``adapt_damping``) λ
follows the Levenberg-Marquardt rule of Martens (2010, §4.1) on the reduction ratio
``ρ = (f(θ+αu) − f(θ)) / (−αgᵀΔ + ½α²ΔᵀGΔ)`` of the batch, every step, with a step
that raised the batch loss undone (Moré 1978). Measured on the tiny smoke tasks
(2 seeds): without them λ = 0.1 diverged on CURVES (leaky ReLU) and on a digits MLP
with absolute-value units; with them no run diverged and the final training loss
fell about 10-fold on digits and below the mean-image plateau (0.245) on CURVES.

Units of λ: the papers' (loss per example, summed over outputs). The loss module
returns ``s`` times that objective (:func:`benchsuite.curvature.per_example_scale`:
mean MSE/BCE ``1/D``, mean cross-entropy 1, sum ``N``), its gradient and diagonal
carry ``s``, and λ is applied as ``s·λ``: ``s m̂ / (s d̂ + s λ) = m̂ / (d̂ + λ)`` in
the papers' units, the same step for either reduction and any output count. For PL
networks ``diag H = diag G ≥ 0``, so the step is a damped Newton step on the
within-parameter curvature. Relatives: Sophia (clipped GN-Bartlett diagonal),
AdaHessian (Hutchinson ``|z ⊙ Hz|``).

Every hyperparameter lives in ``param_groups`` and is read at each step (a scheduler
may change ``lr``, ``damping``, ...). The estimator is an :class:`Estimator`; the group
holds its string value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from benchsuite.optimizers.base import CurvatureOptimizer, check_finite
from benchsuite.optimizers.damping import lm_update, reduction_ratio
from benchsuite.optimizers.kfgn import rescale_step_sizes
from torch import Tensor, nn

from benchsuite.contracts.optimizer import (
    Capabilities,
    OptimizerConfig,
    StepClosure,
    check,
    choice,
    positive,
    register_optimizer,
    unit_interval,
)
from benchsuite.curvature.diagonal import diag_ggn_exact, diag_ggn_mc
from benchsuite.curvature.model import SequentialModel
from benchsuite.curvature.products import ggn_matrix_product

__all__ = ["ESTIMATORS", "DiagGN", "DiagGNConfig", "Estimator", "diag_gn_step", "diag_gn_update"]


class Estimator(str, Enum):
    """How the GN diagonal is computed (:mod:`benchsuite.curvature.diagonal`)."""

    EXACT = "exact"
    MC = "mc"


DiagonalFn = Callable[[SequentialModel, nn.Module, Tensor, Tensor, int, torch.Generator], list[Tensor]]

#: GN diagonal per estimator: ``fn(net, loss_fn, x, y, mc_samples, generator)`` (one tensor per parameter).
ESTIMATORS: dict[Estimator, DiagonalFn] = {
    Estimator.EXACT: lambda net, loss_fn, x, y, mc, gen: diag_ggn_exact(net, loss_fn, x, y),
    Estimator.MC: lambda net, loss_fn, x, y, mc, gen: diag_ggn_mc(net, loss_fn, x, y, mc_samples=mc,
                                                                  generator=gen),
}


@dataclass(frozen=True)
class DiagGNConfig(OptimizerConfig):
    """Hyperparameters of :class:`DiagGN`.

    ``damping`` λ is in the papers' units (see the module docstring). Defaults (lr
    0.05, λ 0.1; the same numbers as before the change of units on mean
    cross-entropy, where ``s = 1``) cap the step on flat coordinates at an SGD step
    of 0.5: with a small λ the damped diagonal Newton step diverged on every
    piecewise-linear digits MLP we tried (the GN diagonal of a mean-reduced
    cross-entropy is tiny for most weights); λ is the *initial* value of the LM
    adaptation (floored at ``min_damping``). The default estimator is Monte-Carlo
    with one sampled column per example: the exact diagonal backpropagates one column
    per output (784 on the MNIST autoencoder, ~34 gradients of cost against ~3.5),
    and the EMA over steps averages the sampling noise. ``estimator`` accepts the
    enum or its string value.
    """

    lr: float = 0.05
    damping: float = 0.1
    estimator: Estimator = Estimator.MC
    mc_samples: int = 1
    curvature_decay: float = 0.95
    momentum: float = 0.0
    stat_period: int = 1
    rescale: bool = True
    adapt_damping: bool = True
    min_damping: float = 1e-4

    def __post_init__(self) -> None:
        positive("learning rate", self.lr)
        positive("damping", self.damping)
        check(0 < self.min_damping <= self.damping, "min_damping (need 0 < min_damping <= damping)",
              self.min_damping)
        choice(self, "estimator", Estimator)
        check(isinstance(self.mc_samples, int) and self.mc_samples >= 1, "mc_samples", self.mc_samples)
        unit_interval("curvature_decay", self.curvature_decay)
        unit_interval("momentum", self.momentum)
        check(isinstance(self.stat_period, int) and self.stat_period >= 1, "stat_period", self.stat_period)


def diag_gn_update(grad: Tensor, diag: Tensor, *, lr: float, damping: float) -> Tensor:
    """The step ``−lr · grad / (diag + damping)`` (a pure function on tensors)."""
    return -lr * grad / (diag + damping)


def diag_gn_step(grad: Tensor, diag: Tensor, grad_avg: Tensor | None, *, step: int, curvature_updates: int,
                 lr: float, damping: float, momentum: float, curvature_decay: float) -> tuple[Tensor, Tensor | None]:
    """One parameter's bias-corrected damped diagonal GN step (Becker & LeCun 1988).

    ``θ ← θ − lr · m̂_t / (d̂_t + λ)`` with ``d̂ = d / (1 − βᶜ)`` after ``c`` curvature
    updates and, with momentum μ, ``m_t = μ m_{t−1} + (1 − μ) g``,
    ``m̂ = m / (1 − μᵗ)`` (``m̂ = g`` without momentum).

    Args:
        grad: The gradient (same shape as the parameter).
        diag: ``d``, the EMA of the GN diagonal (zero start).
        grad_avg: ``m_{t−1}`` (None at the first step or without momentum).
        step: ``t`` (1 at the first step).
        curvature_updates: ``c``.

    Returns:
        ``(update, m_t)``: the additive parameter update and the new gradient average
        (None without momentum).
    """
    if momentum > 0:
        grad_avg = momentum * (grad_avg if grad_avg is not None else torch.zeros_like(grad)) + (1 - momentum) * grad
        grad = grad_avg / (1 - momentum**step)
    else:
        grad_avg = None
    return diag_gn_update(grad, diag / (1 - curvature_decay**curvature_updates), lr=lr, damping=damping), grad_avg


class DiagGN(CurvatureOptimizer):
    """Damped diagonal Gauss-Newton with moving averages (see the module docstring).

    State per parameter: ``diag`` (EMA of the GN diagonal), ``grad_avg`` (EMA of the
    gradient when momentum is on); under the group's first parameter the ``step``
    count, the number of ``curvature_updates`` (for bias correction), the (LM-adapted)
    damping, the last ``alpha`` and ``rho`` and the number of ``rejected`` steps.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, config: DiagGNConfig | None = None, **overrides):
        super().__init__(model, loss_fn, config or DiagGNConfig(), overrides)
        self._cost: list[float] = [0.0] * len(self.params)  # this step's weight cost per parameter

    def step(self, closure: StepClosure) -> Tensor:  # type: ignore[override]
        """One damped diagonal GN step ``θ ← θ − lr·m̂/(d̂ + λ)`` on the closure's batch.

        Reads every hyperparameter from the param group. With the closure's ℓ2 weight
        cost ``c`` (``closure.weight_cost``, module units, on ``closure.l2_params``) the
        diagonal of those weights is ``d + c``: the penalty ``(c/2)‖W‖²`` has Hessian
        ``c·I`` there (Martens 2010, ``nnet_train_2.m`` line 521 adds ``weightcost·maskp``
        to his curvature the same way). Returns the loss (objective) before the step.
        """
        x, y = self.batch(closure)
        loss = closure()
        check_finite("loss", loss.detach())
        group, st, _ = self.begin_step()
        damping = self.loss_scale(x, y) * st["damping"]  # s·λ: λ is in the papers' units
        self._cost = _l2_costs(closure, self.params)  # c per parameter (module units), 0 off l2_params
        if st["step"] % group["stat_period"] == 0:
            self._update_curvature(group, st, x, y)
        st["step"] += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            updates = self._updates(group, st, grads, damping)
            alpha = self._apply(group, st, grads, updates, damping, x, y, loss)
        st["alpha"] = alpha
        return loss

    def _update_curvature(self, group: dict[str, Any], st: dict[str, Any], x: Tensor, y: Tensor) -> None:
        """``d_t = β d_{t−1} + (1 − β) diag(G_t)`` per parameter (zero start), counting the update."""
        decay = group["curvature_decay"]
        st["curvature_updates"] = st.get("curvature_updates", 0) + 1
        with torch.no_grad():
            diags = ESTIMATORS[Estimator(group["estimator"])](self.net, self.loss_fn, x, y, group["mc_samples"],
                                                               self.generator)
        check_finite("GN diagonal", *diags)
        for p, d in zip(self.params, diags):
            s = self.state[p]
            s["diag"] = decay * s.get("diag", torch.zeros_like(d)) + (1 - decay) * d  # zero start, bias-corrected

    def _updates(self, group: dict[str, Any], st: dict[str, Any], grads: list[Tensor],
                 damping: float) -> list[Tensor]:
        """The updates ``u = −lr · m̂_t / (d̂_t + sλ + c)`` per parameter (:func:`diag_gn_step`; ``c`` the
        weight cost on ``l2_params``, 0 elsewhere); stores ``m_t``."""
        updates = []
        for p, grad, cost in zip(self.params, grads, self._cost):
            s = self.state[p]
            update, grad_avg = diag_gn_step(
                grad, s["diag"], s.get("grad_avg"),
                step=st["step"], curvature_updates=st["curvature_updates"], lr=group["lr"],
                damping=damping + cost, momentum=group["momentum"], curvature_decay=group["curvature_decay"])
            if grad_avg is not None:
                s["grad_avg"] = grad_avg
            updates.append(update)
        check_finite("diagonal GN update", *updates)
        return updates

    def _apply(self, group: dict[str, Any], st: dict[str, Any], grads: list[Tensor], updates: list[Tensor],
               damping: float, x: Tensor, y: Tensor, loss: Tensor) -> float:
        """``θ ← θ + α·u`` with Botev et al.'s ``α`` (``rescale``), then the LM update (``adapt_damping``).

        Returns ``α`` (1 when neither is on).
        """
        alpha, gd, dgd = 1.0, math.nan, math.nan
        if group["rescale"] or group["adapt_damping"]:
            alpha, gd, dgd = self._step_size(grads, updates, damping, x, y, rescale=group["rescale"])
        saved = [p.detach().clone() for p in self.params] if group["adapt_damping"] else []
        for p, update in zip(self.params, updates):
            p.add_(update, alpha=alpha)
        check_finite("parameters after the diagonal GN step", *self.params)
        if group["adapt_damping"]:
            self._adapt_damping(group, st, saved, gd, dgd, x, y, loss)
        return alpha

    def _adapt_damping(self, group: dict[str, Any], st: dict[str, Any], saved: list[Tensor], gd: float,
                       dgd: float, x: Tensor, y: Tensor, loss: Tensor) -> None:
        """Martens' (2010, §4.1) LM update of λ from the batch's ``ρ``; a step that raised the
        batch loss is undone (Moré 1978).

        ``ρ = (f(θ+αu) − f(θ)) / (−αgᵀΔ + ½α²ΔᵀGΔ)``; ``saved`` holds θ before the step.
        """
        penalty = sum(0.5 * c * p.square().sum() for p, c in zip(self.params, self._cost) if c)  # on the device
        actual = float(self.loss_fn(self.model(x), y) + penalty) - float(loss)  # objective, as the closure's; one sync
        rho = reduction_ratio(actual, -gd + 0.5 * dgd)  # undamped model of the step −α·Δ
        st["rho"] = rho
        st["damping"] = lm_update(st["damping"], rho, minimum=group["min_damping"])
        if not (math.isfinite(actual) and actual <= 0):  # the batch loss rose: reject the step
            for p, s0 in zip(self.params, saved):
                p.copy_(s0)
            st["rejected"] = st.get("rejected", 0) + 1

    def _step_size(self, grads: list[Tensor], updates: list[Tensor], damping: float, x: Tensor, y: Tensor, *,
                   rescale: bool) -> tuple[float, float, float]:
        """Botev et al.'s (2017, §4) ``α = min(1, −gᵀu / (uᵀ(G + c·mask + sλI)u))`` along the update ``u``.

        ``c·mask`` is the weight cost's curvature (0 without one); it is part of the
        undamped model ``ΔᵀGΔ`` returned for ρ, as the objective includes the penalty.

        The diagonal ignores the coupling between parameters: on a digits MLP with
        absolute-value units ``uᵀGu`` was ~10³ times ``Σ_i d_i u_i²``, the step
        overshot the GN model's minimiser along ``u`` up to 8-fold and the loss went
        to 1e20 within 40 steps. One exact mini-batch GN-vector product (about two
        gradients of cost) caps the step at that minimiser; the ratio is unit-free.
        """
        directions = [-u[None] for u in updates]  # Δ with θ ← θ − Δ, (1, *shape) each
        gv = ggn_matrix_product(self.net, self.loss_fn, x, y, directions)
        gv = [t + c * d if c else t for t, d, c in zip(gv, directions, self._cost)]  # (G + c·mask) Δ
        def flat(ts: list[Tensor]) -> Tensor:
            return torch.cat([t.reshape(1, -1) for t in ts], dim=1)  # (1, P)

        (alpha,), gd, dgd = rescale_step_sizes(flat(grads)[0], flat(directions), flat(gv), damping, rescale=rescale)
        return alpha, gd, dgd


def _l2_costs(closure: StepClosure, params: list[Tensor]) -> list[float]:
    """The closure's weight cost ``c`` (module units) for each parameter in its ``l2_params``, else 0."""
    c = float(getattr(closure, "weight_cost", 0.0))
    l2 = getattr(closure, "l2_params", ())
    return [c if any(p is w for w in l2) else 0.0 for p in params]


@register_optimizer("diag_gn", DiagGNConfig, Capabilities(uses_curvature=True),
                    search_space={"lr": {"log": [1e-3, 1.0]}, "damping": {"log": [1e-4, 1.0]}})
def diag_gn(model: nn.Module, loss_fn: nn.Module, config: DiagGNConfig) -> DiagGN:
    """Diagonal Gauss-Newton (exact or Monte-Carlo diagonal, EMA, damping, momentum)."""
    return DiagGN(model, loss_fn, config)
