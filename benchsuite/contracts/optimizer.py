"""The Optimizer contract: registry entries with validated config dataclasses.

An optimizer is registered with a frozen *config dataclass* (its hyperparameters
with defaults; ``__post_init__`` validates them with torch.optim-style messages such
as ``Invalid learning rate: -1.0``) and a factory
``factory(model, loss_fn, config) -> torch.optim.Optimizer``. Every optimizer gets the
model and the loss module, so the runner drives them all the same way: it calls
``optimizer.step(closure)`` with a :class:`StepClosure` that carries the batch.
First-order methods just call the closure; second-order ones read the batch,
model and loss from it (and declare so in :class:`Capabilities`).

The config is the validated edge: the optimizer copies :meth:`OptimizerConfig.to_dict`
(plain JSON values; enum variants as their strings) into its ``param_groups`` and
reads its hyperparameters from there at every step, so ``torch.optim.lr_scheduler``
drives every registered optimizer the same way.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from benchsuite.contracts.registry import Registry
from benchsuite.contracts.search_space import SearchSpace, parse_space
from benchsuite.errors import ConfigError

__all__ = [
    "OPTIMIZERS",
    "Capabilities",
    "OptimizerConfig",
    "OptimizerEntry",
    "StepClosure",
    "check",
    "choice",
    "register_optimizer",
]


def check(ok: bool, name: str, value: Any) -> None:
    """Raise ``ConfigError("Invalid {name}: {value}")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"Invalid {name}: {value}")


def positive(name: str, value: float) -> None:
    check(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, name, value)


def non_negative(name: str, value: float) -> None:
    check(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, name, value)


def unit_interval(name: str, value: float, *, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (0 <= value <= 1 if closed else 0 <= value < 1)
    check(ok, name, value)


def choice(config: OptimizerConfig, name: str, kind: type[Enum]) -> None:
    """Convert field ``name`` of a (frozen) config to the enum ``kind``.

    Suite files give variants as strings; the config holds the enum member. Raises
    ``ConfigError("Invalid {name} (valid: a, b): {value}")`` for a value that is not one
    of the enum's values.
    """
    value = getattr(config, name)
    valid = [m.value for m in kind]
    check(isinstance(value, (str, Enum)) and value in valid, f"{name} (valid: {', '.join(valid)})", value)
    object.__setattr__(config, name, kind(value))


_NEED = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raise ``ConfigError("Invalid {name}: {value!r} (need …)")`` for a value of the wrong kind.

    What a config's own ``__post_init__`` cannot see is caught here: ``true`` where a
    number is expected (Python counts a bool as an int, so ``lr = true`` would run with
    lr 1), and anything but ``true``/``false`` for a flag (``nesterov = "no"`` is truthy).
    Values and ranges of numbers (``Invalid learning rate: nan``) stay with the config's
    own checks; other annotations (enums, unions) too.
    """
    if hint in (float, int):
        ok = not isinstance(value, bool)
    elif hint in (bool, str):
        ok = isinstance(value, hint)
    else:
        return
    if not ok:
        raise ConfigError(f"Invalid {name}: {value!r} (need {_NEED[hint]})")


@dataclass(frozen=True)
class OptimizerConfig:
    """Base of hyperparameter dataclasses; subclasses validate in ``__post_init__``.

    A config is the validated edge of an optimizer: the optimizer copies
    :meth:`to_dict` into its ``param_groups`` (``defaults``) and reads every
    hyperparameter from there at each step, so ``torch.optim.lr_scheduler`` (or a user
    editing ``param_groups``) drives it.
    """

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> OptimizerConfig:
        values = dict(values or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(
                f"Unknown hyperparameter(s) {unknown} for {cls.__name__}. Valid: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            _check_type(name, value, hints.get(name))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (enum members as their string values): what goes into
        ``param_groups``, records and ``torch.load(weights_only=True)``."""
        return {k: v.value if isinstance(v, Enum) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **overrides: Any) -> OptimizerConfig:
        """A validated copy with ``overrides`` (unknown names raise :class:`ConfigError`)."""
        return type(self).from_dict({**self.to_dict(), **overrides}) if overrides else self


@dataclass(frozen=True)
class Capabilities:
    """What an optimizer needs from the runner beyond gradients.

    Attributes:
        uses_curvature: Reads the model, loss and batch from the closure (second order).
        needs_closure: ``step`` must be given the closure (it re-evaluates the loss).
        has_lr: Has a learning rate (for tuning and reports).
    """

    uses_curvature: bool = False
    needs_closure: bool = True
    has_lr: bool = True


Factory = Callable[[nn.Module, nn.Module, Any], torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer: config dataclass + factory + capabilities + tuning search space.

    ``search_space`` holds the ranges the tuning protocol samples for this optimizer
    (see :mod:`benchsuite.contracts.search_space`); hyperparameters outside it keep their
    suite or default values during tuning.
    """

    name: str
    description: str
    config_cls: type[OptimizerConfig]
    factory: Factory
    capabilities: Capabilities = Capabilities()
    search_space: SearchSpace = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        fields = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(self.search_space) - fields)
        if unknown:
            raise ConfigError(f"Search space of optimizer '{self.name}' names unknown hyperparameter(s) "
                              f"{unknown}. Valid: {', '.join(sorted(fields))}")

    def config(self, hparams: Mapping[str, Any] | None = None) -> OptimizerConfig:
        """The validated config for ``hparams`` (defaults for missing keys)."""
        try:
            return self.config_cls.from_dict(hparams)
        except TypeError as exc:  # e.g. a wrong type that dataclass init rejects
            raise ConfigError(f"Invalid hyperparameters for optimizer '{self.name}': {exc}") from None

    def build(self, model: nn.Module, loss_fn: nn.Module, hparams: Mapping[str, Any] | None = None):
        return self.factory(model, loss_fn, self.config(hparams))


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer", group="benchsuite.optimizers")


def register_optimizer(
    name: str, config_cls: type[OptimizerConfig], capabilities: Capabilities = Capabilities(),
    description: str | None = None, search_space: Mapping[str, Any] | None = None,
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(model, loss_fn, config)`` as optimizer ``name``.

    ``search_space`` maps hyperparameter names to dimensions (objects or their
    suite-file form, e.g. ``{"lr": {"log": [1e-4, 1e-1]}}``) for the tuning protocol.
    """

    def decorator(factory: Factory) -> Factory:
        desc = description or ((factory.__doc__ or "").strip().splitlines() or [name])[0]
        space = parse_space(search_space or {})
        OPTIMIZERS.add(name, OptimizerEntry(name, desc, config_cls, factory, capabilities, space), desc)
        return factory

    return decorator


class StepClosure:
    """The closure the runner (or a user's loop) passes to ``optimizer.step``.

    Calling it zeroes the model's gradients, evaluates the objective on the batch,
    back-propagates and returns the (detached) objective, as torch.optim expects.
    Second-order optimizers also read ``model``, ``loss_fn``, ``inputs`` and
    ``targets`` from it to compute curvature on the same batch, and ``weight_cost``
    and ``l2_params`` to add the ℓ2 term's curvature ``weight_cost·I`` on those
    parameters (read them with ``getattr(closure, "weight_cost", 0.0)`` and
    ``getattr(closure, "l2_params", ())``, so a user's own closure object still works).

    The objective is the data loss plus an optional ℓ2 weight cost (Martens 2010,
    ``nnet_train_2.m``: ``ll - 0.5*weightcost*params'*(maskp.*params)``)::

        loss = loss_fn(model(inputs), targets) + (weight_cost / 2) · Σ_{W ∈ l2_params} ‖W‖²

    Attributes:
        model, loss_fn: The network and the loss module.
        inputs, targets: The batch, ``(N, D_in)`` and ``(N, ...)``.
        weight_cost: The ℓ2 coefficient ``c`` *in the loss module's units* (the runner
            passes ``s·weight_cost`` for a spec's ``weight_cost`` given in the papers'
            units, ``s`` = :func:`benchsuite.curvature.per_example_scale`); 0 for none.
        l2_params: The tensors the weight cost applies to (the runner: the weights of
            the weights and biases of the model's ``nn.Linear`` layers, no PReLU slopes, as in
            Martens' ``nnet_train_2.m``); empty for none.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, inputs: Tensor, targets: Tensor, *,
                 weight_cost: float = 0.0, l2_params: Sequence[Tensor] = ()):
        self.model, self.loss_fn = model, loss_fn
        self.inputs, self.targets = inputs, targets  # (N, D_in), (N, ...)
        self.weight_cost = float(weight_cost)
        self.l2_params: tuple[Tensor, ...] = tuple(l2_params)

    def data_loss(self) -> Tensor:
        """The loss module's value on the batch, with graph, without the weight cost."""
        return self.loss_fn(self.model(self.inputs), self.targets)

    def l2_term(self) -> Tensor | float:
        """``(weight_cost / 2) · Σ ‖W‖²`` over ``l2_params``, with graph (0.0 when there is none)."""
        if self.weight_cost == 0.0 or not self.l2_params:
            return 0.0
        return 0.5 * self.weight_cost * sum(w.square().sum() for w in self.l2_params)

    def loss(self) -> Tensor:
        """The objective on the batch (data loss plus weight cost), with graph, without touching gradients."""
        data = self.data_loss()
        term = self.l2_term()
        return data if isinstance(term, float) else data + term

    @torch.enable_grad()
    def __call__(self) -> Tensor:
        for p in self.model.parameters():
            p.grad = None
        loss = self.loss()
        loss.backward()
        return loss.detach()
