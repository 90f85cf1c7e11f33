"""Capability database of the registered optimizers (modelled on torch's ``OptimizerInfo``).

Every registered optimizer name has at least one :class:`OptimizerInfo` (one per
variant or estimator), and the generic tests in ``test_optimizer_infos.py`` run over
all of them; ``test_every_registered_optimizer_has_an_info`` fails when a new
optimizer is registered without one, so no optimizer skips the generic tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from benchsuite.optimizers.diag_gn import Estimator
from benchsuite.optimizers.kfgn import KFGNVariant


@dataclass(frozen=True)
class OptimizerInfo:
    """What the generic tests may assume of one registered optimizer (and variant).

    Attributes:
        name: Registry name.
        hparams: Hyperparameters selecting the variant (plus settings that keep the
            tests fast, e.g. HF's CG cap).
        uses_curvature: Reads model, loss and batch from the closure (second order).
        needs_closure: ``step`` must be given the closure.
        has_lr: Has a learning rate in its param group.
        supports_scheduler: ``torch.optim.lr_scheduler`` drives its ``lr``.
        schedulable: Group keys read at every step (a scheduler or user may change them).
        lr_linear: The first step is linear in ``lr`` (halving ``lr`` halves it).
        state_dict_round_trip: ``state_dict`` survives ``torch.save``/``torch.load(weights_only=True)``.
        adapts_damping: Levenberg-Marquardt adapts the damping in use (by default).
    """

    name: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    uses_curvature: bool = False
    needs_closure: bool = True
    has_lr: bool = True
    supports_scheduler: bool = True
    schedulable: tuple[str, ...] = ("lr",)
    lr_linear: bool = True
    state_dict_round_trip: bool = True
    adapts_damping: bool = False

    @property
    def id(self) -> str:
        choice = next((str(v) for k, v in self.hparams.items() if k in ("variant", "estimator")), None)
        return self.name + (f"-{choice}" if choice else "")

    @property
    def has_damping(self) -> bool:
        return "damping" in self.schedulable

    def param(self, *marks) -> Any:
        return pytest.param(self, id=self.id, marks=marks)


KFGN_SCHEDULABLE = ("lr", "damping", "factor_decay", "stat_period", "inv_period", "rescale", "momentum",
                    "adapt_damping", "lm_period", "mc_samples", "variant")
HF_SCHEDULABLE = ("lr", "damping", "adapt_damping", "min_damping", "curvature_batch_size", "curvature_fraction",
                  "curvature_chunks", "model_on_curvature_batch", "heldout_guard", "guard_tolerance", "max_cg_iters",
                  "min_cg_iters", "cg_tol", "warm_start_decay", "precondition", "precond_exponent", "backtrack",
                  "line_search", "armijo_c", "armijo_shrink", "max_line_search")
DIAG_GN_SCHEDULABLE = ("lr", "damping", "estimator", "mc_samples", "curvature_decay", "momentum", "stat_period",
                       "rescale", "adapt_damping", "min_damping")

OPTIM_INFOS: list[OptimizerInfo] = [
    OptimizerInfo("sgd", schedulable=("lr", "momentum", "weight_decay", "nesterov")),
    OptimizerInfo("adam", schedulable=("lr", "betas", "eps", "weight_decay")),
    OptimizerInfo("rmsprop", schedulable=("lr", "alpha", "eps", "momentum", "weight_decay", "centered")),
    *[OptimizerInfo("kfgn", {"variant": v.value}, uses_curvature=True, schedulable=KFGN_SCHEDULABLE,
                    adapts_damping=True)
      for v in KFGNVariant],
    OptimizerInfo("hf", {"max_cg_iters": 20}, uses_curvature=True, schedulable=HF_SCHEDULABLE,
                  adapts_damping=True),
    *[OptimizerInfo("diag_gn", {"estimator": e.value}, uses_curvature=True, schedulable=DIAG_GN_SCHEDULABLE,
                    adapts_damping=True)
      for e in Estimator],
]


def infos(**where: Any) -> list[Any]:
    """``pytest.param`` per info whose attributes equal ``where`` (all infos without ``where``)."""
    return [i.param() for i in OPTIM_INFOS if all(getattr(i, k) == v for k, v in where.items())]
