"""First-order baselines: thin registered wrappers of ``torch.optim`` SGD, Adam and RMSprop."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.contracts.optimizer import (
    OptimizerConfig,
    check,
    non_negative,
    positive,
    register_optimizer,
    unit_interval,
)


@dataclass(frozen=True)
class SGDConfig(OptimizerConfig):
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        positive("learning rate", self.lr)
        unit_interval("momentum", self.momentum)
        non_negative("weight_decay", self.weight_decay)
        check(not self.nesterov or self.momentum > 0, "nesterov (needs momentum > 0)", self.nesterov)


@dataclass(frozen=True)
class AdamConfig(OptimizerConfig):
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        positive("learning rate", self.lr)
        unit_interval("beta1", self.beta1)
        unit_interval("beta2", self.beta2)
        positive("epsilon", self.eps)
        non_negative("weight_decay", self.weight_decay)


@dataclass(frozen=True)
class RMSpropConfig(OptimizerConfig):
    lr: float = 1e-3
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        positive("learning rate", self.lr)
        unit_interval("alpha", self.alpha)
        positive("epsilon", self.eps)
        unit_interval("momentum", self.momentum)
        non_negative("weight_decay", self.weight_decay)


# Search spaces for the tuning protocol: log-uniform learning rates over 3-4 decades around the
# usual values, momenta log-uniform in their distance from 1 (AlgoPerf-style).
@register_optimizer("sgd", SGDConfig, search_space={"lr": {"log": [1e-3, 1.0]},
                                                    "momentum": {"one_minus_log": [1e-2, 0.5]}})
def sgd(model: nn.Module, loss_fn: nn.Module, c: SGDConfig) -> torch.optim.Optimizer:
    """SGD with (optionally Nesterov) momentum (torch.optim.SGD)."""
    return torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                           weight_decay=c.weight_decay)


@register_optimizer("adam", AdamConfig, search_space={"lr": {"log": [1e-5, 1e-1]},
                                                      "beta1": {"one_minus_log": [1e-2, 0.5]}})
def adam(model: nn.Module, loss_fn: nn.Module, c: AdamConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015; torch.optim.Adam)."""
    return torch.optim.Adam(model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                            weight_decay=c.weight_decay)


@register_optimizer("rmsprop", RMSpropConfig, search_space={"lr": {"log": [1e-5, 1e-1]},
                                                            "alpha": {"one_minus_log": [1e-3, 0.1]}})
def rmsprop(model: nn.Module, loss_fn: nn.Module, c: RMSpropConfig) -> torch.optim.Optimizer:
    """RMSprop (Tieleman & Hinton 2012; torch.optim.RMSprop)."""
    return torch.optim.RMSprop(model.parameters(), lr=c.lr, alpha=c.alpha, eps=c.eps, momentum=c.momentum,
                               centered=c.centered, weight_decay=c.weight_decay)
