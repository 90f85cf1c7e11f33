"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2012).

Each step, on a gradient batch ``B`` (the closure's batch) and a curvature batch
``S ⊂ B`` (its first ``curvature_batch_size`` examples):

1. ``g = ∇f_B(θ)``;
2. ``A v = G_S v + λ v`` with the exact GN-vector product ``G_S v = Jᵀ ℋ J v``
   (forward-mode JVP, output Hessian, VJP; never the Hessian, which may be indefinite);
3. preconditioner ``M = (mean_n ∇ℓ_n ⊙ ∇ℓ_n + λ)^{3/4}`` from per-example gradients on
   ``B`` (``sum_n`` for a sum-reduced loss);
4. warm start ``x₀ = 0.95 · x_prev`` (the previous *un-backtracked* CG solution);
5. preconditioned CG on ``φ(x) = gᵀx + ½ xᵀAx`` with Martens' relative-progress rule,
   ``max_cg_iters``, and a bail-out on ``pᵀAp ≤ 0``;
6. CG backtracking over the stored iterates ``⌈5·1.3ʲ⌉`` on ``f_B``;
7. Levenberg-Marquardt: ``ρ = (f_S(θ+p) − f_S(θ)) / (g_Sᵀp + ½ pᵀG_S p)`` on ``S`` with
   the undamped model; ``ρ < ¼ → λ ← 3/2·λ``, ``ρ > ¾ → λ ← 2/3·λ``;
8. Armijo backtracking ``α = 1, 0.8, 0.8², …`` while
   ``f_B(θ+αp) > f_B(θ) + 10⁻²·α·gᵀp`` (at most 60 tries; no step if none passes);
   ``θ ← θ + lr·α·p`` (the learning rate scales the accepted step; 1 is Martens').

Every hyperparameter lives in ``param_groups`` and is read at each step. The group's
``damping`` is the initial λ: LM adapts the value in use, which a change of the
group's value re-bases (:func:`benchsuite.optimizers.base.follow_damping`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from benchsuite.optimizers.base import CurvatureOptimizer
from benchsuite.optimizers.cg import STOP_REASONS, backtrack_iterates, martens_cg
from benchsuite.optimizers.damping import lm_update, reduction_ratio
from benchsuite.optimizers.line_search import armijo
from torch import Tensor, nn

from benchsuite.contracts.optimizer import (
    Capabilities,
    OptimizerConfig,
    StepClosure,
    check,
    positive,
    register_optimizer,
    unit_interval,
)
from benchsuite.curvature.diagonal import diag_empirical_fisher
from benchsuite.curvature.products import GGNOperator

__all__ = ["HFConfig", "HessianFree", "hf_preconditioner"]


@dataclass(frozen=True)
class HFConfig(OptimizerConfig):
    """Hyperparameters of :class:`HessianFree` (defaults follow Martens 2010).

    ``damping`` is the initial λ: Martens used 45 for the autoencoders with a summed
    per-case loss; with torch's mean reductions the curvature is smaller by the
    number of outputs, so a smaller λ is the equivalent choice (1.0 here).
    ``min_damping`` floors the LM-adapted λ: on small stochastic mini-batches an
    undamped GN solve fits the batch, not the data set.
    """

    lr: float = 1.0
    damping: float = 1.0
    adapt_damping: bool = True
    min_damping: float = 1e-3
    curvature_batch_size: int | None = None  # None: the whole gradient batch
    max_cg_iters: int = 250
    min_cg_iters: int = 1
    cg_tol: float = 5e-4
    warm_start_decay: float = 0.95
    precondition: bool = True
    precond_exponent: float = 0.75
    backtrack: bool = True
    line_search: bool = True
    armijo_c: float = 1e-2
    armijo_shrink: float = 0.8
    max_line_search: int = 60

    def __post_init__(self) -> None:
        positive("learning rate", self.lr)
        positive("damping", self.damping)
        check(0 < self.min_damping <= self.damping, "min_damping (need 0 < min_damping <= damping)", self.min_damping)
        check(self.curvature_batch_size is None or (isinstance(self.curvature_batch_size, int)
                                                    and self.curvature_batch_size > 0),
              "curvature_batch_size", self.curvature_batch_size)
        check(isinstance(self.max_cg_iters, int) and self.max_cg_iters >= 1, "max_cg_iters", self.max_cg_iters)
        check(isinstance(self.min_cg_iters, int) and 1 <= self.min_cg_iters <= self.max_cg_iters,
              "min_cg_iters", self.min_cg_iters)
        check(self.cg_tol >= 0, "cg_tol", self.cg_tol)
        unit_interval("warm_start_decay", self.warm_start_decay, closed=True)
        check(0 < self.precond_exponent <= 1, "precond_exponent", self.precond_exponent)
        check(0 < self.armijo_c < 1, "armijo_c", self.armijo_c)
        check(0 < self.armijo_shrink < 1, "armijo_shrink", self.armijo_shrink)
        check(isinstance(self.max_line_search, int) and self.max_line_search >= 1,
              "max_line_search", self.max_line_search)


def hf_preconditioner(sq_grads: Tensor, damping: float, exponent: float = 0.75) -> Tensor:
    """Martens' (2010, §4.7) diagonal CG preconditioner ``M = (Σ_n ∇ℓ_n ⊙ ∇ℓ_n + λ)^ξ`` (P,)."""
    return (sq_grads + damping) ** exponent


class HessianFree(CurvatureOptimizer):
    """Hessian-free optimisation with the Gauss-Newton matrix (see the module docstring).

    Usable in any loop: ``opt.step(StepClosure(model, loss_fn, x, y))``; keyword
    overrides of the config are validated like it. State per parameter: the previous CG
    solution ``x_prev``; under the group's first parameter the ``step`` count, the
    damping ``λ`` in use and the group value it follows (``damping_base``), and
    diagnostics of the last step: ``cg_iters``, ``cg_stop`` (an index into
    :data:`~benchsuite.optimizers.cg.STOP_REASONS`: state holds no strings, which
    torch's ``load_state_dict`` would mangle), ``rho`` and ``alpha``.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, config: HFConfig | None = None, **overrides):
        super().__init__(model, loss_fn, config or HFConfig(), overrides)

    def step(self, closure: StepClosure) -> Tensor:  # type: ignore[override]
        """One Hessian-free step ``θ ← θ + lr·α·p`` on the closure's batch (Martens 2010, Alg. 1).

        Reads every hyperparameter from the param group. Returns the loss before the step.
        """
        x, y = self.batch(closure)
        loss = closure()  # (): f_B(θ), gradients in .grad
        group, st, _ = self.begin_step()
        g = self.flat_grad()  # (P,)
        n_s = min(group["curvature_batch_size"] or x.shape[0], x.shape[0])
        xs, ys = x[:n_s], y[:n_s]
        lam = st["damping"]

        op = GGNOperator(self.net, self.loss_fn, xs, ys)  # forward pass on S cached for all of CG

        def gn(v: Tensor) -> Tensor:  # G_S v, flat
            return torch.cat([t.reshape(-1) for t in op.matvec(self.unflat(v))])

        precond = None
        if group["precondition"]:
            fisher = torch.cat([d.reshape(-1) for d in diag_empirical_fisher(self.net, self.loss_fn, x, y)])  # (P,)
            precond = hf_preconditioner(fisher, lam, group["precond_exponent"])  # (P,)
        result = martens_cg(lambda v: gn(v) + lam * v, -g, group["warm_start_decay"] * self._get_prev(g),
                            precond=precond, max_iters=group["max_cg_iters"], min_iters=group["min_cg_iters"],
                            progress_tol=group["cg_tol"])
        self._set_prev(result.x)
        f0 = float(loss)
        if group["backtrack"]:
            p, _ = backtrack_iterates(result.iterates, lambda d: self.loss_at(d, x, y))
        else:
            p = result.x
        rho = float("nan")
        if group["adapt_damping"]:
            with torch.enable_grad():
                loss_s = self.loss_fn(self.model(xs), ys)
                g_s = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss_s, self.params)])  # (P,)
            predicted = float(g_s @ p + 0.5 * (p @ gn(p)))
            rho = reduction_ratio(self.loss_at(p, xs, ys) - float(loss_s.detach()), predicted)
            st["damping"] = lm_update(lam, rho, minimum=group["min_damping"])
        slope = float(g @ p)
        if group["line_search"]:
            alpha, _ = armijo(lambda a: self.loss_at(p, x, y, a), f0, slope, shrink=group["armijo_shrink"],
                              c=group["armijo_c"], max_tries=group["max_line_search"])
        else:
            alpha = 1.0
        self.add_to_params(p, group["lr"] * alpha)
        st.update(step=st["step"] + 1, cg_iters=result.iters, cg_stop=STOP_REASONS.index(result.stop), rho=rho,
                  alpha=alpha)
        return loss

    def _get_prev(self, like: Tensor) -> Tensor:
        parts = [self.state[p].get("x_prev") for p in self.params]
        if any(t is None for t in parts):
            return torch.zeros_like(like)
        return torch.cat([t.reshape(-1) for t in parts])

    def _set_prev(self, flat: Tensor) -> None:
        for p, t in zip(self.params, self.unflat(flat)):
            self.state[p]["x_prev"] = t.detach().clone()


# Initial λ over four decades (LM adapts it afterwards; min_damping 1e-3 stays below the range).
@register_optimizer("hf", HFConfig, Capabilities(uses_curvature=True),
                    search_space={"damping": {"log": [1e-2, 1e2]}})
def hf(model: nn.Module, loss_fn: nn.Module, config: HFConfig) -> HessianFree:
    """Hessian-free (Martens 2010): CG on the damped Gauss-Newton system, LM damping, line search."""
    return HessianFree(model, loss_fn, config)
