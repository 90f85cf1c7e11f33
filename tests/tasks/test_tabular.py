"""The robustness suite's tabular tasks: generated from the data seed alone, imbalanced, mis-scaled, MSE-shaped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchsuite.contracts.task import TASKS, check_contract
from benchsuite.errors import ConfigError


@pytest.fixture
def restore_rngs():
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    yield torch_state, np_state
    torch.random.set_rng_state(torch_state)
    np.random.set_state(np_state)


@pytest.mark.parametrize("name", ["tabular_classification", "tabular_regression"])
def test_tabular_tasks_draw_nothing_from_the_global_rngs(name, restore_rngs):
    torch_state, np_state = restore_rngs
    TASKS.get(name)("tiny").make_data(5)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()


@pytest.mark.parametrize("name", ["tabular_classification", "tabular_regression"])
@pytest.mark.parametrize("size", ["tiny", "default"])
def test_tabular_tasks_keep_the_contract_at_both_sizes(name, size):
    task = TASKS.get(name)(size)
    torch.manual_seed(0)
    data = task.make_data(0)
    check_contract(task, data, task.build_model("relu"), name=name)
    assert task.batch_size == 64
    if size == "default":
        assert task.layer_sizes()[0][1:-1] == [64, 64]  # a 2 x 64 MLP


def test_classification_is_imbalanced_and_standardised_on_train():
    data = TASKS.get("tabular_classification")("default").make_data(0)
    counts = torch.bincount(data.train.targets, minlength=4).float()
    shares = counts / counts.sum()
    assert shares.argmax() == 0 and shares[0] > 0.4 and shares.min() < 0.15  # 50/25/15/10 before label noise
    assert torch.allclose(data.train.inputs.mean(0), torch.zeros(20), atol=1e-5)
    assert torch.allclose(data.train.inputs.std(0), torch.ones(20), atol=1e-4)
    assert data.valid.inputs.mean(0).abs().max() > 1e-3  # validation is standardised with train's statistics


def test_regression_inputs_are_mis_scaled_and_heavy_tailed():
    task = TASKS.get("tabular_regression")("default")
    data = task.make_data(0)
    std = data.train.inputs.std(0)  # (15,)
    assert float(std.max() / std.min()) > 30  # not standardised: the scales span 0.1 .. 10
    heavy = data.train.inputs[:, 10:] / torch.as_tensor(task.scales(0)[10:], dtype=torch.float32)  # t(3) draws
    kurtosis = ((heavy - heavy.mean(0)) ** 4).mean(0) / heavy.var(0) ** 2
    assert float(kurtosis.min()) > 4.0  # a Gaussian has 3
    assert np.allclose(sorted(task.scales(0)), sorted(task.scales(1)))
    assert not np.allclose(task.scales(0), task.scales(1))  # which input gets which scale depends on the seed


def test_regression_targets_standardised_and_r2_metric():
    task = TASKS.get("tabular_regression")("tiny")
    data = task.make_data(0)
    y = data.train.targets
    assert y.shape == (768, 1)
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1.0) < 1e-4
    assert task.metrics(y.clone(), y)["r2"] == pytest.approx(1.0)
    assert task.metrics(torch.zeros_like(y), y)["r2"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("option, value", [("n_heavy", -1), ("noise", float("nan")), ("n_train", 0)])
def test_regression_bad_options_raise(option, value):
    with pytest.raises(ConfigError, match=f"Invalid {option}"):
        TASKS.get("tabular_regression")("tiny", **{option: value})
