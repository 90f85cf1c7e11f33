"""Cases-as-data for the curvature tests: tiny float64 MLPs × loss kind × reduction."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.task import mlp
from benchsuite.curvature import LossKind

ACTIVATION_NAMES = ["relu", "leaky_relu", "prelu", "abs", "maxout", "tanh", "softplus", "gelu"]
PIECEWISE_LINEAR = ["relu", "leaky_relu", "prelu", "abs", "maxout"]
SMOOTH = ["tanh", "softplus", "gelu"]
LOSS_KINDS = [LossKind.MSE, LossKind.SOFTMAX_CROSS_ENTROPY, LossKind.SIGMOID_CROSS_ENTROPY]
REDUCTIONS = ["mean", "sum"]
SIZES = [3, 5, 4, 3]


@dataclass
class Case:
    """A tiny network, a loss module and a batch, in float64."""

    act: str
    kind: LossKind
    reduction: str
    model: nn.Sequential
    loss_fn: nn.Module
    x: Tensor
    y: Tensor

    @property
    def params(self) -> list[Tensor]:
        return list(self.model.parameters())


def targets(kind: LossKind, n: int, c: int, gen: torch.Generator) -> Tensor:
    if kind == LossKind.SOFTMAX_CROSS_ENTROPY:
        return torch.randint(0, c, (n,), generator=gen)
    if kind == LossKind.SIGMOID_CROSS_ENTROPY:
        return torch.rand(n, c, generator=gen, dtype=torch.float64)
    return torch.randn(n, c, generator=gen, dtype=torch.float64)


def make_case(act: str, kind: LossKind, reduction: str = "mean", n: int = 4, seed: int = 0,
              sizes: list[int] = SIZES) -> Case:
    """Build a reproducible case; PReLU slopes are randomised so they matter."""
    torch.manual_seed(seed)
    model = mlp(sizes, ACTIVATIONS.get(act)).double()
    for m in model:
        if isinstance(m, nn.PReLU):
            with torch.no_grad():
                m.weight.uniform_(0.1, 0.5)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, sizes[0], generator=gen, dtype=torch.float64)
    y = targets(kind, n, sizes[-1], gen)
    return Case(act, kind, reduction, model, kind.module(reduction), x, y)


def case_id(act: str, kind: LossKind, reduction: str) -> str:
    return f"act={act}-loss={kind.value}-red={reduction}"


ALL_CASES = [
    pytest.param(a, k, r, id=case_id(a, k, r)) for a in ACTIVATION_NAMES for k in LOSS_KINDS for r in REDUCTIONS
]


def rel_err(a: Tensor, b: Tensor) -> float:
    """‖a − b‖ / ‖b‖ (absolute when b = 0)."""
    den = b.norm()
    return float((a - b).norm() / den) if den > 0 else float((a - b).norm())


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
