"""Parsing a Sequential and validating loss modules: clear errors for unsupported input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.contracts.activation import Maxout
from benchsuite.curvature import SequentialModel, ggn_vector_product, loss_curvature, supported_modules
from benchsuite.errors import ConfigError


def test_supported_modules_listed_in_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="Unsupported module Dropout.*Supported: .*Linear.*Maxout.*PReLU.*ReLU"):
        SequentialModel(model)
    assert {"Linear", "ReLU", "LeakyReLU", "PReLU", "Maxout", "Tanh", "Sigmoid", "Softplus", "GELU",
            "Identity", "Abs"} <= set(supported_modules())


def test_blocks_and_param_order():
    model = nn.Sequential(nn.Linear(3, 8), Maxout(2), nn.Linear(4, 5), nn.PReLU(5), nn.Sequential(nn.Linear(5, 2)))
    net = SequentialModel(model)
    assert [b.name for b in net.blocks] == ["layer0", "layer1", "prelu1", "layer2"]
    assert net.params == list(model.parameters())
    assert [b.param_indices for b in net.blocks] == [(0, 1), (2, 3), (4,), (5, 6)]


@pytest.mark.parametrize("loss_fn,match", [
    (nn.L1Loss(), "Unsupported loss module L1Loss"),
    (nn.MSELoss(reduction="none"), "reduction 'none'"),
    (nn.CrossEntropyLoss(weight=torch.ones(3)), "class weights"),
    (nn.BCEWithLogitsLoss(pos_weight=torch.ones(3)), "pos_weight"),
], ids=["l1", "no-reduction", "ce-weights", "bce-pos-weight"])
def test_unsupported_losses(loss_fn, match):
    with pytest.raises(ConfigError, match=match):
        loss_curvature(loss_fn, torch.zeros(2, 3), torch.zeros(2, 3))


def test_ignore_index_refused():
    with pytest.raises(ConfigError, match="ignore_index"):
        loss_curvature(nn.CrossEntropyLoss(), torch.zeros(2, 3), torch.tensor([0, -100]))


def test_soft_targets_and_gelu_tanh_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 3))
    x = torch.randn(2, 3)
    v = [torch.zeros_like(p) for p in model.parameters()]
    with pytest.raises(ConfigError, match="exact GELU"):
        ggn_vector_product(model, nn.CrossEntropyLoss(), x, torch.softmax(torch.randn(2, 3), 1), v)
