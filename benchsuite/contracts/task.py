"""The Task contract: data for a seed, a model for an activation, a loss kind, metrics, a target.

A task is a class registered in :data:`TASKS`. It is instantiated with a *size*
(``tiny`` for CPU tests and smoke runs, ``default`` for the published size, ...) and
option overrides, then asked for data (deterministic per seed, generated locally or
shipped inside an installed package: nothing is downloaded) and for a model.
Models are ``nn.Sequential`` stacks of ``nn.Linear`` and activation modules whose
last layer outputs *logits*: the sigmoid/softmax belongs to the loss, as in the
papers, so the output Hessian does not depend on the targets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from benchsuite.contracts.activation import ACTIVATIONS, Activation
from benchsuite.curvature.losses import LossKind  # defined by the engine: it fixes ℋ_L
from benchsuite.errors import ConfigError
from benchsuite.contracts.registry import Registry

__all__ = ["LossKind", "Split", "TaskData", "Target", "Task", "TASKS", "mlp"]


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split."""

    inputs: Tensor  # (N, D_in)
    targets: Tensor  # (N,) class indices or (N, D_out)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Split:
        x = self.inputs.to(device=device, dtype=dtype or self.inputs.dtype)
        y = self.targets.to(device)
        if dtype is not None and y.is_floating_point():
            y = y.to(dtype)
        return Split(x, y)


@dataclass(frozen=True)
class TaskData:
    train: Split
    valid: Split
    test: Split

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskData:
        return TaskData(*(s.to(device, dtype) for s in (self.train, self.valid, self.test)))


@dataclass(frozen=True)
class Target:
    """A value to reach, for time-to-target: ``metric`` is an eval column, e.g. ``valid_error``."""

    metric: str
    value: float
    mode: str = "min"  # "min": reached when metric <= value; "max": when >=

    def reached(self, value: float) -> bool:
        return value <= self.value if self.mode == "min" else value >= self.value


def mlp(
    sizes: list[int],
    activation: Activation,
    act_options: Mapping[str, Any] | None = None,
    linear: frozenset[int] = frozenset(),
) -> nn.Sequential:
    """A fully connected stack ``sizes[0] → … → sizes[-1]`` with logits out.

    Hidden layer ``i`` (1-based position in ``sizes``) is followed by the activation
    unless ``i`` is in ``linear`` (e.g. an autoencoder's code layer). A non-elementwise
    activation (maxout with k pieces) widens the Linear layer before it to ``k·width``.
    """
    opts = dict(act_options or {})
    layers: list[nn.Module] = []
    for i in range(1, len(sizes)):
        hidden = i < len(sizes) - 1 and i not in linear
        out = activation.fan_in(sizes[i], **opts) if hidden else sizes[i]
        layers.append(nn.Linear(sizes[i - 1], out))
        if hidden:
            layers.append(activation.build(sizes[i], **opts))
    return nn.Sequential(*layers)


class Task(ABC):
    """Base class of tasks. Subclasses set the class attributes and implement the hooks.

    Class attributes:
        description: One line for ``benchsuite list``.
        loss_kind: The loss on the logits.
        sizes: Named presets of options; must contain ``tiny`` and ``default``.
        batch_size: Default mini-batch size (overridable per run).
    """

    description: ClassVar[str] = ""
    loss_kind: ClassVar[LossKind]
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]]
    batch_size: ClassVar[int] = 128

    def __init__(self, size: str = "default", **options: Any):
        if size not in self.sizes:
            raise ConfigError(
                f"Unknown size '{size}' for task {type(self).__name__}. Valid choices: {', '.join(self.sizes)}"
            )
        valid = set(self.sizes["default"])
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(
                f"Unknown option(s) {unknown} for task {type(self).__name__}. Valid: {', '.join(sorted(valid))}"
            )
        self.size = size
        self.options: dict[str, Any] = {**self.sizes["default"], **self.sizes[size], **options}
        self.validate()

    def validate(self) -> None:
        """Check option values; raise :class:`ConfigError` naming the bad one."""
        self.require_positive_ints(*(k for k in ("width", "depth") if self.options.get(k) is not None))

    def require_positive_ints(self, *keys: str) -> None:
        """Raise ``ConfigError("Invalid {key}: …")`` unless each option in ``keys`` is an int ≥ 1."""
        for key in keys:
            value = self.options[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Invalid {key}: {value} (need a positive integer)")

    @abstractmethod
    def make_data(self, seed: int) -> TaskData:
        """Train/validation/test splits, a deterministic function of ``seed`` and the options."""

    @abstractmethod
    def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
        """Layer widths ``[in, h_1, …, out]`` and the positions of linear hidden layers."""

    def build_model(self, activation: str | Activation, **act_options: Any) -> nn.Sequential:
        """The task's network with ``activation`` between Linear layers (logits out)."""
        act = ACTIVATIONS.get(activation) if isinstance(activation, str) else activation
        sizes, linear = self.layer_sizes()
        return mlp(sizes, act, act_options, linear)

    def loss_fn(self, reduction: str = "mean") -> nn.Module:
        return self.loss_kind.module(reduction)

    def metrics(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        """Extra metrics of a split beyond the loss (e.g. classification error)."""
        return {}

    @property
    @abstractmethod
    def target(self) -> Target:
        """What counts as solved, for time-to-target."""


TASKS: Registry[type[Task]] = Registry("task", group="benchsuite.tasks")
