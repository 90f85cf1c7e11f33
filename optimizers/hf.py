"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2012).

Units. Damping is given in the papers' units: those of the loss *per example, summed
over outputs*, ``f(θ) = (1/N) Σ_n L_n`` with ``L_n = Σ_d ℓ(h_nd, y_nd)`` (Martens 2010;
his ``nnet_train_2.m`` adds λ to the curvature "divided by the number of cases", lines
110–116 of the copy cited below). A torch loss module returns ``s·f`` with
``s = per_example_scale(loss_fn, N, D)`` (mean MSE/BCE ``1/D``, mean CE ``1``, sum ``N``),
so its gradient and GN matrix are ``s·g`` and ``s·G``. HF solves the papers' system
``(G_S + λI) p = −g_B`` written in the module's units,

    (G_S,mod + s_S·λ·I) p = −(s_S / s_B) · g_B,mod,

which is the same equation for either reduction and any number of outputs (for a mean
reduction ``s_S = s_B = s`` and it reads ``(G_mod + sλI) p = −g_mod``). So Martens'
published λ₀ = 45 is written verbatim, and LM adapts λ in those units.

Each step, on a gradient batch ``B`` (the closure's batch of ``N`` examples), a
curvature batch ``S`` (its first ``curvature_batch_size`` examples, by default the first
``⌈curvature_fraction·N⌉``) and the held-out rest ``H = B \\ S``:

1. ``g = ∇f_B(θ)``;
2. ``A v = G_S v + λ v`` with the exact GN-vector product ``G_S v = Jᵀ ℋ J v``
   (forward-mode JVP, output Hessian, VJP; never the Hessian, which may be indefinite);
3. preconditioner ``M = (mean_{n∈B} ∇L_n ⊙ ∇L_n + λ)^{3/4}`` (:func:`per_case_sq_grads`);
4. warm start ``x₀ = 0.95 · x_prev`` (the previous *un-backtracked* CG solution);
5. preconditioned CG on ``φ(x) = gᵀx + ½ xᵀAx`` with Martens' relative-progress rule,
   ``max_cg_iters``, and a bail-out on ``pᵀAp ≤ 0``;
6. CG backtracking over the stored iterates ``⌈5·1.3ʲ⌉`` on ``f_B``;
7. Levenberg-Marquardt: ``ρ = (f_H(θ+p) − f_H(θ)) / (g_Bᵀp + ½ pᵀG_S p)`` with the
   undamped model CG minimised and the *actual* change measured on the held-out ``H``
   (on ``S`` when ``H`` is empty); ``ρ < ¼ → λ ← 3/2·λ``, ``ρ > ¾ → λ ← 2/3·λ``;
8. Armijo backtracking ``α = 1, 0.8, 0.8², …`` while
   ``f_B(θ+αp) > f_B(θ) + 10⁻²·α·gᵀp`` or (``heldout_guard``) ``f_H(θ+αp) > f_H(θ)``
   (at most 60 tries; no step if none passes); ``θ ← θ + lr·α·p``.

Why ρ on held-out examples (step 7). Martens' code measures the actual reduction on the
curvature chunk and remarks that "this computation could probably be done on a different
subset of the training data or even the whole thing" (``nnet_train_2.m`` lines
1336–1350); his gradient and line search use the whole training set, so a step that
fits the chunk but not the data set is caught there. Martens & Sutskever (2012, §20.12)
compute gradient and curvature on different mini-batches for the same reason. With a
small stochastic batch and ``S = B`` everything is measured on the batch the step was
fitted to: the quadratic model predicts that batch well, ρ ≈ 1, λ falls to its floor,
and the near-Newton step over-fits the batch (``tabular_regression`` at tiny, batch 64,
60 steps, seeds 0–2, from 1.02, 0.95, 1.16: the full training loss peaked at 3.1–4.1×
its start and ended at 2.87, 1.16, 0.86; with ρ on ``H`` it peaked at 1.35–1.84× and
ended at 1.00, 0.80, 0.49). Measuring ρ on ``H`` makes λ grow exactly when the step does not carry over
to unseen examples; the held-out guard of the line search refuses a step that raises
their loss. Deviation: the model's gradient term is ``g_B`` (it includes ``H``), as in
Martens' code, whose ρ denominator uses the whole-data gradient.

Every hyperparameter lives in ``param_groups`` and is read at each step. The group's
``damping`` is the initial λ: LM adapts the value in use, which a change of the
group's value re-bases (:func:`benchsuite.optimizers.base.follow_damping`).

Non-finite values raise ``FloatingPointError("HF: non-finite <what> at step k")``
(the runner records the run as diverged) instead of writing NaN into the parameters:
the loss or gradient, the CG solution, the model's predicted reduction (hence ρ) and
the step. A non-finite loss *at the trial point* ``θ+p`` is an overshoot, not a
failure: ρ is then ``−∞`` and λ grows, and the line search shrinks ``α``.

Reference code: James Martens' ``nnet_train_2.m`` as redistributed in
github.com/HessianFreeOptimization/HessianFreeOptimization, commit ``1880f21``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from benchsuite.optimizers.base import CurvatureOptimizer
from benchsuite.optimizers.cg import STOP_REASONS, CGResult, backtrack_iterates, martens_cg
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
from benchsuite.curvature.losses import per_example_scale
from benchsuite.curvature.model import SequentialModel
from benchsuite.curvature.products import GGNOperator

__all__ = ["HFConfig", "HessianFree", "hf_preconditioner", "per_case_sq_grads"]


@dataclass(frozen=True)
class HFConfig(OptimizerConfig):
    """Hyperparameters of :class:`HessianFree` (defaults follow Martens 2010).

    ``damping`` (the initial λ) and ``min_damping`` are in the papers' units: per
    example, loss summed over outputs (see the module docstring), whatever the loss
    module's reduction. Martens used λ₀ = 45 for the autoencoders; the default 1.0
    suits classifiers (the scale of a softmax cross-entropy's curvature) and is the
    value this optimizer used before the units changed, so classifiers with a mean
    cross-entropy (``s = 1``) are damped as before (a mean MSE/BCE over D outputs is
    damped D times less than before at the same number). ``min_damping`` floors the
    LM-adapted λ. ``curvature_fraction`` sets the curvature batch when
    ``curvature_batch_size`` is None; the rest of the gradient batch is held out for ρ
    and, with ``heldout_guard``, for the line search's guard (1.0: curvature on the
    whole batch and ρ in-sample, the behaviour before the split). λ₀ ∈ {0.1, 1, 10}
    on the tabular tasks at batch 64 (3 seeds): 1 ended lowest on both.
    """

    lr: float = 1.0
    damping: float = 1.0
    adapt_damping: bool = True
    min_damping: float = 1e-3
    curvature_batch_size: int | None = None  # None: ⌈curvature_fraction · N⌉
    curvature_fraction: float = 0.5
    heldout_guard: bool = True
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
        check(0 < self.curvature_fraction <= 1, "curvature_fraction (need 0 < f <= 1)", self.curvature_fraction)
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
    """Martens' (2010, §4.7) diagonal CG preconditioner ``M = (sq_grads + λ)^ξ`` (P,).

    With ``sq_grads = mean_n ∇L_n ⊙ ∇L_n`` from :func:`per_case_sq_grads` and λ in the
    same (per-example) units this is Martens' ``nnet_train_2.m`` line 1264,
    ``precon = (grad2 + lambda + weightcost).^(3/4)`` without the weight-cost term
    (no ℓ2 prior here). Any constant factor on ``M`` leaves the PCG iterates unchanged.
    """
    return (sq_grads + damping) ** exponent


def num_outputs(net: SequentialModel) -> int:
    """``D``, the logits per example: the last Linear layer's ``out_features``."""
    return int(net.modules[net.linear_indices[-1]].out_features)


def per_case_sq_grads(net: SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``mean_n ∇L_n ⊙ ∇L_n`` (P,), ``L_n`` the per-case loss *summed over outputs*.

    Martens' statistic, whatever the loss module's reduction: ``nnet_train_2.m`` sums the
    per-case squared gradients of the per-case loss (line 1086,
    ``dEdW2{i} = (dEdxi.^2)*(yi.^2)'``) and divides by the number of cases (line 1117,
    ``grad2 = grad2 / conv(numcases)``). Martens (2010, §4.7) writes the sum
    ``Σ_i ∇f_i²`` with λ on the unnormalised curvature; the mean goes with λ per
    example, and the two differ by a constant factor only. Deviation: the mean runs
    over the gradient batch ``B``, not the whole training set (his gradient set).

    From :func:`~benchsuite.curvature.diagonal.diag_empirical_fisher`, which returns
    ``mean_n ∇ℓ_n²`` (``sum_n`` for a sum reduction) with ``ℓ_n`` the module applied to
    example ``n`` alone: ``ℓ_n = s₁·L_n`` with ``s₁ = per_example_scale(loss_fn, 1, D)``
    (mean MSE/BCE ``1/D``, CE ``1``; sum ``1``), so
    ``mean_n ∇L_n² = diag_empirical_fisher / s₁²``, divided further by ``N`` for a sum.
    """
    d = num_outputs(net)
    s1 = per_example_scale(loss_fn, 1, d)
    fisher = torch.cat([t.reshape(-1) for t in diag_empirical_fisher(net, loss_fn, x, y)])  # (P,)
    if loss_fn.reduction == "sum":
        fisher = fisher / x.shape[0]
    return fisher / (s1 * s1)


class _Batches(NamedTuple):
    """One step's batches: gradient ``B``, curvature ``S`` (first ``n_s``) and held-out ``H = B \\ S``."""

    x: Tensor  # B inputs, (N, …)
    y: Tensor  # B targets, (N, …)
    xs: Tensor  # S inputs, (n_s, …)
    ys: Tensor  # S targets, (n_s, …)
    xh: Tensor  # H inputs, (N − n_s, …)
    yh: Tensor  # H targets, (N − n_s, …)
    n: int  # N
    n_s: int
    d: int  # D, outputs per example
    s_b: float  # per_example_scale(loss_fn, N, D)
    s_s: float  # per_example_scale(loss_fn, n_s, D)

    @property
    def heldout(self) -> bool:
        """Whether ``H`` is non-empty."""
        return self.n_s < self.n


class HessianFree(CurvatureOptimizer):
    """Hessian-free optimisation with the Gauss-Newton matrix (see the module docstring).

    Usable in any loop: ``opt.step(StepClosure(model, loss_fn, x, y))``; keyword
    overrides of the config are validated like it. State per parameter: the previous CG
    solution ``x_prev``; under the group's first parameter the ``step`` count, the
    damping ``λ`` in use (papers' units) and the group value it follows
    (``damping_base``), and diagnostics of the last step: ``cg_iters``, ``cg_stop`` (an
    index into :data:`~benchsuite.optimizers.cg.STOP_REASONS`: state holds no strings,
    which torch's ``load_state_dict`` would mangle), ``rho`` and ``alpha``.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, config: HFConfig | None = None, **overrides):
        super().__init__(model, loss_fn, config or HFConfig(), overrides)

    def step(self, closure: StepClosure) -> Tensor:  # type: ignore[override]
        """One Hessian-free step ``θ ← θ + lr·α·p`` on the closure's batch (Martens 2010, Alg. 1).

        Reads every hyperparameter from the param group. Returns the loss before the step.

        Raises:
            FloatingPointError: on a non-finite loss, gradient, CG solution, predicted
                reduction or step (nothing is applied).
        """
        x, y = self.batch(closure)
        loss = closure()  # (): f_B(θ), gradients in .grad
        group, st, _ = self.begin_step()
        k = st["step"]
        f0 = float(loss)
        g = self.flat_grad()  # (P,)
        _finite(f0, "loss", k)
        _finite(g, "gradient", k)
        b = self._split(group, x, y)
        lam = st["damping"]  # papers' units
        gn = self._gn_product(b.xs, b.ys)
        result, p = self._solve(group, b, g, gn, lam, k)
        fh0 = self.loss_at(torch.zeros_like(p), b.xh, b.yh) if b.heldout else math.nan  # f_H(θ)
        rho = self._adapt_damping(group, st, b, g, p, gn, lam, fh0, k)
        alpha = self._line_search(group, b, p, f0, float(g @ p), fh0)
        delta = (group["lr"] * alpha) * p  # (P,)
        _finite(delta, "step", k)
        self.add_to_params(delta)
        st.update(step=k + 1, cg_iters=result.iters, cg_stop=STOP_REASONS.index(result.stop), rho=rho,
                  alpha=alpha)
        return loss

    def _split(self, group: dict[str, Any], x: Tensor, y: Tensor) -> _Batches:
        """The gradient batch ``B``, its first ``n_s`` examples ``S`` and the held-out rest ``H``."""
        n = x.shape[0]
        n_s = min(group["curvature_batch_size"] or math.ceil(group["curvature_fraction"] * n), n)
        d = num_outputs(self.net)
        s_b, s_s = per_example_scale(self.loss_fn, n, d), per_example_scale(self.loss_fn, n_s, d)
        return _Batches(x, y, x[:n_s], y[:n_s], x[n_s:], y[n_s:], n, n_s, d, s_b, s_s)

    def _gn_product(self, xs: Tensor, ys: Tensor) -> Callable[[Tensor], Tensor]:
        """``v ↦ G_S,mod v`` on flat vectors (P,), by the exact GN-vector product ``Jᵀ ℋ J v``."""
        op = GGNOperator(self.net, self.loss_fn, xs, ys)  # forward pass on S cached for all of CG

        def gn(v: Tensor) -> Tensor:  # G_S,mod v, flat (P,)
            return torch.cat([t.reshape(-1) for t in op.matvec(self.unflat(v))])

        return gn

    def _solve(self, group: dict[str, Any], b: _Batches, g: Tensor, gn: Callable[[Tensor], Tensor], lam: float,
               k: int) -> tuple[CGResult, Tensor]:
        """Steps 3–6: ``(G_S,mod + s_S·λ·I) p = −(s_S / s_B)·g_B,mod`` by warm-started PCG.

        Returns the CG result (its ``x`` is stored as the next warm start) and the step
        ``p`` (P,), the iterate chosen by CG backtracking on ``f_B`` when ``backtrack``.
        """
        precond = None
        if group["precondition"]:
            precond = hf_preconditioner(per_case_sq_grads(self.net, self.loss_fn, b.x, b.y), lam,
                                        group["precond_exponent"])  # (P,)
        rhs = -(b.s_s / b.s_b) * g  # (P,): −g_B in the units of G_S,mod
        result = martens_cg(lambda v: gn(v) + (b.s_s * lam) * v, rhs, group["warm_start_decay"] * self._get_prev(g),
                            precond=precond, max_iters=group["max_cg_iters"], min_iters=group["min_cg_iters"],
                            progress_tol=group["cg_tol"])
        _finite(result.x, "CG solution", k)
        self._set_prev(result.x)
        if group["backtrack"]:
            p, _ = backtrack_iterates(result.iterates, lambda v: self.loss_at(v, b.x, b.y))
        else:
            p = result.x
        return result, p

    def _adapt_damping(self, group: dict[str, Any], st: dict[str, Any], b: _Batches, g: Tensor, p: Tensor,
                       gn: Callable[[Tensor], Tensor], lam: float, fh0: float, k: int) -> float:
        """Step 7: ``ρ`` on ``H`` (on ``S`` when ``H`` is empty) and the LM update of λ; NaN when off.

        ``ρ = (f_H(θ+p) − f_H(θ)) / (g_Bᵀp + ½ pᵀG_S p)``, both in the papers' units.
        """
        if not group["adapt_damping"]:
            return float("nan")
        # Undamped model CG minimised, in the papers' units: g_Bᵀp + ½ pᵀ G_S p.
        predicted = float(g @ p) / b.s_b + 0.5 * float(p @ gn(p)) / b.s_s
        _finite(predicted, "predicted reduction (rho)", k)
        if b.heldout:
            actual = (self.loss_at(p, b.xh, b.yh) - fh0) / per_example_scale(self.loss_fn, b.n - b.n_s, b.d)
        else:
            actual = (self.loss_at(p, b.xs, b.ys) - self.loss_at(torch.zeros_like(p), b.xs, b.ys)) / b.s_s
        rho = reduction_ratio(actual, predicted)
        st["damping"] = lm_update(lam, rho, minimum=group["min_damping"])
        return rho

    def _line_search(self, group: dict[str, Any], b: _Batches, p: Tensor, f0: float, slope: float,
                     fh0: float) -> float:
        """Step 8: Armijo's ``α`` on ``f_B`` along ``p``; with ``heldout_guard``, no rise of ``f_H``.

        ``α = 1, 0.8, 0.8², …`` while ``f_B(θ+αp) > f_B(θ) + 10⁻²·α·gᵀp`` or ``f_H(θ+αp) > f_H(θ)``;
        ``α = 1`` without ``line_search``.
        """
        if not group["line_search"]:
            return 1.0
        guard = group["heldout_guard"] and b.heldout

        def along(a: float) -> float:  # f_B(θ + a p), +inf where the held-out loss rises
            if guard and not self.loss_at(p, b.xh, b.yh, a) <= fh0:
                return math.inf
            return self.loss_at(p, b.x, b.y, a)

        alpha, _ = armijo(along, f0, slope, shrink=group["armijo_shrink"], c=group["armijo_c"],
                          max_tries=group["max_line_search"])
        return alpha

    def _get_prev(self, like: Tensor) -> Tensor:
        parts = [self.state[p].get("x_prev") for p in self.params]
        if any(t is None for t in parts):
            return torch.zeros_like(like)
        return torch.cat([t.reshape(-1) for t in parts])

    def _set_prev(self, flat: Tensor) -> None:
        for p, t in zip(self.params, self.unflat(flat)):
            self.state[p]["x_prev"] = t.detach().clone()


def _finite(value: Tensor | float, what: str, step: int) -> None:
    """Raise ``FloatingPointError("HF: non-finite <what> at step k")`` unless ``value`` is finite."""
    ok = bool(torch.isfinite(value).all()) if isinstance(value, Tensor) else math.isfinite(value)
    if not ok:
        raise FloatingPointError(f"HF: non-finite {what} at step {step}")


# Initial λ (papers' units) over four decades, Martens' 45 included; LM adapts it afterwards
# (min_damping 1e-3 stays below the range).
@register_optimizer("hf", HFConfig, Capabilities(uses_curvature=True),
                    search_space={"damping": {"log": [1e-2, 1e2]}})
def hf(model: nn.Module, loss_fn: nn.Module, config: HFConfig) -> HessianFree:
    """Hessian-free (Martens 2010): CG on the damped Gauss-Newton system, LM damping, line search."""
    return HessianFree(model, loss_fn, config)
