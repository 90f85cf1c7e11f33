"""Diagonal Gauss-Newton: a damped diagonal Newton step (Becker & LeCun 1988).

With ``d_t`` an exponential moving average of the GN diagonal (exact, or Monte-Carlo
with ``mc_samples`` sampled output columns; see :mod:`benchsuite.curvature.diagonal`)
and ``m_t`` the gradient, or its moving average when ``momentum > 0``,

    d_t = β d_{t−1} + (1 − β) diag(G_t),     θ ← θ − lr · m̂_t / (d̂_t + λ),

where the hats are Adam-style bias corrections ``x̂_t = x_t / (1 − βᵗ)`` (so the
first step uses the current diagonal rather than a shrunken one). For PL
networks ``diag H = diag G ≥ 0``, so the step is a damped Newton step on the
within-parameter curvature. Relatives: Sophia (clipped GN-Bartlett diagonal),
AdaHessian (Hutchinson ``|z ⊙ Hz|``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.curvature.diagonal import diag_ggn_exact, diag_ggn_mc
from benchsuite.contracts.optimizer import Capabilities, OptimizerConfig, check, positive, register_optimizer, unit_interval
from benchsuite.optimizers.base import CurvatureOptimizer

__all__ = ["DiagGN", "DiagGNConfig", "diag_gn_update"]

ESTIMATORS = ("exact", "mc")


@dataclass(frozen=True)
class DiagGNConfig(OptimizerConfig):
    """Hyperparameters of :class:`DiagGN`.

    Defaults (lr 0.05, λ 0.1) cap the step on flat coordinates at an SGD step of
    0.5: with a small λ the damped diagonal Newton step diverged on every
    piecewise-linear digits MLP we tried (the GN diagonal of a mean-reduced
    cross-entropy is tiny for most weights), and lr 0.1 with λ 0.1 still diverged
    with absolute-value units.
    """

    lr: float = 0.05
    damping: float = 0.1
    estimator: str = "exact"
    mc_samples: int = 1
    curvature_decay: float = 0.95
    momentum: float = 0.0
    stat_period: int = 1

    def __post_init__(self) -> None:
        positive("learning rate", self.lr)
        positive("damping", self.damping)
        check(self.estimator in ESTIMATORS, f"estimator (valid: {', '.join(ESTIMATORS)})", self.estimator)
        check(isinstance(self.mc_samples, int) and self.mc_samples >= 1, "mc_samples", self.mc_samples)
        unit_interval("curvature_decay", self.curvature_decay)
        unit_interval("momentum", self.momentum)
        check(isinstance(self.stat_period, int) and self.stat_period >= 1, "stat_period", self.stat_period)


def diag_gn_update(grad: torch.Tensor, diag: torch.Tensor, *, lr: float, damping: float) -> torch.Tensor:
    """The step ``−lr · grad / (diag + damping)`` (a pure function on tensors)."""
    return -lr * grad / (diag + damping)


class DiagGN(CurvatureOptimizer):
    """Damped diagonal Gauss-Newton with moving averages (see the module docstring).

    State per parameter: ``diag`` (EMA of the GN diagonal), ``grad_avg`` (EMA of the
    gradient when momentum is on); globally the step count and the number of
    curvature updates (for bias correction).
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, config: DiagGNConfig | None = None):
        self.config = config or DiagGNConfig()
        super().__init__(model, loss_fn, dict(self.config.to_dict()))
        self.state["diag_gn"] = {"steps": 0, "curvature_updates": 0}

    @torch.no_grad()
    def _curvature(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        c = self.config
        if c.estimator == "exact":
            return diag_ggn_exact(self.net, self.loss_fn, x, y)
        return diag_ggn_mc(self.net, self.loss_fn, x, y, mc_samples=c.mc_samples, generator=self.generator)

    def step(self, closure):  # type: ignore[override]
        c = self.config
        x, y = self.batch(closure)
        loss = closure()
        st = self.state["diag_gn"]
        if st["steps"] % c.stat_period == 0:
            st["curvature_updates"] += 1
            for p, d in zip(self.params, self._curvature(x, y)):
                s = self.state[p]
                old = s.get("diag", torch.zeros_like(d))  # zero start + bias correction below
                s["diag"] = c.curvature_decay * old + (1 - c.curvature_decay) * d
        st["steps"] += 1
        d_corr = 1 - c.curvature_decay ** st["curvature_updates"]
        m_corr = 1 - c.momentum ** st["steps"]
        with torch.no_grad():
            for p in self.params:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                s = self.state[p]
                if c.momentum > 0:
                    s["grad_avg"] = c.momentum * s.get("grad_avg", torch.zeros_like(p)) + (1 - c.momentum) * g
                    g = s["grad_avg"] / m_corr
                p.add_(diag_gn_update(g, s["diag"] / d_corr, lr=c.lr, damping=c.damping))
        return loss


@register_optimizer("diag_gn", DiagGNConfig, Capabilities(uses_curvature=True),
                    search_space={"lr": {"log": [1e-3, 1.0]}, "damping": {"log": [1e-4, 1.0]}})
def diag_gn(model: nn.Module, loss_fn: nn.Module, config: DiagGNConfig) -> DiagGN:
    """Diagonal Gauss-Newton (exact or Monte-Carlo diagonal, EMA, damping, momentum)."""
    return DiagGN(model, loss_fn, config)
