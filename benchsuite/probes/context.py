"""What a curvature statistic sees: the options and the context of one probe.

A :class:`ProbeContext` lives for one probe (one call of the probe at fixed
parameters). Its products reuse ONE forward pass each: the GN product keeps the
forward cache and the output Hessian (:class:`~benchsuite.curvature.GGNOperator`),
the Hessian product keeps the loss and its gradient graph
(:class:`~benchsuite.curvature.products.HessianOperator`, double backward with
``retain_graph``); both are built on first use and shared by every statistic of the
probe, on the model's device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.curvature import GGNOperator, SequentialModel
from benchsuite.curvature.linalg import rademacher, start_block
from benchsuite.curvature.products import HessianOperator
from benchsuite.errors import ConfigError

__all__ = ["ProbeContext", "ProbeOptions"]


@dataclass(frozen=True)
class ProbeOptions:
    """Knobs of the statistics.

    Attributes:
        hutchinson_samples: Rademacher vectors per Hutchinson trace estimate.
        top_k: Number of top eigenvalues of H and G.
        dense_block_max: Blocks with at most this many parameters are checked exactly
            (dense blocks); larger ones get estimates under other keys (randomised
            Frobenius ratio, smallest Ritz value).
        block_probe_vectors: Rademacher vectors for the randomised block difference.
        eig_tol: Relative error tolerance of the top Ritz values: each value's error
            bound ``min(r, r²/gap)`` (``r = ‖A y − θ y‖``) is at most ``eig_tol · |θ|``.
        eig_maxiter: Cap on the block Lanczos Krylov dimension (vectors multiplied)
            for the top eigenvalues; unconverged values are NaN.
        eig_block: Block size of the block Lanczos (vectors per batched product): 1 is
            cheapest per Krylov vector on a CPU, where a batched product costs as much as
            its vectors one by one; on a GPU a block of 4–8 costs about one product.
        lanczos_steps: Krylov dimension for the minimum Ritz value of a large block.
    """

    hutchinson_samples: int = 16
    top_k: int = 3
    dense_block_max: int = 500
    lanczos_steps: int = 40
    block_probe_vectors: int = 4
    eig_tol: float = 1e-4
    eig_maxiter: int = 150
    eig_block: int = 1

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | ProbeOptions | None) -> ProbeOptions:
        if options is None:
            return cls()
        if isinstance(options, ProbeOptions):
            return options
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"Unknown probe option(s) {unknown}. Valid: {', '.join(sorted(valid))}")
        opts = replace(cls(), **options)
        for f in fields(cls):
            value = getattr(opts, f.name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"Invalid probe option {f.name}={value!r} (need a positive number)")
        return opts


@dataclass
class ProbeContext:
    """What a statistic sees: the model at the probe, the probe batch and a persistent state.

    Attributes:
        net: The parsed model.
        loss_fn: The torch loss module.
        x: Probe inputs (N, D_in).
        y: Probe targets.
        options: :class:`ProbeOptions`.
        generator: Random generator seeded from (seed, step).
        state: Per-statistic persistent state (e.g. last dead-unit masks), kept between calls.
        step: Training step of this probe.
    """

    net: SequentialModel
    loss_fn: nn.Module
    x: Tensor
    y: Tensor
    options: ProbeOptions
    generator: torch.Generator
    state: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    _ggn_op: GGNOperator | None = field(default=None, init=False, repr=False)
    _hessian_op: HessianOperator | None = field(default=None, init=False, repr=False)

    @property
    def params(self) -> list[Tensor]:
        return self.net.params

    def rademacher(self, k: int) -> list[Tensor]:
        """K Rademacher vectors shaped like the parameters, (K, *p.shape) each."""
        return rademacher(self.params, k, self.generator)

    def start_block(self, n: int, b: int, guess: Tensor | None = None) -> Tensor:
        """A reproducible start block (b, n) for Lanczos in the parameters' dtype and device.

        Gaussian rows; with ``guess`` (n,) the first row leans on it (see
        :func:`~benchsuite.curvature.linalg.start_block`).
        """
        p = self.params[0]
        return start_block(n, b, self.generator, p.dtype, p.device, guess)

    def flat_gradient(self) -> Tensor:
        """``∇_θ E`` on the probe batch as one (P,) vector (from the cached Hessian operator's graph)."""
        return torch.cat([g.reshape(-1) for g in self.hessian_operator.gradient])

    @property
    def ggn_operator(self) -> GGNOperator:
        """The GN operator of this probe: one forward pass, built on first use."""
        if self._ggn_op is None:
            self._ggn_op = GGNOperator(self.net, self.loss_fn, self.x, self.y)
        return self._ggn_op

    @property
    def hessian_operator(self) -> HessianOperator:
        """The Hessian operator of this probe: one forward pass and gradient graph, built on first use."""
        if self._hessian_op is None:
            self._hessian_op = HessianOperator(self.net, self.loss_fn, self.x, self.y)
        return self._hessian_op

    def ggn(self, vectors: list[Tensor]) -> list[Tensor]:
        """``G V`` for K vectors (K, *param.shape) on the cached forward pass."""
        return self.ggn_operator.matmat(vectors)

    def hessian(self, vectors: list[Tensor]) -> list[Tensor]:
        """``H V`` for K vectors (K, *param.shape) by double backward through the cached graph."""
        return self.hessian_operator.matmat(vectors)

    def release(self) -> None:
        """Free the cached forward passes and graph (the probe calls it when done)."""
        self._ggn_op = self._hessian_op = None
