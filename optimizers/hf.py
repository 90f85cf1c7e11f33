"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2012).

Units. Damping is given in the papers' units: those of the loss *per example, summed
over outputs*, ``f(θ) = (1/N) Σ_n L_n`` with ``L_n = Σ_d ℓ(h_nd, y_nd)`` (Martens 2010;
his ``nnet_train_2.m`` adds λ to the curvature "divided by the number of cases", lines
110–116 of the copy cited below). A torch loss module returns ``s·f`` with
``s = per_example_scale(loss_fn, N, D)`` (mean MSE/BCE ``1/D``, mean CE ``1``, sum ``N``),
so its gradient and GN matrix are ``s·g`` and ``s·G``. HF solves the papers' system
``(G_S + λI) p = −g`` written in the module's units (``g = g_B``; see below for ``g_S``),

    (G_S,mod + s_S·λ·I) p = −(s_S / s_B) · g_B,mod,

which is the same equation for either reduction and any number of outputs (for a mean
reduction ``s_S = s_B = s`` and it reads ``(G_mod + sλI) p = −g_mod``). So Martens'
published λ₀ = 45 is written verbatim, and LM adapts λ in those units.

Each step, on a gradient batch ``B`` (the closure's batch of ``N`` examples), a
curvature batch ``S`` and the held-out rest ``H = B \\ S``. Split mode (the default,
``curvature_chunks`` 0 or 1): ``S`` is the first ``curvature_batch_size`` examples, by
default the first ``⌈curvature_fraction·N⌉``. Chunk mode (``curvature_chunks = n ≥ 2``,
Martens' ``numchunks``, for full-batch closures): ``B`` is cut once into ``n``
contiguous chunks, ``S`` is chunk ``k mod n`` at step ``k`` and ``H`` is empty.

1. ``g_B = ∇f_B(θ)`` (the closure's objective, weight cost included);
2. the model's gradient ``g_m``: ``g_S = ∇f_S(θ)`` in split mode with ``H`` non-empty
   (``model_on_curvature_batch``), else ``g_B`` (chunk mode, as Martens);
3. ``A v = G_S v + c·mask⊙v + λ v`` with the exact GN-vector product ``G_S v = Jᵀ ℋ J v``
   (forward-mode JVP, output Hessian, VJP; never the Hessian, which may be indefinite)
   and the ℓ2 weight cost ``c`` of the closure on its ``l2_params`` (Martens'
   ``weightcost·maskp.*V``, ``nnet_train_2.m`` line 521; 0 without one; ``c`` in the
   papers' units, the closure's value over ``s_B``). Which parameters carry it is the
   closure's choice: the runner passes every Linear weight and bias, as Martens' copy
   (its ``maskp`` keeps the biases; line 813, commented out, would drop them);
4. preconditioner ``M = (mean_{n∈B} ∇L_n ⊙ ∇L_n + λ + c·mask)^{3/4}`` (his line 1264,
   :func:`per_case_sq_grads`; statistics on ``B``, his whole-data ``grad2``, line 1117);
5. warm start ``x₀ = 0.95 · x_prev`` (the previous *un-backtracked* CG solution, his
   ``ch = conv(decay)*ch`` and ``ch = chs{end}``, lines 1244 and 1269);
6. preconditioned CG on ``φ(x) = g_mᵀx + ½ xᵀAx`` with Martens' relative-progress rule,
   ``max_cg_iters`` (250) and a bail-out on ``pᵀAp ≤ 0``;
7. CG backtracking over the stored iterates ``⌈5·1.3ʲ⌉`` on ``f_B`` (his
   full-training-set version, lines 1316–1334);
8. Levenberg-Marquardt: ``ρ = (f_R(θ+p) − f_R(θ)) / (g_mᵀp + ½ pᵀ(G_S + c·mask) p)``,
   the undamped model CG minimised; ``R = B`` when ``g_m = g_S``, ``R = H`` when
   ``g_m = g_B`` and ``H`` is non-empty (``model_on_curvature_batch = False``), and
   ``R = S`` with chunks (Martens measures ρ on the curvature chunk with the whole-data
   gradient in the denominator, lines 1340–1350); ``ρ < ¼ → λ ← 3/2·λ``,
   ``ρ > ¾ → λ ← 2/3·λ``;
9. Armijo backtracking ``α = 1, 0.8, 0.8², …`` while
   ``f_B(θ+αp) > f_B(θ) + 10⁻²·α·g_Bᵀp`` or (``heldout_guard``) ``H``'s loss rises by
   more than ``guard_tolerance`` standard errors of its per-example changes
   (at most 60 tries; no step if none passes; his lines 1361–1387 on the whole data);
   ``θ ← θ + lr·α·p``.

Why CG's model is ``f_S``'s in split mode (step 2). With ``n_s·D`` below the number of
parameters ``P``, ``G_S`` has rank at most ``n_s·D`` and ``g_B`` has a component
``g_⊥`` (from ``H``'s examples) outside its range, along which the model's only
curvature is λ: CG steps ``−g_⊥/λ`` there, blind to the true curvature of those
directions. On ``tabular_regression`` (tiny, batch 64, tanh, seed 0, step 3):
``P = 1601``, ``rank G_S = 32``, ``‖g_⊥‖ = 0.15‖g_B‖`` but 66% of ``‖p‖``; with
inputs mis-scaled up to 10× and heavy-tailed the true curvature there is far above λ,
and the full training loss jumped by up to 60% in single steps. ρ and the guard on
``H`` could not see it, since the step had used ``H``'s gradient: ``H`` was not held
out. With ``g_m = g_S`` the model is the Taylor model of one set of examples, the
Newton part of the step lies in the span that ``G_S`` constrains (from ``x₀ = 0``;
the warm start adds the previous step's), and ``H`` is held out for real. ρ is then
measured on ``B = S ∪ H``: on ``H`` alone it measures generalisation rather than the
model's accuracy (on ``digits_mlp`` λ rose to 10⁸ and the loss stalled at 0.137 from
step 30), on ``S`` alone the overfit goes unseen (the 6 ``tabular_regression`` runs
tried all ended above their start). The cost is one more backward pass, on
``S``, per step.

The held-out guard (step 9). With ``H`` truly held out, refusing any ``α`` that
raises ``f_H`` at all (``guard_tolerance = 0``) refuses most steps once they fit ``S``
better than the data (``α ≈ 0`` after 60 tries; ``digits_mlp`` relu ended at
0.034–0.050 against 0.004–0.024 before), and with no guard single noisy steps of up
to +40% on the training set were kept (a ``tabular_regression`` run ended above its
start on its last step). One standard error refuses the rises that ``H``'s 32
examples can tell from their noise.

Measured (tiny, 80 steps, batch 64, the robustness suite's cells, final full training
loss; before → after): the 7 ``tabular_regression`` runs that ended above their start
now end below it (tanh seed 0 went 1.00 → 1.19 before, 1.00 → 0.93 after), as do the 14 others
(21 of 21); checked elsewhere over seeds 0–2 the cost is a slower descent on some
tasks (``digits_mlp`` relu 0.024/0.011/0.004 → 0.019/0.021/0.033, ``curves_autoencoder``
abs 0.157–0.159 → 0.165–0.169, ``teacher_student`` maxout 0.008–0.014 → 0.013–0.014,
``tabular_classification`` tanh 0.44/0.33/0.52 → 0.51/0.48/0.52, ``mnist1d_mlp`` prelu
1.00/1.34/0.84 → 1.09/1.17/1.04). ``model_on_curvature_batch = False`` with
``guard_tolerance = 0`` is the method before this change. Deviation from Martens: his
gradient is the whole training set's, with chunks of thousands of examples
(``G_chunk`` of far higher rank); chunk mode keeps his choice.

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

import copy
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

__all__ = ["HFConfig", "HessianFree", "WeightCost", "hf_preconditioner", "per_case_sq_grads"]


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
    ``curvature_batch_size`` is None; the rest ``H`` of the gradient batch is held out
    from CG's model, enters ρ and the line search through ``f_B`` and, with
    ``heldout_guard``, guards the line search (1.0:
    curvature on the whole batch and ρ in-sample, the behaviour before the split). λ₀ ∈ {0.1, 1, 10}
    on the tabular tasks at batch 64 (3 seeds): 1 ended lowest on both.

    ``model_on_curvature_batch`` (split mode with a held-out ``H``): CG's model is
    ``f_S``'s (gradient ``g_S``) and ρ is measured on the whole batch; False restores
    the earlier ``g_B`` with ρ on ``H`` (with ``heldout_guard = True``: the behaviour
    before with ``guard_tolerance = 0``; see the module docstring for why it changed).
    ``guard_tolerance``: the rise of ``H``'s mean per-example loss, in standard errors
    of its per-example changes, above which the guard refuses a step (0: any rise).
    ``curvature_chunks = n ≥ 2`` is Martens' paper mode for a full-batch closure
    (his ``numchunks = 4``): the curvature of step ``k`` (CG's GN products) comes from
    chunk ``k mod n`` of a fixed split of the batch, the gradient, the preconditioner's
    statistics, CG backtracking and the line search from the whole batch, ρ from the
    chunk; ``curvature_fraction``, ``curvature_batch_size``, ``model_on_curvature_batch``
    and ``heldout_guard`` then do not apply. 0 or 1: split mode.
    """

    lr: float = 1.0
    damping: float = 1.0
    adapt_damping: bool = True
    min_damping: float = 1e-3
    curvature_batch_size: int | None = None  # None: ⌈curvature_fraction · N⌉
    curvature_fraction: float = 0.5
    curvature_chunks: int = 0  # n ≥ 2: curvature on chunk (k mod n) of the batch (Martens' numchunks)
    model_on_curvature_batch: bool = True  # split mode: CG's model is f_S's (g_S, G_S), ρ on B
    heldout_guard: bool = True
    guard_tolerance: float = 1.0  # standard errors of H's per-example changes a step may raise f_H by
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
        check(isinstance(self.curvature_chunks, int) and not isinstance(self.curvature_chunks, bool)
              and self.curvature_chunks >= 0, "curvature_chunks (need an integer >= 0)", self.curvature_chunks)
        check(isinstance(self.max_cg_iters, int) and self.max_cg_iters >= 1, "max_cg_iters", self.max_cg_iters)
        check(isinstance(self.min_cg_iters, int) and 1 <= self.min_cg_iters <= self.max_cg_iters,
              "min_cg_iters", self.min_cg_iters)
        check(self.cg_tol >= 0, "cg_tol", self.cg_tol)
        check(isinstance(self.guard_tolerance, (int, float)) and 0 <= self.guard_tolerance < math.inf,
              "guard_tolerance (need 0 <= t < inf)", self.guard_tolerance)
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
    """One step's batches: gradient ``B``, curvature ``S`` and held-out ``H``."""

    x: Tensor  # B inputs, (N, …)
    y: Tensor  # B targets, (N, …)
    xs: Tensor  # S inputs, (n_s, …)
    ys: Tensor  # S targets, (n_s, …)
    xh: Tensor  # H inputs, (n_h, …): B \ S in the split mode, empty with chunks
    yh: Tensor  # H targets, (n_h, …)
    n: int  # N
    n_s: int
    d: int  # D, outputs per example
    s_b: float  # per_example_scale(loss_fn, N, D)
    s_s: float  # per_example_scale(loss_fn, n_s, D)
    s_h: float  # per_example_scale(loss_fn, n_h, D); NaN when H is empty

    @property
    def heldout(self) -> bool:
        """Whether ``H`` is non-empty."""
        return self.xh.shape[0] > 0


class WeightCost(NamedTuple):
    """The closure's ℓ2 weight cost in the papers' units: ``c_p = c / s_B`` and its mask (P,)."""

    c: float  # c_p, papers' units (the closure's c is in the module's units of B)
    mask: Tensor  # (P,): 1 on the entries of closure.l2_params, 0 elsewhere

    def penalty(self, theta: Tensor) -> float:
        """``(c_p / 2) · ‖mask ⊙ θ‖²`` for a flat θ (P,), papers' units."""
        return 0.5 * self.c * float((self.mask * theta).square().sum()) if self.c else 0.0


class HessianFree(CurvatureOptimizer):
    """Hessian-free optimisation with the Gauss-Newton matrix (see the module docstring).

    Usable in any loop: ``opt.step(StepClosure(model, loss_fn, x, y))``; keyword
    overrides of the config are validated like it. State per parameter: the previous CG
    solution ``x_prev``; under the group's first parameter the ``step`` count, the
    damping ``λ`` in use (papers' units) and the group value it follows
    (``damping_base``), and diagnostics of the last step: ``cg_iters``, ``cg_stop`` (an
    index into :data:`~benchsuite.optimizers.cg.STOP_REASONS`: state holds no strings,
    which torch's ``load_state_dict`` would mangle), ``rho``, ``alpha`` and ``chunk``
    (the curvature chunk used, −1 without chunks).
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, config: HFConfig | None = None, **overrides):
        super().__init__(model, loss_fn, config or HFConfig(), overrides)

    def step(self, closure: StepClosure) -> Tensor:  # type: ignore[override]
        """One Hessian-free step ``θ ← θ + lr·α·p`` on the closure's batch (Martens 2010, Alg. 1).

        Reads every hyperparameter from the param group, and the closure's
        ``weight_cost``/``l2_params`` when it has them. Returns the loss before the step.

        Raises:
            FloatingPointError: on a non-finite loss, gradient, CG solution, predicted
                reduction or step (nothing is applied).
        """
        x, y = self.batch(closure)
        loss = closure()  # (): f_B(θ) (+ weight cost), gradients in .grad
        group, st, _ = self.begin_step()
        k = st["step"]
        f0 = float(loss)
        g = self.flat_grad()  # (P,), module units of B
        _finite(f0, "loss", k)
        _finite(g, "gradient", k)
        b = self._split(group, x, y, k)
        wc = self._weight_cost(closure, b, g)
        lam = st["damping"]  # papers' units
        gn = self._gn_product(b.xs, b.ys)
        gm = self._model_gradient(group, b, g, wc)  # (P,), papers' units; None: g_B / s_B
        result, p = self._solve(group, b, g, gm, gn, lam, wc, k)
        rho = self._adapt_damping(group, st, b, g, gm, p, gn, lam, wc, f0, k)
        alpha = self._line_search(group, b, p, f0, float(g @ p), wc)
        delta = (group["lr"] * alpha) * p  # (P,)
        _finite(delta, "step", k)
        self.add_to_params(delta)
        st.update(step=k + 1, cg_iters=result.iters, cg_stop=STOP_REASONS.index(result.stop), rho=rho,
                  alpha=alpha, chunk=k % group["curvature_chunks"] if group["curvature_chunks"] > 1 else -1)
        return loss

    def _split(self, group: dict[str, Any], x: Tensor, y: Tensor, k: int) -> _Batches:
        """``B``, the curvature batch ``S`` and the held-out ``H`` of step ``k``.

        Split mode (``curvature_chunks`` 0 or 1): ``S`` = the first ``n_s`` examples,
        ``H`` = the rest. Chunk mode (``n = curvature_chunks ≥ 2``, Martens'
        ``numchunks``): ``B`` is cut once into ``n`` contiguous chunks (sizes differing
        by at most one; Martens requires ``n`` to divide ``N``, ``nnet_train_2.m`` lines
        167–171) and ``S`` is chunk ``k mod n`` (his ``targetchunk = mod(epoch-1,
        numchunks)+1``, line 940); ``H`` is empty (ρ on ``S``, as his lines 1340–1350).
        """
        n = x.shape[0]
        chunks = group["curvature_chunks"]
        if chunks > 1:
            if chunks > n:
                raise ValueError(f"HF: curvature_chunks = {chunks} exceeds the batch of {n} examples")
            j = k % chunks
            xs, ys = torch.tensor_split(x, chunks)[j], torch.tensor_split(y, chunks)[j]
            xh, yh = x[:0], y[:0]
        else:
            n_s = min(group["curvature_batch_size"] or math.ceil(group["curvature_fraction"] * n), n)
            xs, ys, xh, yh = x[:n_s], y[:n_s], x[n_s:], y[n_s:]
        d = num_outputs(self.net)
        n_s = xs.shape[0]
        s_b, s_s = per_example_scale(self.loss_fn, n, d), per_example_scale(self.loss_fn, n_s, d)
        s_h = per_example_scale(self.loss_fn, xh.shape[0], d) if xh.shape[0] else math.nan
        return _Batches(x, y, xs, ys, xh, yh, n, n_s, d, s_b, s_s, s_h)

    def _weight_cost(self, closure: StepClosure, b: _Batches, g: Tensor) -> WeightCost:
        """The closure's ℓ2 cost ``c`` (module units of ``B``) as ``c_p = c / s_B`` with its mask (P,)."""
        c = float(getattr(closure, "weight_cost", 0.0))
        l2 = getattr(closure, "l2_params", ())
        mask = torch.cat([torch.full((p.numel(),), float(any(p is w for w in l2)), dtype=g.dtype, device=g.device)
                          for p in self.params])  # (P,)
        return WeightCost(c / b.s_b if l2 else 0.0, mask)

    def _theta(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])  # (P,)

    def _objective(self, delta: Tensor, x: Tensor, y: Tensor, wc: WeightCost, scale: float = 1.0) -> float:
        """``f_X(θ + scale·δ)`` on ``(x, y)`` in the module's units of ``X``, weight cost included.

        The module's units of ``X`` are ``s_X`` times the papers' (per example), so the
        weight cost ``(c_p/2)‖W‖²`` enters as ``s_X·(c_p/2)‖W‖²``; on ``B`` that is the
        closure's ``(c/2)‖W‖²``.
        """
        data = self.loss_at(delta, x, y, scale)
        if not wc.c:
            return data
        s_x = per_example_scale(self.loss_fn, x.shape[0], num_outputs(self.net))
        return data + s_x * wc.penalty(self._theta() + scale * delta)

    def _gn_product(self, xs: Tensor, ys: Tensor) -> Callable[[Tensor], Tensor]:
        """``v ↦ G_S,mod v`` on flat vectors (P,), by the exact GN-vector product ``Jᵀ ℋ J v``."""
        op = GGNOperator(self.net, self.loss_fn, xs, ys)  # forward pass on S cached for all of CG

        def gn(v: Tensor) -> Tensor:  # G_S,mod v, flat (P,)
            return torch.cat([t.reshape(-1) for t in op.matvec(self.unflat(v))])

        return gn

    def _model_gradient(self, group: dict[str, Any], b: _Batches, g: Tensor, wc: WeightCost) -> Tensor | None:
        """The gradient ``g_m`` (P,) of CG's quadratic model in the papers' units; None for ``g_B / s_B``.

        ``g_B`` (None) with chunks, as Martens (the whole training set's ``grad`` in
        ``conjgrad_1(@(V)-computeBV(V), grad, …)``, ``nnet_train_2.m`` line 1267), when
        ``S = B``, or without ``model_on_curvature_batch``. Otherwise ``g_S``, the
        gradient of the examples whose curvature the model has (one more backward pass,
        on ``S``), plus the weight cost's ``c_p·mask⊙θ``: see the module docstring.
        """
        if group["curvature_chunks"] > 1 or not group["model_on_curvature_batch"] or not b.heldout:
            return None
        with torch.enable_grad():
            data = self.loss_fn(self.model(b.xs), b.ys)
            parts = torch.autograd.grad(data, self.params, allow_unused=True)
        gs = torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(parts, self.params)])
        return gs / b.s_s + wc.c * wc.mask * self._theta()  # (P,)

    def _solve(self, group: dict[str, Any], b: _Batches, g: Tensor, gm: Tensor | None, gn: Callable[[Tensor], Tensor],
               lam: float, wc: WeightCost, k: int) -> tuple[CGResult, Tensor]:
        """Steps 3–7: ``(G_S,mod + s_S·(λ + c_p·mask)) p = −s_S·g_m`` by warm-started PCG.

        Martens' ``computeGV`` (``nnet_train_2.m`` lines 512–527) returns
        ``−(G_chunk + weightcost·maskp + λ) V`` with ``G_chunk`` the chunk's mean GN
        (``GV / numcases · numchunks`` in hybrid mode); here in the module's units of
        ``S`` (``s_S`` times his). Returns the CG result (its ``x`` is stored as the
        next warm start, his ``ch = chs{end}``, line 1269) and the step ``p`` (P,), the
        iterate chosen by CG backtracking on ``f_B`` when ``backtrack`` (his
        full-training-set version, lines 1316–1334).
        """
        precond = None
        if group["precondition"]:
            sq = per_case_sq_grads(self.net, self.loss_fn, b.x, b.y)  # (P,), on B (his grad2, line 1117)
            precond = hf_preconditioner(sq + wc.c * wc.mask, lam, group["precond_exponent"])  # (P,)
        # (P,): −g_m in the units of G_S,mod; −(s_S/s_B)·g_B written as before for "batch"
        rhs = -(b.s_s / b.s_b) * g if gm is None else -b.s_s * gm
        shift = b.s_s * (lam + wc.c * wc.mask) if wc.c else b.s_s * lam  # (P,) or scalar
        result = martens_cg(lambda v: gn(v) + shift * v, rhs, group["warm_start_decay"] * self._get_prev(g),
                            precond=precond, max_iters=group["max_cg_iters"], min_iters=group["min_cg_iters"],
                            progress_tol=group["cg_tol"])
        _finite(result.x, "CG solution", k)
        self._set_prev(result.x)
        if group["backtrack"]:
            p, _ = backtrack_iterates(result.iterates, lambda v: self._objective(v, b.x, b.y, wc))
        else:
            p = result.x
        return result, p

    def _adapt_damping(self, group: dict[str, Any], st: dict[str, Any], b: _Batches, g: Tensor, gm: Tensor | None,
                       p: Tensor, gn: Callable[[Tensor], Tensor], lam: float, wc: WeightCost, f0: float,
                       k: int) -> float:
        """Step 8: ``ρ`` and the LM update of λ; NaN when off.

        ``ρ = (f_R(θ+p) − f_R(θ)) / (g_mᵀp + ½ pᵀ(G_S + c_p·mask) p)``, both in the papers'
        units, weight cost included in both (Martens: ``computeLL`` subtracts it, line
        774, and ``computeBV`` with ``autodamp = 0`` keeps ``weightcost·maskp``, line 521).
        ``R``: ``B`` when the model is ``f_S``'s (``g_m = g_S``), ``H`` when it has ``g_B``
        and ``H`` is non-empty, else ``S`` (with chunks: the chunk, Martens' lines 1340–1350).
        """
        if not group["adapt_damping"]:
            return float("nan")
        # Undamped model CG minimised, in the papers' units: g_mᵀp + ½ pᵀ (G_S + c_p mask) p.
        curv = float(p @ gn(p)) / b.s_s + wc.c * float((wc.mask * p) @ p)
        predicted = (float(g @ p) / b.s_b if gm is None else float(gm @ p)) + 0.5 * curv
        _finite(predicted, "predicted reduction (rho)", k)
        if gm is not None:
            actual = (self._objective(p, b.x, b.y, wc) - f0) / b.s_b
        elif b.heldout:
            zero = torch.zeros_like(p)
            actual = (self._objective(p, b.xh, b.yh, wc) - self._objective(zero, b.xh, b.yh, wc)) / b.s_h
        else:
            zero = torch.zeros_like(p)
            actual = (self._objective(p, b.xs, b.ys, wc) - self._objective(zero, b.xs, b.ys, wc)) / b.s_s
        rho = reduction_ratio(actual, predicted)
        st["damping"] = lm_update(lam, rho, minimum=group["min_damping"])
        return rho

    def _line_search(self, group: dict[str, Any], b: _Batches, p: Tensor, f0: float, slope: float,
                     wc: WeightCost) -> float:
        """Step 9: Armijo's ``α`` on ``f_B`` along ``p``; with ``heldout_guard``, no significant rise on ``H``.

        ``α = 1, 0.8, 0.8², …`` while ``f_B(θ+αp) > f_B(θ) + 10⁻²·α·g_Bᵀp`` or the guard
        fails (:meth:`_heldout_rise`); ``α = 1`` without ``line_search``. Martens' line
        search is on the whole training set with its gradient (``nnet_train_2.m`` lines
        1361–1387), i.e. on ``B`` here; the guard is ours (his ``B`` is the data set).
        """
        if not group["line_search"]:
            return 1.0
        guard = group["heldout_guard"] and b.heldout
        base = self._per_example(torch.zeros_like(p), b.xh, b.yh, wc) if guard else None  # (n_h,)

        def along(a: float) -> float:  # f_B(θ + a p), +inf where the guard refuses
            if base is not None and self._heldout_rise(p, a, b, wc, base, group["guard_tolerance"]):
                return math.inf
            return self._objective(p, b.x, b.y, wc, a)

        alpha, _ = armijo(along, f0, slope, shrink=group["armijo_shrink"], c=group["armijo_c"],
                          max_tries=group["max_line_search"])
        return alpha

    def _per_example(self, delta: Tensor, x: Tensor, y: Tensor, wc: WeightCost, scale: float = 1.0) -> Tensor:
        """``L_n(θ + scale·δ)`` (n,): each example's loss summed over outputs plus the weight
        cost, the papers' units (the module with ``reduction = "none"``)."""
        per = copy.copy(self.loss_fn)
        per.reduction = "none"
        saved = [q.detach().clone() for q in self.params]
        self.add_to_params(delta, scale)
        try:
            with torch.no_grad():
                out = per(self.model(x), y).reshape(x.shape[0], -1).sum(1)  # (n,)
                return out + wc.penalty(self._theta()) if wc.c else out
        finally:
            with torch.no_grad():
                for q, s0 in zip(self.params, saved):  # exact restore
                    q.copy_(s0)

    def _heldout_rise(self, p: Tensor, a: float, b: _Batches, wc: WeightCost, base: Tensor,
                      tolerance: float) -> bool:
        """Whether ``θ + a·p`` raises ``H``'s loss beyond its sampling noise.

        With ``Δ_n = L_n(θ+ap) − L_n(θ)`` over the ``n_h`` held-out examples: refused when
        ``mean Δ > t·std Δ / √n_h`` (``t = guard_tolerance`` standard errors; ``t = 0``, or
        ``n_h = 1``, refuses any rise) or a ``Δ_n`` is not finite.
        """
        d = self._per_example(p, b.xh, b.yh, wc, a) - base  # (n_h,)
        if not bool(torch.isfinite(d).all()):
            return True
        se = float(d.std()) / math.sqrt(d.numel()) if d.numel() > 1 else 0.0
        return float(d.mean()) > tolerance * se

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
