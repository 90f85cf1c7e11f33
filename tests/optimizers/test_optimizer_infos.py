"""Generic optimizer tests driven by the capability database (``optim_infos.py``).

Every registered optimizer (each KFGN variant, each DiagGN estimator) is a torch
optimizer whose hyperparameters live in ``param_groups``: a scheduler at lr 0
freezes it, a scheduler that halves lr halves its first step, its ``state_dict``
survives ``torch.save``/``torch.load(weights_only=True)``, and second-order ones
refuse models and losses the curvature engine cannot handle when they are built.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json

import pytest
import torch
from benchsuite.optimizers.diag_gn import DiagGNConfig, Estimator
from benchsuite.optimizers.kfgn import KFGN, KFGNConfig, KFGNVariant
from optim_infos import OPTIM_INFOS, OptimizerInfo, infos
from torch import nn

from benchsuite.contracts.optimizer import OPTIMIZERS, StepClosure
from benchsuite.errors import ConfigError


def problem(seed: int = 0, act: type[nn.Module] = nn.ReLU):
    """A small float64 classification MLP with four fixed batches."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), act(), nn.Linear(7, 3)).double()
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g))
               for _ in range(4)]
    return model, nn.CrossEntropyLoss(), batches


def build(info: OptimizerInfo, model: nn.Module, loss_fn: nn.Module, **hparams) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(info.name).build(model, loss_fn, {**info.hparams, **hparams})


def steps(opt, model, loss_fn, batches, n: int, sched=None) -> None:
    for i in range(n):
        x, y = batches[i % len(batches)]
        opt.step(StepClosure(model, loss_fn, x, y))
        if sched is not None:
            sched.step()


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


# ------------------------------------------------------------------ the database itself


def test_every_registered_optimizer_has_an_info():
    assert {i.name for i in OPTIM_INFOS} == set(OPTIMIZERS.names())
    assert len({i.id for i in OPTIM_INFOS}) == len(OPTIM_INFOS)


def test_every_variant_and_estimator_has_an_info():
    assert {i.hparams["variant"] for i in OPTIM_INFOS if i.name == "kfgn"} == {v.value for v in KFGNVariant}
    assert {i.hparams["estimator"] for i in OPTIM_INFOS if i.name == "diag_gn"} == {e.value for e in Estimator}


@pytest.mark.parametrize("info", infos())
def test_capabilities_match_the_registry(info):
    caps = OPTIMIZERS.get(info.name).capabilities
    assert (caps.uses_curvature, caps.needs_closure, caps.has_lr) == (
        info.uses_curvature, info.needs_closure, info.has_lr)


@pytest.mark.parametrize("info", infos())
def test_schedulable_hyperparameters_live_in_param_groups(info):
    model, loss_fn, _ = problem()
    opt = build(info, model, loss_fn)
    assert isinstance(opt, torch.optim.Optimizer)
    assert set(info.schedulable) <= set(opt.param_groups[0])
    if info.uses_curvature:  # every hyperparameter of the config, as its plain value
        config = OPTIMIZERS.get(info.name).config(info.hparams)
        assert set(info.schedulable) == {f.name for f in dataclasses.fields(config)}
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        assert group == config.to_dict()
        assert json.loads(json.dumps(group)) == group


# ------------------------------------------------------------------ (a) schedulers


@pytest.mark.parametrize("info", infos(supports_scheduler=True))
def test_scheduler_at_lr_zero_freezes_the_parameters(info):
    model, loss_fn, batches = problem()
    opt = build(info, model, loss_fn)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.0)
    before = flat(model)
    steps(opt, model, loss_fn, batches, 3, sched)
    assert opt.param_groups[0]["lr"] == 0.0
    assert torch.equal(flat(model), before)


@pytest.mark.parametrize("info", infos(supports_scheduler=True, lr_linear=True))
def test_scheduler_halving_lr_halves_the_step(info):
    displacement = []
    for factor in (1.0, 0.5):
        model, loss_fn, batches = problem()
        torch.manual_seed(7)  # the same Monte-Carlo draws for both
        opt = build(info, model, loss_fn)
        torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch, f=factor: f)
        before = flat(model)
        steps(opt, model, loss_fn, batches, 1)
        displacement.append(flat(model) - before)
    assert displacement[0].abs().max() > 0
    torch.testing.assert_close(displacement[1], 0.5 * displacement[0], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("info", infos(supports_scheduler=True))
def test_step_lr_schedule_reaches_the_group(info):
    model, loss_fn, batches = problem()
    opt = build(info, model, loss_fn)
    lr0 = opt.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    steps(opt, model, loss_fn, batches, 4, sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr0 / 4)


# ------------------------------------------------------------------ (b) state_dict


@pytest.mark.parametrize("info", infos(state_dict_round_trip=True))
def test_state_dict_round_trips_through_torch_save_with_weights_only(info):
    model, loss_fn, batches = problem()
    opt = build(info, model, loss_fn)
    steps(opt, model, loss_fn, batches, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin = copy.deepcopy(model)
    twin_opt = build(info, twin, loss_fn)
    twin_opt.load_state_dict(saved)
    assert all(isinstance(key, torch.Tensor) for key in opt.state)  # keyed by parameter, as torch does
    steps(opt, model, loss_fn, batches[3:] + batches[:1], 2)
    steps(twin_opt, twin, loss_fn, batches[3:] + batches[:1], 2)
    assert torch.equal(flat(model), flat(twin))


# ------------------------------------------------------------------ (c) unsupported models


class NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(5, 3)

    def forward(self, x):
        return self.layer(x)


UNSUPPORTED = [
    pytest.param(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)), nn.MSELoss,
                 "Conv2d", id="conv2d"),
    pytest.param(NotSequential, nn.MSELoss, "nn.Sequential", id="not-sequential"),
    pytest.param(lambda: nn.Sequential(nn.Linear(5, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 3)),
                 nn.MSELoss, "GELU", id="gelu-tanh"),
    pytest.param(lambda: nn.Sequential(nn.Linear(5, 3)), nn.L1Loss, "L1Loss", id="l1-loss"),
]


@pytest.mark.parametrize(("make_model", "make_loss", "names"), UNSUPPORTED)
@pytest.mark.parametrize("info", infos(uses_curvature=True))
def test_second_order_refuses_unsupported_models_at_construction(info, make_model, make_loss, names):
    with pytest.raises(ConfigError, match=f"{names}.*Supported"):
        build(info, make_model(), make_loss())


# ------------------------------------------------------------------ (d) damping


@pytest.mark.parametrize("info", [i.param() for i in OPTIM_INFOS if i.has_damping])
def test_changing_damping_between_steps_takes_effect(info):
    results = []
    for factor in (1.0, 10.0):
        model, loss_fn, batches = problem()
        torch.manual_seed(7)
        opt = build(info, model, loss_fn)
        steps(opt, model, loss_fn, batches, 1)
        damping = opt.damping
        opt.param_groups[0]["damping"] *= factor
        steps(opt, model, loss_fn, batches[1:], 1)
        results.append((flat(model), damping, opt))
    (p1, _, _), (p10, used, opt) = results
    assert not torch.equal(p1, p10)
    if info.adapts_damping:  # re-based ×10, then one LM update (×3/2, ×1 or ×2/3, floored)
        ratio = opt.damping / (10 * used)
        assert any(ratio == pytest.approx(r) for r in (1.5, 1.0, 2 / 3)) or opt.damping == opt.param_groups[0][
            "min_damping"]
    else:
        assert opt.damping == opt.param_groups[0]["damping"]


def test_changing_damping_before_the_first_step_is_like_building_with_it():
    outcome = []
    for set_later in (False, True):
        model, loss_fn, batches = problem()
        opt = KFGN(model, loss_fn, KFGNConfig(damping=0.1 if set_later else 0.5))
        if set_later:
            opt.param_groups[0]["damping"] = 0.5
        steps(opt, model, loss_fn, batches, 2)
        outcome.append(flat(model))
    assert torch.equal(*outcome)


def test_lm_adapted_damping_is_rebased_by_a_damping_schedule():
    model, loss_fn, batches = problem()
    opt = KFGN(model, loss_fn, KFGNConfig(adapt_damping=True, lm_period=1, damping=0.1))
    steps(opt, model, loss_fn, batches, 1)
    adapted = opt.damping
    assert adapted != 0.1  # LM moved it
    opt.param_groups[0]["damping"] = 0.05  # halve the hyperparameter: the adapted value halves too
    state = opt.group_state()
    opt.param_groups[0]["lm_period"] = 1000  # no LM update on the next step
    steps(opt, model, loss_fn, batches[1:], 1)
    assert state["damping"] == pytest.approx(adapted / 2) and state["damping_base"] == 0.05


# ------------------------------------------------------------------ plain loops and the config edge


def test_readme_loop_with_a_step_lr_scheduler():
    model, loss_fn, batches = problem()
    x_all, y_all = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    before = float(loss_fn(model(x_all), y_all))
    opt = KFGN(model, loss_fn, KFGNConfig(variant="kfra"))
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
    loader = batches * 5
    for x, y in loader:
        opt.step(StepClosure(model, loss_fn, x, y))
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.25  # 20 scheduler steps: halved twice
    assert opt.group_state()["step"] == len(loader)
    assert float(loss_fn(model(x_all), y_all)) < 0.9 * before


def test_variants_are_enums_and_records_keep_the_strings():
    config = KFGNConfig(variant="kflr")
    assert config.variant is KFGNVariant.KFLR
    assert KFGNConfig(variant=KFGNVariant.KFLR) == config
    assert config.to_dict()["variant"] == "kflr" and type(config.to_dict()["variant"]) is str
    assert DiagGNConfig(estimator="mc").estimator is Estimator.MC
    assert type(DiagGNConfig(estimator="mc").to_dict()["estimator"]) is str
    with pytest.raises(ConfigError, match=r"^Invalid estimator \(valid: exact, mc\): hutchinson$"):
        DiagGNConfig(estimator="hutchinson")


def test_keyword_overrides_are_validated_like_the_config():
    model, loss_fn, _ = problem()
    opt = KFGN(model, loss_fn, KFGNConfig(variant="kflr"), lr=0.5)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["variant"] == "kflr"
    with pytest.raises(ConfigError, match=r"^Invalid learning rate: -1\.0$"):
        KFGN(model, loss_fn, lr=-1.0)
    with pytest.raises(ConfigError, match="Unknown hyperparameter"):
        KFGN(model, loss_fn, learning_rate=0.1)


def test_second_order_optimizers_have_one_param_group():
    model, loss_fn, _ = problem()
    opt = KFGN(model, loss_fn)
    with pytest.raises(ValueError, match="one param group"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})
