"""Kronecker-factored Gauss-Newton (Botev, Ritter & Barber, ICML 2017; KFAC: Martens & Grosse 2015).

Every Linear layer ``l`` (weight and bias together, homogeneous coordinates
``W = [W̃ b]``) has its GN block approximated by ``Q̄_l ⊗ Ḡ_l`` (see
:mod:`benchsuite.curvature.kronecker`; ``variant`` picks KFRA, KFLR or KFAC for
``Ḡ``). With factored Tikhonov damping γ the layer's step is

    Δ_l = (Ḡ_l + (√γ/π_l) I)⁻¹ V_l (Q̄_l + π_l √γ I)⁻¹,
    π_l = √( (tr Q̄_l / dim Q̄_l) / (tr Ḡ_l / dim Ḡ_l) ),

with ``V_l = ∂f/∂[W̃ b]`` (out × (in+1)). Parameters outside Linear layers (PReLU
slopes) use their GN diagonal ``d``: ``Δ = g / (d + γ)``, with ``d`` the moving
average of an unbiased Monte-Carlo estimate from ``mc_samples`` sampled output
columns (:func:`slope_diagonal_mc`: one backward pass, where the exact diagonal
needs one per output).

Units of γ. The damping is given in the papers' units: the loss per example, summed
over outputs (Botev et al. 2017; Martens & Grosse 2015), so the published γ = 1e-3
is written as it is whatever the loss module's reduction. The loss module returns
``s`` times that objective (:func:`benchsuite.curvature.per_example_scale`: mean
MSE/BCE ``1/D``, mean cross-entropy 1, sum ``N``); its gradient and curvature carry
``s``, so γ is applied as ``s·γ``. The damped step ``(sG + sγI)⁻¹ s g`` is then the
papers' step for any reduction and output count; this holds for the factored
damping too (see :meth:`KFGN._update_inverses`), for the slopes' diagonal step and
for the rescaling ``α`` (a ratio of terms that all carry ``s``).

Pieces: exponential moving averages of the factors (``factor_decay``; 0 recomputes
them each time), separate periods for factor statistics and inversions, the
step-size rescaling of Botev et al. ``α = min(1, gᵀΔ / (Δᵀ(G + γI)Δ))`` with the
exact mini-batch GN-vector product, heavy-ball momentum ``u ← μu + αΔ`` (off by
default), and, by default, Levenberg-Marquardt adaptation of γ at every step from
the reduction ratio ``ρ`` of the undamped quadratic model (Martens & Grosse 2015,
§6.5), with a step that raised the batch objective undone (the acceptance test of a
trust-region method, Moré 1978). The update is ``θ ← θ − lr·u`` (``u = αΔ``
without momentum).

Why the trust region is on by default. Botev et al.'s ``α`` minimises the damped
quadratic model *along* Δ, but nothing checks that the model holds that far. With
γ in the papers' units the shift on a 784-output BCE autoencoder (``s = 1/D``) is
``D`` times weaker in the module's units than the old ``γ`` on the mean loss, and
on absolute-value units (whose derivative flips sign, not just switches off, when a
pre-activation crosses zero) the first step left that region: CURVES, KFLR, seed 1,
γ = 1e-2: step 1 (α = 0.70, ‖step‖ = 9.7) raised the batch loss 0.69 → 1.48; step
2 started from there with factors that were still 90 % the old ones (EMA 0.9), and
its exact-GN ``α`` = 0.13 still gave a step of norm 322 and a loss of 2e7. Raising
γ tenfold for every task would trade this for slower progress elsewhere; the LM
rule instead measures the model's quality on each batch, so a default γ means the
same on every task. With it no run of the robustness suite's abs autoencoder cells
diverged (all variants, seeds 0-2). The adaptation matters in the other direction
too: on the batch-64, mis-scaled tabular regression (MSE, ``s = 1``) the fixed
γ = 1e-2 ended runs above their initial training loss although no step raised its
own batch loss (KFLR, tanh, seed 0: 1.002 → 1.011; fixed γ = 1e-1, 1e-3, 1e-4 gave
1.106, 0.816, 0.483); there ``ρ > 3/4`` on most batches, LM lowered γ to 2.6e-4 in
80 steps and the run ended at 0.702. Costs: one forward pass on the batch per step
for ``ρ``.

ℓ2 weight cost. A closure with ``weight_cost`` ``c`` (module units) and
``l2_params`` (Linear weights) has the objective ``f + (c/2)Σ‖W‖²``; its curvature
``c·I`` on those weights is folded into the layer's factored damping, ``sγ + c``
for ``sγ`` (Martens & Grosse 2015, §6.3: ``γ = √(λ + η)``), added exactly to the
rescaling's model (``c‖Δ_W‖²``; their §6.4 uses ``F + (λ + η)I``) and to ``f`` in
``ρ``. The gradient already carries ``c·W`` (the closure back-propagates it).

Every hyperparameter lives in ``param_groups`` and is read at each step (a scheduler
may change ``lr``, ``damping``, ``momentum``, ...). The variant is a
:class:`KFGNVariant`; the group holds its string value. With ``adapt_damping`` the
group's ``damping`` is the initial γ and a change of it re-bases the adapted value
(:func:`benchsuite.optimizers.base.follow_damping`); a change also forces new inverses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
from benchsuite.optimizers.base import CurvatureOptimizer, check_finite
from benchsuite.optimizers.damping import lm_update, reduction_ratio
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
from benchsuite.curvature.kronecker import KroneckerFactors, kfac, kflr, kfra
from benchsuite.curvature.losses import loss_curvature
from benchsuite.curvature.model import SequentialModel
from benchsuite.curvature.products import ggn_matrix_product

__all__ = [
    "FACTORS",
    "KFGN",
    "KFGNConfig",
    "KFGNVariant",
    "box_minimiser",
    "heavy_ball",
    "kronecker_step",
    "moving_average",
    "rescale_step_sizes",
    "slope_diagonal_mc",
]


class KFGNVariant(str, Enum):
    """How the output factor ``Ḡ`` is computed (Botev et al. 2017; Martens & Grosse 2015)."""

    KFRA = "kfra"
    KFLR = "kflr"
    KFAC = "kfac"


FactorFn = Callable[[SequentialModel, nn.Module, Tensor, Tensor, int, torch.Generator], list[KroneckerFactors]]

#: Kronecker factors per variant: ``fn(net, loss_fn, x, y, mc_samples, generator)``.
FACTORS: dict[KFGNVariant, FactorFn] = {
    KFGNVariant.KFRA: lambda net, loss_fn, x, y, mc, gen: kfra(net, loss_fn, x, y),
    KFGNVariant.KFLR: lambda net, loss_fn, x, y, mc, gen: kflr(net, loss_fn, x, y),
    KFGNVariant.KFAC: lambda net, loss_fn, x, y, mc, gen: kfac(net, loss_fn, x, y, mc_samples=mc, generator=gen),
}


@dataclass(frozen=True)
class KFGNConfig(OptimizerConfig):
    """Hyperparameters of :class:`KFGN`.

    ``damping`` γ is in the papers' units (loss per example, summed over outputs;
    see the module docstring), applied to the loss module's curvature as ``s·γ``.
    Defaults follow Botev et al. (2017) (factor EMA 0.9, step-size rescaling, lr 1)
    except γ = 1e-2 instead of their 1e-3: on mean cross-entropy (``s = 1``, the same
    number in either unit) with mini-batches of ~100, γ = 1e-3 diverged on ReLU, leaky
    ReLU and PReLU digits MLPs in our sweeps while 1e-2 converged on every activation.
    The ``paper`` suite sets the published 1e-3. ``variant`` accepts the enum or its
    string value.

    ``adapt_damping`` (on, ``lm_period = 1``) makes ``damping`` the initial γ of the
    Levenberg-Marquardt rule (×3/2 when ``ρ < 1/4``, ×2/3 when ``ρ > 3/4``; Martens
    2010, §4.1; Martens & Grosse 2015, §6.5 adapt every T₁ = 5 steps, but the
    rejection of a loss-raising step needs ``ρ`` at every step) and undoes a step that
    raised the batch objective (see the module docstring for the measurements).
    Momentum needs ``adapt_damping=False``. ``mc_samples`` is the number of sampled
    output columns per example for KFAC's ``Ḡ`` and for the PReLU slopes' GN diagonal
    (every variant).
    """

    variant: KFGNVariant = KFGNVariant.KFRA
    lr: float = 1.0
    damping: float = 1e-2
    factor_decay: float = 0.9
    stat_period: int = 1
    inv_period: int = 1
    rescale: bool = True
    momentum: float = 0.0
    adapt_damping: bool = True
    lm_period: int = 1
    mc_samples: int = 1

    def __post_init__(self) -> None:
        choice(self, "variant", KFGNVariant)
        positive("learning rate", self.lr)
        positive("damping", self.damping)
        unit_interval("factor_decay", self.factor_decay)
        for name in ("stat_period", "inv_period", "lm_period", "mc_samples"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, name, value)
        unit_interval("momentum", self.momentum)
        # The LM ratio compares the loss change with the quadratic model of this step's
        # update; with momentum the update also carries earlier steps, so refuse the pair.
        check(not (self.adapt_damping and self.momentum > 0),
              "adapt_damping with momentum (LM adaptation needs momentum = 0; set adapt_damping = false "
              "for momentum)", self.adapt_damping)


def moving_average(old: Tensor | None, new: Tensor, decay: float) -> Tensor:
    """``β·old + (1 − β)·new``, or ``new`` when there is no ``old`` or ``β = 0``."""
    return new if old is None or decay == 0 else decay * old + (1 - decay) * new


def kronecker_step(grad_w: Tensor, grad_b: Tensor | None, q_inv: Tensor, g_inv: Tensor) -> tuple[Tensor, Tensor | None]:
    """``Δ = (Ḡ + √γ/π I)⁻¹ [∇W ∇b] (Q̄ + π√γ I)⁻¹`` split into weight (out, in) and bias (out,) parts.

    Botev et al. (2017), eq. (17) with factored Tikhonov damping (Martens & Grosse 2015, §6.3);
    ``q_inv``, ``g_inv`` are the damped inverses of the factors.
    """
    v = grad_w if grad_b is None else torch.cat([grad_w, grad_b[:, None]], dim=1)  # (out, in+1)
    delta = g_inv @ v @ q_inv  # (out, in+1)
    if grad_b is None:
        return delta, None
    return delta[:, :-1], delta[:, -1]


def box_minimiser(a: Tensor, b: Tensor) -> Tensor:
    """The exact minimiser of ``q(α) = ½ αᵀAα − bᵀα`` over the box ``[0, 1]^K``.

    For a convex ``q`` (``A`` PSD) a minimiser lies in the relative interior of some
    face of the box, where the free coordinates solve the unconstrained problem with
    the others fixed at 0 or 1 (the KKT conditions). So every one of the ``3^K``
    faces is tried: the interior (all coordinates free), each edge (one coordinate
    fixed at 0 or 1, the other minimised), then the corners; a candidate outside the
    box is skipped and the feasible one with the smallest ``q`` is returned. Exact
    for ``K ≤ 2`` at a cost of nine tiny solves; unlike clipping each coordinate of
    the unconstrained solution, it never keeps a coordinate that was only optimal
    *given* an infeasible value of the other.

    Args:
        a: ``A`` (K, K), symmetric PSD (the damped model ``DᵀGD + γ diag(DᵀD)``).
        b: ``b`` (K,) (``Dᵀg``).

    Returns:
        ``α`` (K,), float64.
    """
    k = b.shape[0]
    a, b = a.double(), b.double()
    best, best_q = torch.zeros(k, dtype=torch.float64), 0.0  # the corner α = 0, q = 0
    for code in itertools.product((None, 0.0, 1.0), repeat=k):  # None: free coordinate
        alpha = torch.tensor([0.0 if c is None else c for c in code], dtype=torch.float64)
        free = [i for i, c in enumerate(code) if c is None]
        if free:
            fixed = [i for i, c in enumerate(code) if c is not None]
            rhs = b[free] - a[free][:, fixed] @ alpha[fixed]  # (F,)
            sol = torch.linalg.lstsq(a[free][:, free], rhs[:, None]).solution[:, 0]  # (F,)
            if not bool(torch.isfinite(sol).all()) or bool((sol < 0).any()) or bool((sol > 1).any()):
                continue
            alpha[free] = sol
        q = float(0.5 * alpha @ a @ alpha - b @ alpha)
        if q < best_q:
            best, best_q = alpha, q
    return best


def rescale_step_sizes(grad: Tensor, directions: Tensor, gn_directions: Tensor, damping: float, *,
                       rescale: bool = True) -> tuple[list[float], float, float]:
    """Step sizes along ``K`` block directions and the quadratic model of the scaled step.

    Botev et al. (2017), §4: ``α = min(1, gᵀΔ / (Δᵀ(G + γI)Δ))`` with the exact
    mini-batch GN; an ascent direction (``gᵀΔ ≤ 0``) keeps ``α = 1``. With ``K = 2``
    blocks (Kronecker step of the Linear layers and diagonal step of the PReLU
    slopes) ``α`` is the exact minimiser of the damped quadratic model
    ``q(α) = ½ αᵀ(DᵀGD + γ diag(DᵀD))α − (Dᵀg)ᵀα`` over ``[0, 1]²``
    (:func:`box_minimiser`), so a block whose step the model rejects (α = 0) does not
    leave the other block's step sized for a joint move that is not taken. The old
    rule (clip each coordinate of the unconstrained solve) set α_Linear = 0 while
    keeping α_slope, and on a 20-feature PReLU classifier (KFLR, γ = 1e-4, batch 64)
    the slopes grew to 1e6–1e9 and the loss to 1e19–1e29; with the box minimiser the
    same runs reach losses 0.06–0.14 with slopes below 1.2. The slopes' direction
    ``g/(d + sγ)`` comes from their own diagonal, blind to their coupling with the
    next layer's weights; that coupling enters through the exact ``DᵀGD`` of this
    model, so no further bound on the slope step is applied.

    All quantities are in the loss module's units: with a module ``s`` times the
    papers' loss, ``g``, ``G`` and ``γ = s·γ_paper`` all carry ``s``, and ``α`` is the
    papers' value.

    Args:
        grad: The gradient ``g`` (P,).
        directions: The block directions ``D`` (K, P).
        gn_directions: ``G D`` (K, P).
        damping: γ (the module's units).
        rescale: Without it every ``α`` is 1.

    Returns:
        ``(α, gᵀs, sᵀGs)`` with ``s = Σ_k α_k D_k`` (the undamped model, for the LM ratio).

    Raises:
        FloatingPointError: if the model's coefficients are not finite.
    """
    k = directions.shape[0]
    b = (directions @ grad).double().cpu()  # (K,) gᵀD
    m = (directions @ gn_directions.T).double().cpu()  # (K, K) DᵀGD
    m = 0.5 * (m + m.T)
    damped = m + damping * torch.diag((directions * directions).sum(1).double().cpu())  # (K, K)
    check_finite("step-size model (gᵀΔ, ΔᵀGΔ)", b, damped)
    if not rescale:
        av = torch.ones(k, dtype=torch.float64)
    elif k == 1:
        ratio = float(b[0] / damped[0, 0]) if float(damped[0, 0]) > 0 else math.inf
        av = torch.tensor([min(1.0, ratio) if ratio > 0 else 1.0], dtype=torch.float64)
    else:
        av = box_minimiser(damped, b)  # (K,)
    return [float(v) for v in av], float(av @ b), float(av @ m @ av)


def slope_diagonal_mc(net: SequentialModel, loss_fn: nn.Module, x: Tensor, y: Tensor, slopes: list[int], *,
                      mc_samples: int = 1, generator: torch.Generator | None = None) -> dict[int, Tensor]:
    """Unbiased Monte-Carlo GN diagonal of the parameters ``slopes`` (PReLU slopes) alone.

    With ``ℋ_n = C_n C_nᵀ`` the loss Hessian at the logits of example ``n``, the GN
    diagonal of a slope vector is ``diag G_α = Σ_n Σ_k (J_{α,n}ᵀ c_{n,k})²`` over the
    ``C`` columns of ``C_n``. ``M`` columns ``c̃_{n,m}`` drawn from the model's predictive
    distribution with ``E[Σ_m c̃ c̃ᵀ] = ℋ_n`` (:meth:`LossCurvature.sample_columns`; the
    estimator KFAC uses for its ``Ḡ``, Martens & Grosse 2015, §5, and BackPACK's
    DiagGGN-MC, Dangel, Kunstner & Hennig 2020) give

        E[Σ_n Σ_m (J_{α,n}ᵀ c̃_{n,m})²] = diag G_α,

    at the cost of one backward pass of ``M`` columns from the logits down to the lowest
    slope module, against one per output (``C``, compressed where a layer is narrower)
    for the exact diagonal: on the 784-output MNIST autoencoder the exact slopes' diagonal
    cost about 35 gradients. KFGN averages the estimate over steps (``factor_decay``),
    and its step size is set by the exact GN products of the rescaling.

    Args:
        net: The parsed model.
        loss_fn: Its loss module (reduction respected).
        x: Inputs (N, D_in).
        y: Targets.
        slopes: Indices into ``net.params`` whose diagonal is wanted (non-Linear parameters).
        mc_samples: ``M``, sampled columns per example.
        generator: Random generator for the samples.

    Returns:
        ``{j: diagonal}`` for each ``j`` in ``slopes`` (the parameter's shape).
    """
    cache = net.forward(x)
    lc = loss_curvature(loss_fn, cache.output, y)
    wanted = set(slopes)
    out = {j: torch.zeros_like(net.params[j]).detach() for j in slopes}
    owners = [i for i, params in net.module_params.items() if wanted.intersection(params)]

    def visit(i: int, s: Tensor) -> None:  # s: (M, N, d) sampled columns at module i's output
        if i in owners:
            for j, sq in zip(net.module_params[i], net.squared_param_grads(cache, i, s)):
                if j in wanted:
                    out[j] += sq

    columns = lc.sample_columns(mc_samples, generator)  # (M, N, C)
    net.backprop(cache, columns, visit, stop=min(owners, default=0) - 1)
    return out


def heavy_ball(step: Tensor, velocity: Tensor | None, momentum: float) -> Tensor:
    """``u ← μ·u + step`` (``step`` itself for the first step or ``μ = 0``)."""
    return step if momentum == 0 or velocity is None else momentum * velocity + step


class KFGN(CurvatureOptimizer):
    """Kronecker-factored Gauss-Newton with KFRA, KFLR or KFAC output factors.

    Usable as ``KFGN(model, loss_fn, KFGNConfig(variant="kfra"), lr=0.5)`` (keyword
    overrides are validated like the config). State: for each Linear layer, under its
    weight, the averaged factors ``Q``, ``G`` and their damped inverses; for PReLU
    slopes, the averaged GN diagonal ``diag``; ``velocity`` per parameter with
    momentum; under the group's first parameter the ``step`` count, the ``damping`` in
    use, the group value it follows (``damping_base``), the last ``alpha`` and, with LM
    adaptation, the last reduction ratio ``rho`` and the number of ``rejected`` steps.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, config: KFGNConfig | None = None, **overrides):
        super().__init__(model, loss_fn, config or KFGNConfig(), overrides)
        linear = {id(p) for i in self.net.linear_indices for p in self.net.modules[i].parameters()}
        self._other = [id(p) not in linear for p in self.params]  # PReLU slopes: diagonal step

    @torch.no_grad()
    def _update_statistics(self, group: dict, x: Tensor, y: Tensor) -> None:
        decay = group["factor_decay"]
        factors = FACTORS[KFGNVariant(group["variant"])](self.net, self.loss_fn, x, y, group["mc_samples"],
                                                         self.generator)
        for k, f in zip(self.net.linear_indices, factors):
            st = self.state[self.net.modules[k].weight]
            st["Q"] = moving_average(st.get("Q"), f.input, decay)  # (in+1, in+1)
            st["G"] = moving_average(st.get("G"), f.output, decay)  # (out, out)
        if any(self._other):  # the slopes' diagonal only, not every parameter's
            slopes = [j for j, other in enumerate(self._other) if other]
            diags = slope_diagonal_mc(self.net, self.loss_fn, x, y, slopes, mc_samples=group["mc_samples"],
                                      generator=self.generator)
            for j in slopes:
                check_finite("PReLU slope GN diagonal", diags[j])
                p = self.params[j]
                self.state[p]["diag"] = moving_average(self.state[p].get("diag"), diags[j], decay)

    @torch.no_grad()
    def _update_inverses(self, damping: float, weight_cost: dict[int, float]) -> None:
        """Damped factor inverses for ``damping`` in the module's units (``s·γ``).

        With ``Ḡ = s·Ḡ_paper`` (``Q̄`` does not scale) ``π = π_paper/√s``, so the shifts
        ``π√(sγ) = π_paper√γ`` and ``√(sγ)/π = s·√γ/π_paper``: the damped factors are
        ``Q̄ + π_paper√γ I`` and ``s(Ḡ_paper + √γ/π_paper I)``, and with ``V = s·V_paper``
        the step equals the papers' step.

        A layer whose weight (or bias: the runner penalises both, as Martens' released
        ``nnet_train_2.m`` does) carries the ℓ2 cost ``(c/2)‖W‖²`` (``weight_cost`` maps
        the parameter's id to ``c``, module units) has the curvature ``c·I`` folded into
        the factored damping, ``sγ + c`` in place of ``sγ`` (Martens & Grosse 2015, §6.3:
        ``γ = √(λ + η)``). The approximation: the factored damping shifts the whole
        homogeneous block ``[W b]`` (the bias row too, penalised or not), and ``(Q̄ + π√λ I) ⊗ (Ḡ + √λ/π I)`` is
        ``Q̄ ⊗ Ḡ + λI`` plus the cross terms ``√λ(π I ⊗ Ḡ + Q̄/π ⊗ I)``.
        """
        for layer, k in enumerate(self.net.linear_indices):
            m = self.net.modules[k]
            st = self.state[m.weight]
            factors = KroneckerFactors(f"layer{layer}", st["Q"], st["G"], m.bias is not None)
            c = max(weight_cost.get(id(q), 0.0) for q in m.parameters())  # weight (and bias) cost
            st["Q_inv"], st["G_inv"] = factors.damped_inverses(damping + c)

    @torch.no_grad()
    def _direction(self, damping: float, weight_cost: dict[int, float]) -> list[Tensor]:
        """Δ per parameter (in ``self.params`` order) from the current gradients; a penalised
        PReLU slope's diagonal gains its ``c``: ``g / (d + sγ + c)``."""
        out: dict[int, Tensor] = {}
        for k in self.net.linear_indices:
            m = self.net.modules[k]
            st = self.state[m.weight]
            gb = m.bias.grad if m.bias is not None else None
            dw, db = kronecker_step(m.weight.grad, gb, st["Q_inv"], st["G_inv"])
            out[id(m.weight)] = dw
            if db is not None:
                out[id(m.bias)] = db
        for p, other in zip(self.params, self._other):
            if other:
                out[id(p)] = p.grad / (self.state[p]["diag"] + damping + weight_cost.get(id(p), 0.0))
        return [out[id(p)] for p in self.params]

    def _weight_cost(self, closure: StepClosure) -> dict[int, float]:
        """``{id(W): c}`` for the closure's ℓ2-penalised weights (``weight_cost`` c, ``l2_params``)."""
        c = float(getattr(closure, "weight_cost", 0.0) or 0.0)
        check(math.isfinite(c) and c >= 0, "weight_cost", c)
        return {id(w): c for w in getattr(closure, "l2_params", ())} if c > 0 else {}

    def step(self, closure: StepClosure) -> Tensor:  # type: ignore[override]
        """One KFGN step ``θ ← θ − lr·u`` on the closure's batch (Botev et al. 2017, §4).

        Reads every hyperparameter from the param group. With ``adapt_damping`` a step
        that raised the batch objective is undone after the LM update (see
        :meth:`_adapt_damping`). Returns the loss before the step.
        """
        x, y = self.batch(closure)
        loss = closure()
        check_finite("loss", loss.detach())
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        group, st, rebased = self.begin_step()
        t, damping, lr, momentum = st["step"], st["damping"], group["lr"], group["momentum"]
        scaled = self.loss_scale(x, y) * damping  # s·γ: γ is in the papers' units
        cost = self._weight_cost(closure)  # c per ℓ2-penalised weight, module units
        if t % group["stat_period"] == 0:
            self._update_statistics(group, x, y)
        first = self.state[self.net.modules[self.net.linear_indices[0]].weight]
        inv_key = (scaled, tuple(sorted(cost.items())))
        if rebased or t % group["inv_period"] == 0 or "Q_inv" not in first or st.get("inv_damping") != inv_key:
            self._update_inverses(scaled, cost)
            st["inv_damping"] = inv_key
        delta = self._direction(scaled, cost)
        check_finite("KFGN direction", *delta)
        alphas, gd, dgd = self._step_sizes(group, scaled, cost, x, y, delta)
        lm = group["adapt_damping"] and (t + 1) % group["lm_period"] == 0
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params] if lm else []
            for p, d, other in zip(self.params, delta, self._other):
                u = heavy_ball(alphas[1] * d if other else alphas[0] * d, self.state[p].get("velocity"), momentum)
                if momentum > 0:
                    self.state[p]["velocity"] = u.clone()
                p.add_(u, alpha=-lr)
        if lm:  # a step to non-finite parameters or loss is rejected there, not raised
            self._adapt_damping(st, saved, -lr * gd + 0.5 * lr * lr * dgd, cost, x, y, loss)
        check_finite("parameters after the KFGN step", *self.params)
        st.update(step=t + 1, alpha=alphas[0], alpha_other=alphas[1])
        return loss

    @torch.no_grad()
    def _adapt_damping(self, st: dict, saved: list[Tensor], predicted: float, cost: dict[int, float],
                       x: Tensor, y: Tensor, loss: Tensor) -> None:
        """LM update of γ from the batch's reduction ratio; a step that raised the batch
        objective is undone.

        ``ρ = (f(θ − lr·s) − f(θ)) / (−lr·gᵀs + ½ lr² sᵀGs)`` with the undamped model of
        the step taken (Martens & Grosse 2015, §6.5; Martens 2010, §4.1); ``f`` includes
        the closure's ℓ2 cost. The rejection is the acceptance test of a trust-region
        method (Moré 1978): without it a step far outside the region where the GN model
        holds is kept, and the next step starts from there. On the abs-unit CURVES
        autoencoder (KFLR, γ = 1e-2) the first step raised the batch loss 0.69 → 1.48,
        the second (from that point, with the factors still mostly the old ones) took
        it to 2e7. ``saved`` holds θ before the step.
        """
        new = self.loss_fn(self.model(x), y)
        if cost:  # the ℓ2 term on the device, so the new objective costs one host sync
            new = new + 0.5 * sum(c * p.square().sum() for p in self.params if (c := cost.get(id(p))))
        actual = float(new) - float(loss)
        rho = reduction_ratio(actual, predicted)
        st["damping"], st["rho"] = lm_update(st["damping"], rho), rho
        if not (math.isfinite(actual) and actual <= 0):  # the batch objective rose: reject the step
            for p, s0 in zip(self.params, saved):
                p.copy_(s0)
            st["rejected"] = st.get("rejected", 0) + 1

    @torch.no_grad()
    def _step_sizes(self, group: dict, damping: float, cost: dict[int, float], x: Tensor, y: Tensor,
                    delta: list[Tensor]) -> tuple[tuple[float, float], float, float]:
        """``(α_Linear, α_other)``, ``gᵀs`` and ``sᵀGs`` by :func:`rescale_step_sizes`, one
        batched GN product for the block directions (Linear, and PReLU slopes if any).

        With an ℓ2 cost ``(c/2)‖W‖²`` on some weights the curvature of the objective is
        ``G + c·I`` on those entries, so ``c·Δ_W`` is added to ``GΔ`` (Martens & Grosse
        2015, §6.4 use ``F + (λ + η)I``): the model gains ``c‖Δ_W‖²``.
        """
        if not (group["rescale"] or group["adapt_damping"]):
            return (1.0, 1.0), math.nan, math.nan
        other = torch.tensor(self._other)
        masks = [~other] + ([other] if bool(other.any()) else [])
        vecs = [torch.stack([d * (1.0 if bool(mk[j]) else 0.0) for mk in masks]) for j, d in enumerate(delta)]
        gv = ggn_matrix_product(self.net, self.loss_fn, x, y, vecs)  # per param (K, *shape)
        gv = [g + cost[id(p)] * v if id(p) in cost else g for p, v, g in zip(self.params, vecs, gv)]
        dk = torch.cat([v.flatten(1) for v in vecs], dim=1)  # (K, P) directions
        gdk = torch.cat([v.flatten(1) for v in gv], dim=1)  # (K, P) G·directions
        g = torch.cat([p.grad.reshape(-1) for p in self.params])  # (P,)
        a, gd, dgd = rescale_step_sizes(g, dk, gdk, damping, rescale=group["rescale"])
        return (a[0], a[-1]), gd, dgd


# γ over four decades (its published 1e-3 inside); the rescaled step keeps lr near 1.
@register_optimizer("kfgn", KFGNConfig, Capabilities(uses_curvature=True),
                    search_space={"damping": {"log": [1e-4, 1.0]}, "lr": {"log": [0.1, 1.0]}})
def kfgn(model: nn.Module, loss_fn: nn.Module, config: KFGNConfig) -> KFGN:
    """Kronecker-factored Gauss-Newton (Botev et al. 2017): variant kfra | kflr | kfac."""
    return KFGN(model, loss_fn, config)
