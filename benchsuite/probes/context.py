"""What a curvature statistic sees: the options and the context of one probe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchsuite.curvature import SequentialModel, ggn_matrix_product, hessian_matrix_product
from benchsuite.curvature.linalg import rademacher
from benchsuite.errors import ConfigError

__all__ = ["ProbeContext", "ProbeOptions"]


@dataclass(frozen=True)
class ProbeOptions:
    """Knobs of the statistics.

    Attributes:
        hutchinson_samples: Rademacher vectors per Hutchinson trace estimate.
        top_k: Number of top eigenvalues of H and G.
        dense_block_max: Blocks with at most this many parameters are checked densely;
            larger ones by products (randomised Frobenius ratio, Lanczos min eigenvalue).
        block_probe_vectors: Rademacher vectors for the randomised block difference.
        eig_tol: Relative tolerance passed to ``scipy.sparse.linalg.eigsh``.
        eig_maxiter: Iteration cap for ``eigsh`` (Lanczos restarts).
        lanczos_steps: Krylov dimension for the minimum eigenvalue of a large block.
    """

    hutchinson_samples: int = 16
    top_k: int = 3
    dense_block_max: int = 500
    lanczos_steps: int = 40
    block_probe_vectors: int = 4
    eig_tol: float = 1e-4
    eig_maxiter: int = 300

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

    @property
    def params(self) -> list[Tensor]:
        return self.net.params

    def rademacher(self, k: int) -> list[Tensor]:
        """K Rademacher vectors shaped like the parameters, (K, *p.shape) each."""
        return rademacher(self.params, k, self.generator)

    def start_vector(self, n: int, shift: float) -> np.ndarray:
        """A reproducible float64 start vector ``U(0, 1) + shift`` of length ``n`` (Lanczos)."""
        u = torch.rand(n, generator=self.generator, device=self.generator.device, dtype=torch.float64)
        return u.cpu().numpy() + shift

    def ggn(self, vectors: list[Tensor]) -> list[Tensor]:
        return ggn_matrix_product(self.net, self.loss_fn, self.x, self.y, vectors)

    def hessian(self, vectors: list[Tensor]) -> list[Tensor]:
        return hessian_matrix_product(self.net, self.loss_fn, self.x, self.y, vectors)
