"""RunSpec and Budget: validation, a run id that is stable and sensitive to every field, round trips."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.errors import ConfigError

BASE = dict(task="digits_mlp", activation="relu", optimizer="sgd")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({}, "give at least one of steps, epochs, seconds", id="empty"),
        pytest.param({"steps": 0}, r"Invalid budget steps: 0", id="steps=0"),
        pytest.param({"steps": -5}, r"Invalid budget steps: -5", id="steps=-5"),
        pytest.param({"steps": 2.5}, r"Invalid budget steps: 2.5", id="steps=2.5"),
        pytest.param({"epochs": 0}, r"Invalid budget epochs: 0", id="epochs=0"),
        pytest.param({"epochs": math.nan}, r"Invalid budget epochs: nan", id="epochs=nan"),
        pytest.param({"seconds": -1.0}, r"Invalid budget seconds: -1.0", id="seconds=-1"),
        pytest.param({"seconds": math.inf}, r"Invalid budget seconds: inf", id="seconds=inf"),
        pytest.param({"seconds": "10"}, r"Invalid budget seconds: 10", id="seconds=str"),
    ],
)
def test_budget_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Budget(**kwargs)


def test_budget_from_dict_rejects_unknown_fields_listing_valid():
    with pytest.raises(ConfigError, match=r"Unknown budget field\(s\) \['step'\]. Valid: epochs, seconds, steps"):
        Budget.from_dict({"step": 10})


@pytest.mark.parametrize(
    "budget, per_epoch, expected",
    [
        pytest.param(Budget(steps=10), 4, 10, id="steps"),
        pytest.param(Budget(epochs=2), 4, 8, id="epochs"),
        pytest.param(Budget(epochs=0.3), 4, 2, id="epochs-fractional-rounds-up"),
        pytest.param(Budget(epochs=0.01), 4, 1, id="epochs-at-least-one-step"),
        pytest.param(Budget(steps=5, epochs=2), 4, 5, id="steps-first"),
        pytest.param(Budget(steps=50, epochs=2), 4, 8, id="epochs-first"),
        pytest.param(Budget(seconds=1.0), 4, None, id="seconds-only"),
    ],
)
def test_budget_max_steps(budget, per_epoch, expected):
    assert budget.max_steps(per_epoch) == expected


@pytest.mark.parametrize(
    "overrides, match",
    [
        pytest.param({"task": ""}, "Invalid task", id="task=empty"),
        pytest.param({"optimizer": None}, "Invalid optimizer", id="optimizer=None"),
        pytest.param({"seed": -1}, r"Invalid seed: -1", id="seed=-1"),
        pytest.param({"seed": 1.5}, r"Invalid seed: 1.5", id="seed=1.5"),
        pytest.param({"batch_size": 0}, r"Invalid batch_size: 0", id="batch_size=0"),
        pytest.param({"batch_size": "all"}, r"^Invalid batch_size: 'all' \(need a positive integer or \"full\"\)$",
                     id="batch_size=all"),
        pytest.param({"batch_size": True}, r"Invalid batch_size: True", id="batch_size=True"),
        pytest.param({"weight_cost": -1.0}, r"^Invalid weight_cost: -1.0 \(need a finite number >= 0\)$",
                     id="weight_cost=-1"),
        pytest.param({"weight_cost": math.inf}, r"^Invalid weight_cost: inf", id="weight_cost=inf"),
        pytest.param({"weight_cost": math.nan}, r"^Invalid weight_cost: nan", id="weight_cost=nan"),
        pytest.param({"weight_cost": "2e-5"}, r"^Invalid weight_cost: '2e-5'", id="weight_cost=str"),
        pytest.param({"eval_every": 0}, r"Invalid eval_every: 0", id="eval_every=0"),
        pytest.param({"stats_every": -1}, r"Invalid stats_every: -1", id="stats_every=-1"),
        pytest.param({"divergence_factor": 1.0}, r"Invalid divergence_factor: 1.0", id="divergence_factor=1"),
        pytest.param({"dtype": "float16"}, r"Invalid dtype: float16. Valid choices: float32, float64",
                     id="dtype=float16"),
        pytest.param({"device": "tpu"}, r"Invalid device: tpu. Valid choices: cpu, cuda, cuda:N", id="device=tpu"),
    ],
)
def test_runspec_validation(overrides, match):
    with pytest.raises(ConfigError, match=match):
        RunSpec(**{**BASE, **overrides})


def test_runspec_is_frozen():
    spec = RunSpec(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]


# A changed value for every field: adding a RunSpec field without a case here fails the coverage test.
CHANGED = {
    "task": "curves_autoencoder",
    "activation": "tanh",
    "optimizer": "adam",
    "seed": 1,
    "size": "tiny",
    "task_options": {"width": 8},
    "activation_options": {"slope": 0.2},
    "hparams": {"lr": 0.1},
    "batch_size": 32,
    "weight_cost": 2e-5,
    "budget": Budget(steps=101),
    "eval_every": 7,
    "eval_train_examples": 100,
    "stop_at_target": True,
    "divergence_factor": 10.0,
    "statistics": "cheap",
    "stats_every": 5,
    "device": "cuda",
    "dtype": "float64",
    "data_seed": 3,
    "timeout_s": 60.0,
    "optimizer_label": "sgd-fast",
    "trial": 3,
    "deterministic": True,
}


OUTSIDE_THE_ID = {"checkpoint_every"}  # fields that do not change what a run computes


def test_changed_values_cover_every_field():
    assert set(CHANGED) | OUTSIDE_THE_ID == {f.name for f in dataclasses.fields(RunSpec)}


def test_checkpointing_does_not_change_the_run_id_but_is_recorded():
    base = RunSpec(**BASE)
    saving = dataclasses.replace(base, checkpoint_every=5)
    assert saving.run_id == base.run_id and saving.to_dict()["checkpoint_every"] == 5
    assert "checkpoint_every" not in base.to_dict()
    with pytest.raises(ConfigError, match="Invalid checkpoint_every: -1"):
        dataclasses.replace(base, checkpoint_every=-1)


def test_deterministic_mode_keeps_old_ids_when_off():
    base = RunSpec(**BASE)
    assert "deterministic" not in base.to_dict()
    assert RunSpec.from_dict(dataclasses.replace(base, deterministic=True).to_dict()).deterministic is True
    with pytest.raises(ConfigError, match="Invalid deterministic: 'yes'"):
        dataclasses.replace(base, deterministic="yes")


def test_run_id_stable_for_equal_specs():
    a = RunSpec(**BASE, hparams={"lr": 0.1, "momentum": 0.5}, task_options={"width": 8, "depth": 1})
    b = RunSpec(**BASE, hparams={"momentum": 0.5, "lr": 0.1}, task_options={"depth": 1, "width": 8})
    assert a == b and a.run_id == b.run_id
    assert len(a.run_id) == 16 and int(a.run_id, 16) >= 0


def test_run_id_same_in_another_process():
    spec = RunSpec(**BASE, hparams={"lr": 0.1}, budget=Budget(steps=3, seconds=2.0))
    code = ("from benchsuite.config.spec import RunSpec, Budget; "
            "print(RunSpec(task='digits_mlp', activation='relu', optimizer='sgd', hparams={'lr': 0.1}, "
            "budget=Budget(steps=3, seconds=2.0)).run_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == spec.run_id  # no hash randomisation or object ids in the id


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_run_id_sensitive_to_every_field(field):
    base = RunSpec(**BASE)
    changed = dataclasses.replace(base, **{field: CHANGED[field]})
    assert changed.run_id != base.run_id


def test_run_id_differs_between_budget_kinds():
    ids = {RunSpec(**BASE, budget=b).run_id for b in (Budget(steps=10), Budget(epochs=10), Budget(seconds=10))}
    assert len(ids) == 3


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(RunSpec(**BASE), id="defaults"),
        pytest.param(RunSpec(**{**BASE, **{k: v for k, v in CHANGED.items() if k not in ("device",)}}), id="all-set"),
        pytest.param(RunSpec(**BASE, budget=Budget(steps=5, epochs=1.5, seconds=2.0)), id="full-budget"),
    ],
)
def test_to_dict_from_dict_round_trip(spec):
    d = spec.to_dict()
    assert RunSpec.from_dict(d) == spec
    via_json = RunSpec.from_dict(json.loads(json.dumps(d)))
    assert via_json == spec and via_json.run_id == spec.run_id


def test_to_dict_is_plain_json():
    d = RunSpec(**BASE, budget=Budget(epochs=2)).to_dict()
    assert d["budget"] == {"epochs": 2}
    json.dumps(d)  # raises if anything is not JSON


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match=r"Unknown RunSpec field\(s\) \['sead'\]. Valid: .*seed"):
        RunSpec.from_dict({**BASE, "sead": 1})


def test_label_and_display_optimizer():
    spec = RunSpec(**BASE, seed=2, optimizer_label="sgd-nesterov")
    assert spec.display_optimizer == "sgd-nesterov"
    assert spec.label == "digits_mlp-relu-sgd-nesterov-seed2"
    assert RunSpec(**BASE).display_optimizer == "sgd"


def test_default_weight_cost_is_left_out_of_the_run_id():
    """Specs written before ``weight_cost`` existed keep their ids: the default is not hashed."""
    spec = RunSpec(**BASE)
    assert "weight_cost" not in spec.to_dict()
    assert spec.run_id == RunSpec(**BASE, weight_cost=0).run_id == RunSpec(**BASE, weight_cost=0.0).run_id
    assert spec.run_id == "319167c238c5efef"  # the id this spec had before the field was added


def test_weight_cost_is_hashed_and_round_trips():
    spec = RunSpec(**BASE, weight_cost=2e-5)
    assert spec.to_dict()["weight_cost"] == 2e-5 and spec.run_id != RunSpec(**BASE).run_id
    assert RunSpec(**BASE, weight_cost=1).run_id == RunSpec(**BASE, weight_cost=1.0).run_id
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_full_batch_sentinel():
    spec = RunSpec(**BASE, batch_size="full")
    assert spec.batch_size == "full" and spec.run_id != RunSpec(**BASE).run_id
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).run_id == spec.run_id
