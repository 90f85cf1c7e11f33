"""Output Hessians ℋ_L of torch loss modules, their square roots, and Monte-Carlo samplers.

The loss ``E`` is taken on the *logits* ``h_L`` exactly as the torch module computes
it, reduction included, so every curvature quantity here equals the one of the
scalar that ``loss_fn(logits, y)`` returns (the BackPACK/curvlinops convention).
Because the loss sums (or averages) per-sample terms, the Hessian with respect to
the stacked logits is block diagonal with one ``C × C`` block per sample,

    ℋ_n = s · ℋ̂_n,  ℋ̂_n = ∂²ℓ(h_n, y_n)/∂h_n²,

where ``ℓ`` is the un-reduced per-sample loss and ``s`` the reduction scale:

=========================  =================================  ========  ==========
loss module                ℋ̂_n                                mean: s   sum: s
=========================  =================================  ========  ==========
``MSELoss``                2·I                                1/(N·D)   1
``CrossEntropyLoss``       diag(p) − p pᵀ,  p = softmax(h)    1/N       1
``BCEWithLogitsLoss``      diag(σ(1 − σ)),  σ = sigmoid(h)    1/(N·D)   1
=========================  =================================  ========  ==========

(``D`` is the number of logits per sample: torch averages ``MSELoss`` and
``BCEWithLogitsLoss`` over all ``N·D`` entries.) The symmetric factorisation
``ℋ_n = C_n C_nᵀ`` (Botev et al. 2017, Table 1) is returned as *columns*: a tensor
``(K, N, C)`` whose ``k``-th slice holds column ``k`` of every ``C_n``. Monte-Carlo
samplers (Martens & Grosse 2015) return ``M`` columns with ``E[Σ_m c_m c_mᵀ] = ℋ_n``:

* softmax: ``(onehot(ỹ) − p)/√M`` with ``ỹ ~ Categorical(p)``,
* sigmoid: ``(1[U ≤ σ] − σ)/√M`` with ``U ~ Uniform(0, 1)``,
* Gaussian: ``√2 · z/√M`` with ``z ~ N(0, I)``,

each times ``√s``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from benchsuite.curvature.errors import CurvatureError, UnsupportedLossError, choices

__all__ = ["LossCurvature", "LossKind", "SUPPORTED_LOSSES", "check_loss", "loss_curvature", "per_example_scale"]


class LossKind(str, enum.Enum):
    """How the loss turns logits into a value: fixes the output Hessian ℋ_L."""

    MSE = "mse"
    SOFTMAX_CROSS_ENTROPY = "softmax_cross_entropy"
    SIGMOID_CROSS_ENTROPY = "sigmoid_cross_entropy"

    def module(self, reduction: str = "mean") -> nn.Module:
        """The torch loss module of this kind (it takes logits)."""
        cls = next(t for t, kind in SUPPORTED_LOSSES.items() if kind == self)
        return cls(reduction=reduction)


SUPPORTED_LOSSES: dict[type[nn.Module], LossKind] = {
    nn.MSELoss: LossKind.MSE,
    nn.CrossEntropyLoss: LossKind.SOFTMAX_CROSS_ENTROPY,
    nn.BCEWithLogitsLoss: LossKind.SIGMOID_CROSS_ENTROPY,
}


def check_loss(loss_fn: nn.Module) -> LossKind:
    """The :class:`LossKind` of a supported torch loss module.

    Raises:
        UnsupportedLossError: for another module type, a reduction other than ``mean``
            or ``sum``, class weights or ``pos_weight`` (the message lists the choices).
    """
    kind = SUPPORTED_LOSSES.get(type(loss_fn))
    if kind is None:
        known = choices(t.__name__ for t in SUPPORTED_LOSSES)
        raise UnsupportedLossError(f"Unsupported loss module {type(loss_fn).__name__}. Supported: {known}")
    if loss_fn.reduction not in ("mean", "sum"):
        raise UnsupportedLossError(f"Unsupported reduction '{loss_fn.reduction}'. Supported: mean, sum")
    if getattr(loss_fn, "weight", None) is not None:
        raise UnsupportedLossError(f"{type(loss_fn).__name__} with class weights is not supported "
                                   "(supported: weight=None)")
    if getattr(loss_fn, "pos_weight", None) is not None:
        raise UnsupportedLossError("BCEWithLogitsLoss with pos_weight is not supported (supported: pos_weight=None)")
    return kind


def per_example_scale(loss_fn: nn.Module, num_samples: int, num_outputs: int) -> float:
    """The factor ``s`` between the loss module's value and the papers' objective.

    The second-order papers (Martens 2010; Martens & Grosse 2015; Botev et al. 2017)
    state damping for the loss *per example, summed over outputs*,
    ``f(θ) = (1/N) Σ_n Σ_d ℓ(h_nd, y_nd)`` (softmax cross-entropy is already a sum
    over classes). A torch loss module returns ``s · f(θ)`` with

    =========================  ===========  =========
    loss module                mean         sum
    =========================  ===========  =========
    ``MSELoss``                1/D          N
    ``CrossEntropyLoss``       1            N
    ``BCEWithLogitsLoss``      1/D          N
    =========================  ===========  =========

    (``MSELoss``'s per-entry loss is ``(h − y)²``, torch's, without a ½.) So its
    gradient and curvature are ``s`` times the papers', and a damping ``γ`` given in
    the papers' units is applied to the module's curvature as ``s·γ``: the damped
    step ``(sG + sγI)⁻¹ s g = (G + γI)⁻¹ g`` is then the same for either reduction
    and any number of outputs.

    Args:
        loss_fn: A supported loss module (see :func:`check_loss`).
        num_samples: ``N``, the examples in the batch.
        num_outputs: ``D``, the logits per example.

    Returns:
        ``s`` (a Python float).
    """
    kind = check_loss(loss_fn)
    if loss_fn.reduction == "sum":
        return float(num_samples)
    return 1.0 if kind is LossKind.SOFTMAX_CROSS_ENTROPY else 1.0 / num_outputs


@dataclass(frozen=True)
class LossCurvature:
    """Curvature of a torch loss module at fixed logits (one mini-batch).

    Attributes:
        kind: The loss kind (fixes ℋ̂).
        reduction: ``"mean"`` or ``"sum"``.
        scale: The reduction scale ``s`` (see the module docstring).
        logits: The logits ``h_L`` (N, C), detached.
        probs: softmax (CE) or sigmoid (BCE) of the logits; None for MSE.
    """

    kind: LossKind
    reduction: str
    scale: float
    logits: Tensor  # (N, C)
    probs: Tensor | None  # (N, C)

    @property
    def num_samples(self) -> int:
        return self.logits.shape[0]

    @property
    def num_outputs(self) -> int:
        return self.logits.shape[1]

    @property
    def diagonal(self) -> Tensor | None:
        """Diagonal of ``C_n`` (N, C) when ℋ_n is diagonal (MSE, BCE), else None."""
        if self.kind == LossKind.MSE:
            return torch.full_like(self.logits, math.sqrt(2.0 * self.scale))  # (N, C)
        if self.kind == LossKind.SIGMOID_CROSS_ENTROPY:
            return (self.probs * (1 - self.probs) * self.scale).sqrt()  # (N, C)
        return None

    def hessian(self) -> Tensor:
        """Per-sample output Hessians ``ℋ_n = s·ℋ̂_n`` (N, C, C)."""
        d = self.diagonal
        if d is not None:
            return torch.diag_embed(d * d)  # (N, C, C)
        p = self.probs  # (N, C)
        return self.scale * (torch.diag_embed(p) - p[:, :, None] * p[:, None, :])  # (N, C, C)

    def hessian_product(self, u: Tensor) -> Tensor:
        """``ℋ_n u_n`` for a batch of logit tangents ``u`` (..., N, C) without forming ℋ."""
        if self.kind == LossKind.MSE:
            return (2.0 * self.scale) * u
        p = self.probs  # (N, C)
        if self.kind == LossKind.SIGMOID_CROSS_ENTROPY:
            return (self.scale * p * (1 - p)) * u
        return self.scale * (p * u - p * (u * p).sum(-1, keepdim=True))  # (..., N, C)

    def sqrt_columns(self, start: int = 0, stop: int | None = None) -> Tensor:
        """Columns ``start:stop`` of the symmetric square roots ``C_n`` as (K, N, C).

        softmax: ``C_n = (diag(√p) − p √pᵀ)·√s``, column ``k`` is ``√(s p_k)(e_k − p)``;
        diagonal losses: column ``k`` is ``c_k e_k``.
        """
        n, c = self.logits.shape
        stop = c if stop is None else stop
        ks = torch.arange(start, stop, device=self.logits.device)  # (K,)
        eye = torch.nn.functional.one_hot(ks, c).to(self.logits.dtype)  # (K, C)
        d = self.diagonal
        if d is not None:
            return d.T[start:stop, :, None] * eye[:, None, :]  # (K, N, C)
        p = self.probs  # (N, C)
        coef = (self.scale * p.T[start:stop]).sqrt()  # (K, N)
        return coef[:, :, None] * (eye[:, None, :] - p[None])  # (K, N, C)

    def sample_columns(self, mc_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``M`` Monte-Carlo columns (M, N, C) with ``E[Σ_m c_m c_mᵀ] = ℋ_n`` per sample."""
        if mc_samples < 1:
            raise CurvatureError(f"Invalid mc_samples: {mc_samples} (need an integer >= 1)")
        shape = (mc_samples, *self.logits.shape)
        dev, dt = self.logits.device, self.logits.dtype
        if self.kind == LossKind.MSE:
            z = torch.randn(shape, generator=generator, device=dev, dtype=dt)  # (M, N, C)
            return z * math.sqrt(2.0 * self.scale / mc_samples)
        p = self.probs  # (N, C)
        if self.kind == LossKind.SIGMOID_CROSS_ENTROPY:
            u = torch.rand(shape, generator=generator, device=dev, dtype=dt)  # (M, N, C)
            return ((u <= p).to(dt) - p) * math.sqrt(self.scale / mc_samples)
        n, c = p.shape
        idx = torch.multinomial(p, mc_samples, replacement=True, generator=generator)  # (N, M)
        onehot = torch.nn.functional.one_hot(idx.T, c).to(dt)  # (M, N, C)
        return (onehot - p) * math.sqrt(self.scale / mc_samples)

    def gradient(self, y: Tensor) -> Tensor:
        """``∂E/∂h_L`` (N, C) of the reduced loss (canonical link: prediction − target)."""
        n, c = self.logits.shape
        if self.kind == LossKind.MSE:
            return 2.0 * self.scale * (self.logits - y.to(self.logits.dtype))
        if self.kind == LossKind.SIGMOID_CROSS_ENTROPY:
            return self.scale * (self.probs - y.to(self.logits.dtype))
        target = y if y.is_floating_point() else torch.nn.functional.one_hot(y, c).to(self.logits.dtype)
        return self.scale * (self.probs - target)


def loss_curvature(loss_fn: nn.Module, logits: Tensor, y: Tensor) -> LossCurvature:
    """The :class:`LossCurvature` of ``loss_fn(logits, y)``.

    Args:
        loss_fn: ``nn.MSELoss``, ``nn.CrossEntropyLoss`` or ``nn.BCEWithLogitsLoss`` with
            reduction ``"mean"`` or ``"sum"`` (no class weights).
        logits: Network outputs (N, C).
        y: Targets: class indices (N,) or probabilities (N, C) for CE, (N, C) otherwise.

    Raises:
        UnsupportedLossError: for an unsupported loss module, reduction, option or target.
        CurvatureError: for logits that are not (N, C).
    """
    kind = check_loss(loss_fn)
    if logits.ndim != 2:
        raise CurvatureError(f"Curvature needs logits of shape (N, C), got {tuple(logits.shape)}")
    logits = logits.detach()
    n, c = logits.shape
    mean = loss_fn.reduction == "mean"
    if kind == LossKind.SOFTMAX_CROSS_ENTROPY:
        if not y.is_floating_point() and bool((y == loss_fn.ignore_index).any()):
            raise UnsupportedLossError("CrossEntropyLoss targets hit ignore_index: not supported by curvature code "
                                       "(supported: every target a class index or probabilities)")
        scale = 1.0 / n if mean else 1.0
        probs = torch.softmax(logits, dim=1)  # (N, C)
    else:
        scale = 1.0 / (n * c) if mean else 1.0
        probs = torch.sigmoid(logits) if kind == LossKind.SIGMOID_CROSS_ENTROPY else None
    return LossCurvature(kind, loss_fn.reduction, scale, logits, probs)
