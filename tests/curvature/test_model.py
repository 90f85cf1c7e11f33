"""Parsing a Sequential and validating loss modules: clear errors for unsupported input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.curvature import (
    CurvatureError,
    Maxout,
    SequentialModel,
    UnsupportedLossError,
    UnsupportedModelError,
    layer_ggn_block,
    loss_curvature,
    supported_modules,
)


def test_supported_modules_listed_in_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedModelError, match="Unsupported module Dropout.*Supported: .*Linear.*Maxout.*PReLU.*ReLU"):
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
    with pytest.raises(UnsupportedLossError, match=match):
        loss_curvature(loss_fn, torch.zeros(2, 3), torch.zeros(2, 3))


def test_ignore_index_refused():
    with pytest.raises(UnsupportedLossError, match="ignore_index"):
        loss_curvature(nn.CrossEntropyLoss(), torch.zeros(2, 3), torch.tensor([0, -100]))


def test_approximate_gelu_refused_when_the_model_is_parsed():
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 3))
    with pytest.raises(UnsupportedModelError, match=r"GELU\(approximate='tanh'\).*Supported: exact GELU"):
        SequentialModel(model)


@pytest.mark.parametrize("model, match", [
    (nn.Linear(3, 2), "needs an nn.Sequential, got Linear"),
    (nn.Sequential(nn.ReLU(), nn.Tanh()), "no nn.Linear layer"),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)), "Unsupported module BatchNorm1d"),
], ids=["not-sequential", "no-linear", "batchnorm"])
def test_unsupported_models(model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        SequentialModel(model)


def test_errors_are_value_errors_and_unknown_block_lists_blocks():
    assert issubclass(UnsupportedModelError, CurvatureError) and issubclass(UnsupportedLossError, CurvatureError)
    assert issubclass(CurvatureError, ValueError)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(2, 3), torch.randn(2, 2)
    with pytest.raises(CurvatureError, match="Unknown parameter block 'layer9'. Valid choices: layer0, layer1"):
        layer_ggn_block(model, nn.MSELoss(), x, y, "layer9")
