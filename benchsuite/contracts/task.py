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

__all__ = [
    "GENERIC_OPTIONS",
    "INITS",
    "SPLITS",
    "TASKS",
    "LossKind",
    "Split",
    "Target",
    "Task",
    "TaskContractError",
    "TaskData",
    "check_contract",
    "evaluation_columns",
    "mlp",
    "sparse_init_",
]

SPLITS = ("train", "valid", "test")

INITS = ("default", "sparse")
"""Model initialisations every task accepts as its ``init`` option."""

GENERIC_OPTIONS: Mapping[str, Any] = {"init": "default", "sparse_connections": 15}
"""Options every task accepts on top of its own ``sizes`` (with these defaults):

* ``init``: ``"default"`` (PyTorch's ``nn.Linear`` initialisation) or ``"sparse"``
  (Martens 2010, §5; see :func:`sparse_init_`).
* ``sparse_connections``: non-zero incoming weights per unit under ``init = "sparse"``.
"""


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


@torch.no_grad()
def sparse_init_(model: nn.Module, connections: int = 15, scale: float = 1.0,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Martens' sparse initialisation, in place, of every ``nn.Linear`` layer of ``model``.

    Martens (2010), "Deep learning via Hessian-free optimization", §5 ("sparse
    initialization"): each unit gets a small fixed number of non-zero *incoming*
    weights, drawn from a unit Gaussian, and all other weights and the biases are
    zero, so units are not saturated and the scale of their total input does not
    depend on the layer's fan-in. His code, ``nnet_train_2.m`` (block ``%SPARSE INIT:``),
    does so with ``numconn = 15`` and ``initcoeff = 1`` for *every* layer including the
    output layer (``for i = 1:numlayers``; incoming: ``Wtmp{i}(j,idx) = randn(numconn,1)*initcoeff``)
    and leaves the biases at 0. Two details of that code are not replicated here: it
    draws the 15 input indices *with* replacement (``ceil(layersizes(i)*rand(1,numconn))``,
    so a unit may get fewer distinct inputs), where this draws 15 distinct inputs as
    the paper states; and it halves ``initcoeff`` next to tanh layers and sets tanh
    biases to 0.5, a tanh-specific rule the paper does not state.

    A unit with fewer than ``connections`` inputs gets all of them. A Linear layer
    before maxout (``k·width`` outputs) gets ``connections`` inputs per output, like any
    other; PReLU slopes are left as they are.

    Args:
        model: The network; every ``nn.Linear`` in ``model.modules()`` is initialised.
        connections: Non-zero incoming weights per unit (Martens: 15).
        scale: Standard deviation of the non-zero weights (Martens: 1).
        generator: Random source (None: the global torch RNG, which the runner seeds).

    Returns:
        ``model``.
    """
    for layer in model.modules():
        if not isinstance(layer, nn.Linear):
            continue
        w = layer.weight  # (out, in)
        k = min(connections, w.shape[1])
        keys = torch.rand(w.shape, generator=generator)  # (out, in) on the CPU: same draws on every device
        idx = keys.argsort(dim=1)[:, :k]  # (out, k): k distinct inputs per unit
        values = torch.randn((w.shape[0], k), generator=generator) * scale  # (out, k)
        dense = torch.zeros(w.shape).scatter_(1, idx, values)  # (out, in)
        w.copy_(dense)
        if layer.bias is not None:
            layer.bias.zero_()
    return model


class Task(ABC):
    """Base class of tasks. Subclasses set the class attributes and implement the hooks.

    Class attributes:
        description: One line for ``benchsuite list``.
        loss_kind: The loss on the logits.
        sizes: Named presets of options; must contain ``tiny`` and ``default``.
        batch_size: Default mini-batch size (overridable per run).

    Besides the options of its ``sizes``, every task accepts the generic options of
    :data:`GENERIC_OPTIONS` (``init``, ``sparse_connections``), which
    :meth:`build_model` applies; a task need not list them.
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
        valid = set(self.sizes["default"]) | set(GENERIC_OPTIONS)
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(
                f"Unknown option(s) {unknown} for task {type(self).__name__}. Valid: {', '.join(sorted(valid))}"
            )
        self.size = size
        self.options: dict[str, Any] = {**GENERIC_OPTIONS, **self.sizes["default"], **self.sizes[size], **options}
        self._validate_generic()
        self.validate()

    def _validate_generic(self) -> None:
        """Check the options of :data:`GENERIC_OPTIONS` (whatever the subclass's :meth:`validate` does)."""
        init = self.options["init"]
        if not isinstance(init, str) or init not in INITS:
            raise ConfigError(f"Invalid init: {init!r}. Valid choices: {', '.join(INITS)}")
        self.require_positive_ints("sparse_connections")

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
        """The task's network with ``activation`` between Linear layers (logits out).

        With the option ``init = "sparse"`` the Linear layers are then re-initialised
        by :func:`sparse_init_` (``sparse_connections`` inputs per unit) from the global
        torch RNG, which the runner seeds with the run's seed before building the model,
        so a run's initial weights are a function of its seed.
        """
        act = ACTIVATIONS.get(activation) if isinstance(activation, str) else activation
        sizes, linear = self.layer_sizes()
        model = mlp(sizes, act, act_options, linear)
        if self.options["init"] == "sparse":
            sparse_init_(model, self.options["sparse_connections"])
        return model

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
