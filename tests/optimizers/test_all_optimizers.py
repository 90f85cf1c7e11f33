"""Generic tests over the capability database: every registered optimizer, variant and estimator."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from benchsuite.tasks.digits import DigitsMLP
from optim_infos import OPTIM_INFOS
from torch import nn

from benchsuite.contracts.optimizer import OPTIMIZERS, StepClosure
from benchsuite.errors import ConfigError

CASES = [pytest.param(info.name, dict(info.hparams), id=f"opt={info.id}") for info in OPTIM_INFOS]
SECOND_ORDER = [c for c in CASES if OPTIMIZERS.get(c.values[0]).capabilities.uses_curvature]


def linear_regression(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
    return model, nn.MSELoss(), x, y


def optimum(x: torch.Tensor, y: torch.Tensor) -> float:
    xb = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    w = torch.linalg.lstsq(xb, y.double()).solution
    return float(((xb @ w - y.double()) ** 2).mean())


def train(name, hp, model, loss_fn, batches, steps):
    opt = OPTIMIZERS.get(name).build(model, loss_fn, hp)
    losses = []
    for i in range(steps):
        x, y = batches[i % len(batches)]
        losses.append(float(opt.step(StepClosure(model, loss_fn, x, y))))
    return opt, losses


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_lowers_the_loss_of_a_convex_quadratic(name, hp):
    model, loss_fn, x, y = linear_regression()
    f0, fstar = float(loss_fn(model(x), y).detach()), optimum(x, y)
    _, losses = train(name, hp, model, loss_fn, [(x, y)], 50)
    final = float(loss_fn(model(x), y))
    assert final < f0
    if OPTIMIZERS.get(name).capabilities.uses_curvature and name != "diag_gn":
        # the GN matrix is the exact Hessian here: a handful of steps converge
        model2, _, _, _ = linear_regression()
        train(name, hp, model2, loss_fn, [(x, y)], 5)
        assert float(loss_fn(model2(x), y)) - fstar <= 1e-3 * (f0 - fstar)


@pytest.fixture(scope="module")
def digits():
    task = DigitsMLP("tiny")
    data = task.make_data(0)
    batches = [(data.train.inputs[i:i + 64], data.train.targets[i:i + 64]) for i in range(0, 512, 64)]
    return task, batches


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_lowers_the_loss_of_a_small_relu_net(name, hp, digits):
    task, batches = digits
    torch.manual_seed(0)
    model = task.build_model("relu")
    loss_fn = task.loss_fn()
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    before = float(loss_fn(model(x), y))
    train(name, hp, model, loss_fn, batches, 32)
    assert float(loss_fn(model(x), y)) < 0.9 * before


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_deterministic_under_a_seed(name, hp, digits):
    task, batches = digits
    params = []
    for _ in range(2):
        torch.manual_seed(3)
        model = task.build_model("leaky_relu")
        train(name, hp, model, task.loss_fn(), batches, 4)
        params.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(params[0], params[1])


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_state_dict_round_trip_resumes_exactly(name, hp, digits):
    task, batches = digits
    torch.manual_seed(1)
    model = task.build_model("prelu")
    loss_fn = task.loss_fn()
    opt, _ = train(name, hp, model, loss_fn, batches[:3], 3)
    saved_model, saved_state = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for x, y in batches[3:5]:
        opt.step(StepClosure(model, loss_fn, x, y))
    model2 = task.build_model("prelu")
    model2.load_state_dict(saved_model)
    opt2 = OPTIMIZERS.get(name).build(model2, loss_fn, hp)
    opt2.load_state_dict(saved_state)
    for x, y in batches[3:5]:
        opt2.step(StepClosure(model2, loss_fn, x, y))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(("name", "hp"), CASES)
def test_rejects_bad_hyperparameters(name, hp):
    entry = OPTIMIZERS.get(name)
    fields = {f.name for f in dataclasses.fields(entry.config_cls)}
    with pytest.raises(ConfigError, match=r"^Invalid learning rate: -1\.0$"):
        entry.config({**hp, "lr": -1.0})
    if "damping" in fields:
        with pytest.raises(ConfigError, match=r"^Invalid damping: -1\.0$"):
            entry.config({**hp, "damping": -1.0})
    with pytest.raises(ConfigError, match="Unknown hyperparameter.*'nonsense'.*Valid: .*lr"):
        entry.config({**hp, "nonsense": 1})


def test_rejects_unknown_kfgn_variant():
    with pytest.raises(ConfigError, match="Invalid variant .*kfra, kflr, kfac.*: newton"):
        OPTIMIZERS.get("kfgn").config({"variant": "newton"})


@pytest.mark.parametrize(("name", "hp"), SECOND_ORDER)
def test_second_order_refuses_unsupported_models_and_losses(name, hp):
    entry = OPTIMIZERS.get(name)
    with pytest.raises(ConfigError, match="Unsupported module Dropout.*Supported: .*Linear"):
        entry.build(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2)), nn.MSELoss(), hp)
    with pytest.raises(ConfigError, match="Unsupported loss module L1Loss.*Supported: .*MSELoss"):
        entry.build(nn.Sequential(nn.Linear(3, 2)), nn.L1Loss(), hp)


@pytest.mark.parametrize(("name", "hp"), SECOND_ORDER)
def test_second_order_step_needs_the_batch(name, hp):
    model = nn.Sequential(nn.Linear(3, 2))
    opt = OPTIMIZERS.get(name).build(model, nn.MSELoss(), hp)
    with pytest.raises(TypeError, match="StepClosure"):
        opt.step(lambda: torch.tensor(0.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "hp"), CASES)
def test_runs_on_cuda_and_matches_cpu_direction(name, hp, digits):
    task, batches = digits
    losses = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = task.build_model("relu").double().to(device)
        bs = [(x.double().to(device), y.to(device)) for x, y in batches[:3]]
        _, losses[device] = train(name, hp, model, task.loss_fn(), bs, 3)
    assert losses["cpu"] == pytest.approx(losses["cuda"], rel=1e-6)


def test_kfgn_refuses_lm_adaptation_with_momentum():
    with pytest.raises(ConfigError, match="Invalid adapt_damping with momentum"):
        OPTIMIZERS.get("kfgn").config({"adapt_damping": True, "momentum": 0.9})
