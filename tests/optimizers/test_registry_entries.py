"""First-order optimizers: hyperparameter validation, descent on convex problems, state_dict round trip."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.optimizer import OPTIMIZERS, OptimizerConfig, StepClosure
from benchsuite.errors import ConfigError
from benchsuite.run.runner import run

FIRST_ORDER = ["sgd", "adam", "rmsprop"]
# Hyperparameters that make each method converge on the small problems below.
GOOD_LR = {"sgd": {"lr": 0.05, "momentum": 0.9}, "adam": {"lr": 0.05}, "rmsprop": {"lr": 0.05}}
DIGITS_LR = {"sgd": {"lr": 0.1, "momentum": 0.9}, "adam": {"lr": 0.01}, "rmsprop": {"lr": 0.01}}

BAD_HPARAMS = [
    # (optimizer, hparams, exact message)
    ("sgd", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("sgd", {"lr": 0.0}, "Invalid learning rate: 0.0"),
    ("sgd", {"lr": float("nan")}, "Invalid learning rate: nan"),
    ("sgd", {"momentum": 1.0}, "Invalid momentum: 1.0"),
    ("sgd", {"momentum": -0.1}, "Invalid momentum: -0.1"),
    ("sgd", {"weight_decay": -1e-4}, "Invalid weight_decay: -0.0001"),
    ("sgd", {"nesterov": True, "momentum": 0.0}, "Invalid nesterov (needs momentum > 0): True"),
    ("sgd", {"lr": "fast"}, "Invalid learning rate: fast"),
    ("adam", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("adam", {"beta1": 1.0}, "Invalid beta1: 1.0"),
    ("adam", {"beta2": -0.5}, "Invalid beta2: -0.5"),
    ("adam", {"eps": 0.0}, "Invalid epsilon: 0.0"),
    ("adam", {"weight_decay": float("inf")}, "Invalid weight_decay: inf"),
    ("rmsprop", {"lr": -1.0}, "Invalid learning rate: -1.0"),
    ("rmsprop", {"alpha": 1.5}, "Invalid alpha: 1.5"),
    ("rmsprop", {"eps": -1e-8}, "Invalid epsilon: -1e-08"),
    ("rmsprop", {"momentum": 2.0}, "Invalid momentum: 2.0"),
    ("rmsprop", {"weight_decay": -1.0}, "Invalid weight_decay: -1.0"),
]


@pytest.mark.parametrize(
    "name, hparams, message",
    [pytest.param(*case, id=f"opt={case[0]}-" + "-".join(f"{k}={v}" for k, v in case[1].items()))
     for case in BAD_HPARAMS],
)
def test_bad_hyperparameters_rejected_with_torch_style_message(name, hparams, message):
    entry = OPTIMIZERS.get(name)
    with pytest.raises(ConfigError) as info:
        entry.config(hparams)
    assert str(info.value) == message
    # The same error comes out of the factory and before any training in the runner.
    with pytest.raises(ConfigError):
        entry.build(nn.Linear(2, 1), nn.MSELoss(), hparams)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_unknown_hyperparameter_lists_valid_ones(name):
    entry = OPTIMIZERS.get(name)
    with pytest.raises(ConfigError) as info:
        entry.config({"learning_rate": 0.1})
    msg = str(info.value)
    assert "['learning_rate']" in msg
    for f in dataclasses.fields(entry.config_cls):
        assert f.name in msg


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_defaults_are_valid_and_config_round_trips(name):
    entry = OPTIMIZERS.get(name)
    config = entry.config()
    assert isinstance(config, OptimizerConfig)
    assert entry.config(config.to_dict()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    assert entry.capabilities.has_lr and not entry.capabilities.uses_curvature


def _quadratic_problem(seed: int = 0):
    """Least squares ``min_w ½‖Xw − y‖²/N``: convex, well conditioned, optimum known."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 5, generator=gen)  # (N, D)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0], [0.0]]) + 0.3  # (N, 1)
    torch.manual_seed(seed)
    return nn.Linear(5, 1), nn.MSELoss(), x, y


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_lowers_loss_of_convex_quadratic(name):
    model, loss_fn, x, y = _quadratic_problem()
    opt = OPTIMIZERS.get(name).build(model, loss_fn, GOOD_LR[name])
    assert isinstance(opt, torch.optim.Optimizer)
    closure = StepClosure(model, loss_fn, x, y)
    initial = float(closure())
    losses = [float(opt.step(closure)) for _ in range(100)]
    final = float(closure())
    assert final < 0.05 * initial, (initial, losses[:5], final)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_lowers_digits_tiny_training_loss(name):
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer=name, size="tiny", hparams=DIGITS_LR[name],
                   budget=Budget(steps=20), eval_every=20)
    rec = run(spec)
    assert rec.status == "completed", rec.reason
    assert rec.evals[-1]["train_loss"] < 0.7 * rec.evals[0]["train_loss"]


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_state_dict_round_trip_continues_identically(name):
    model, loss_fn, x, y = _quadratic_problem()
    entry = OPTIMIZERS.get(name)
    opt = entry.build(model, loss_fn, GOOD_LR[name])
    for _ in range(3):
        opt.step(StepClosure(model, loss_fn, x, y))
    twin = copy.deepcopy(model)
    twin_opt = entry.build(twin, loss_fn, GOOD_LR[name])
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(2):
        opt.step(StepClosure(model, loss_fn, x, y))
        twin_opt.step(StepClosure(twin, loss_fn, x, y))
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_state_dict_round_trip_changes_result_when_state_is_lost():
    """Control for the round-trip test: a fresh optimizer (no momentum state) diverges from the original."""
    model, loss_fn, x, y = _quadratic_problem()
    entry = OPTIMIZERS.get("sgd")
    opt = entry.build(model, loss_fn, GOOD_LR["sgd"])
    for _ in range(3):
        opt.step(StepClosure(model, loss_fn, x, y))
    twin = copy.deepcopy(model)
    fresh = entry.build(twin, loss_fn, GOOD_LR["sgd"])
    opt.step(StepClosure(model, loss_fn, x, y))
    fresh.step(StepClosure(twin, loss_fn, x, y))
    assert not torch.equal(model.weight, twin.weight)


def test_step_closure_zeroes_grads_and_returns_detached_loss():
    model, loss_fn, x, y = _quadratic_problem()
    closure = StepClosure(model, loss_fn, x, y)
    first = closure()
    g1 = model.weight.grad.clone()
    second = closure()  # gradients must not accumulate across calls
    torch.testing.assert_close(model.weight.grad, g1)
    assert not first.requires_grad and torch.equal(first, second)
