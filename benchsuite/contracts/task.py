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
from benchsuite.contracts.registry import Registry
from benchsuite.curvature.losses import LossKind  # defined by the engine: it fixes ℋ_L
from benchsuite.errors import ConfigError

__all__ = ["LossKind", "SPLITS", "Split", "TaskContractError", "TaskData", "Target", "Task", "TASKS",
           "check_contract", "evaluation_columns", "mlp"]

SPLITS = ("train", "valid", "test")


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

    def splits(self) -> dict[str, Split]:
        """The splits by name: ``train``, ``valid``, ``test``."""
        return dict(zip(SPLITS, (self.train, self.valid, self.test)))


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


# --------------------------------------------------------------------------------------
# Contract checks: where a task's author goes wrong, say so when its data is built
# --------------------------------------------------------------------------------------


class TaskContractError(ConfigError):
    """A task's data or target breaks the Task contract (a bug of the task, not of the run)."""


def evaluation_columns(task: Task, outputs: Tensor, targets: Tensor) -> list[str]:
    """The columns an evaluation of ``task`` reports: ``{split}_loss`` and ``{split}_{metric}``."""
    names = ["loss", *task.metrics(outputs, targets)]
    return [f"{split}_{name}" for split in SPLITS for name in names]


def check_contract(task: Task, data: TaskData, model: nn.Module, name: str | None = None) -> None:
    """Check ``data`` and the task's target against its loss kind and ``model``'s outputs.

    A target tensor the loss would silently broadcast (an MSE task with ``(N,)``
    targets against ``(N, 1)`` outputs averages an ``N × N`` matrix) or a target metric
    the evaluation never reports would otherwise give a run that "completes" with
    meaningless numbers.

    Args:
        task: The task that built ``data``.
        data: Its splits, on the run's device and dtype.
        model: Its network (one forward pass on a few validation inputs gives the output shape).
        name: The task's registry name, for messages (default: its class name).

    Raises:
        TaskContractError: naming the task, the split, the shapes or values found and what is expected.
    """
    name = name or type(task).__name__
    outputs = _outputs(model, data.valid.inputs[:8])  # (k, D_out)
    for split, part in data.splits().items():
        where = f"Task '{name}' ({task.loss_kind.value} loss), split '{split}'"
        if part.targets.shape[:1] != part.inputs.shape[:1]:
            raise TaskContractError(f"{where}: {len(part)} inputs but {part.targets.shape[0]} targets "
                                    f"(targets shape {tuple(part.targets.shape)}); need one target per input")
        problem = _TARGET_CHECKS[task.loss_kind](part.targets, outputs.shape[1:])
        if problem:
            raise TaskContractError(f"{where}: {problem}")
    columns = evaluation_columns(task, outputs, data.valid.targets[: len(outputs)])
    if task.target.metric not in columns:
        raise TaskContractError(f"Task '{name}': its target names metric '{task.target.metric}', which its "
                                f"evaluation never reports. Valid: {', '.join(columns)}")


@torch.no_grad()
def _outputs(model: nn.Module, inputs: Tensor) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(inputs)
    finally:
        model.train(was_training)


def _shape(targets: Tensor) -> str:
    return f"targets of shape {tuple(targets.shape)} and dtype {str(targets.dtype).removeprefix('torch.')}"


def _regression_targets(targets: Tensor, out: torch.Size) -> str | None:
    """MSE: float targets shaped exactly like the outputs ``(N, D_out)``."""
    if not targets.is_floating_point() or targets.shape[1:] != out:
        return (f"{_shape(targets)}, but the model outputs (N, {', '.join(map(str, out))}); the MSE loss needs "
                f"float targets of shape (N, {', '.join(map(str, out))}), exactly like the outputs "
                "(e.g. y.reshape(-1, 1) for one output)")
    return None


def _class_targets(targets: Tensor, out: torch.Size) -> str | None:
    """Softmax cross-entropy: ``(N,)`` int64 class indices in ``[0, C)``."""
    n_classes = out[0] if len(out) == 1 else None
    if targets.dtype != torch.int64 or targets.dim() != 1 or n_classes is None:
        return (f"{_shape(targets)} against outputs (N, {', '.join(map(str, out))}); the softmax "
                f"cross-entropy loss needs (N,) int64 class indices and (N, C) outputs")
    if len(targets) and (targets.min() < 0 or targets.max() >= n_classes):
        return (f"class indices from {int(targets.min())} to {int(targets.max())}, but the model has "
                f"{n_classes} outputs; need indices in [0, {n_classes})")
    return None


def _binary_targets(targets: Tensor, out: torch.Size) -> str | None:
    """Sigmoid cross-entropy: float targets shaped like the outputs, with values in [0, 1]."""
    if not targets.is_floating_point() or targets.shape[1:] != out:
        return (f"{_shape(targets)}, but the model outputs (N, {', '.join(map(str, out))}); the sigmoid "
                f"cross-entropy loss needs float targets of shape (N, {', '.join(map(str, out))}) in [0, 1]")
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        return (f"target values from {float(targets.min()):.4g} to {float(targets.max()):.4g}; the sigmoid "
                "cross-entropy loss needs probabilities in [0, 1]")
    return None


_TARGET_CHECKS = {
    LossKind.MSE: _regression_targets,
    LossKind.SOFTMAX_CROSS_ENTROPY: _class_targets,
    LossKind.SIGMOID_CROSS_ENTROPY: _binary_targets,
}
