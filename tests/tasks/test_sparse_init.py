"""The generic ``init = "sparse"`` task option (Martens 2010, §5): any task, reproducible, validated."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.contracts.task import GENERIC_OPTIONS, TASKS, sparse_init_
from benchsuite.errors import ConfigError

TASK_NAMES = ["digits_mlp", "curves_autoencoder", "mnist_autoencoder"]


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("name", TASK_NAMES, ids=lambda n: f"task={n}")
def test_every_unit_has_fifteen_gaussian_inputs_and_zero_bias(name):
    torch.manual_seed(0)
    model = TASKS.get(name)("tiny", init="sparse").build_model("relu")
    layers = _linears(model)
    assert layers, "the task has Linear layers"
    for layer in layers:  # the output layer too, as in Martens' code
        nonzero = (layer.weight != 0).sum(dim=1)  # (out,)
        assert torch.equal(nonzero, torch.full_like(nonzero, min(15, layer.in_features)))
        assert torch.count_nonzero(layer.bias) == 0


def test_units_with_few_inputs_get_all_of_them():
    torch.manual_seed(0)
    model = sparse_init_(nn.Sequential(nn.Linear(4, 30), nn.ReLU(), nn.Linear(30, 2)), connections=15)
    assert torch.count_nonzero(model[0].weight) == 4 * 30  # fan-in 4 < 15: dense
    assert torch.equal((model[2].weight != 0).sum(1), torch.tensor([15, 15]))


def test_non_zero_weights_are_unit_gaussian():
    gen = torch.Generator().manual_seed(0)
    layer = sparse_init_(nn.Linear(200, 2000), connections=15, generator=gen)
    values = layer.weight[layer.weight != 0]  # (30000,)
    assert values.numel() == 2000 * 15
    assert abs(values.mean().item()) < 0.03 and abs(values.std().item() - 1.0) < 0.03


def test_same_seed_same_weights_other_seed_other_weights():
    task = TASKS.get("curves_autoencoder")("tiny", init="sparse", sparse_connections=5)

    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in task.build_model("relu").parameters()]

    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    first = _linears(task.build_model("relu"))[0]
    assert torch.equal((first.weight != 0).sum(1), torch.full((first.out_features,), 5))


@pytest.mark.parametrize("name", TASK_NAMES, ids=lambda n: f"task={n}")
def test_default_init_unchanged(name):
    cls = TASKS.get(name)
    torch.manual_seed(0)
    plain = [p.detach().clone() for p in cls("tiny").build_model("relu").parameters()]
    torch.manual_seed(0)
    explicit = [p.detach().clone() for p in cls("tiny", init="default").build_model("relu").parameters()]
    assert all(torch.equal(x, y) for x, y in zip(plain, explicit))
    assert cls("tiny").options["init"] == GENERIC_OPTIONS["init"] == "default"
    assert all(torch.count_nonzero(m.bias) > 0 for m in _linears(cls("tiny").build_model("relu")))


def test_prelu_slopes_untouched_and_maxout_widened_layers_sparse():
    torch.manual_seed(0)
    model = TASKS.get("digits_mlp")("tiny", init="sparse").build_model("prelu")
    slopes = [m.weight for m in model.modules() if isinstance(m, nn.PReLU)]
    assert slopes and all(torch.all(s == 0.25) for s in slopes)
    torch.manual_seed(0)
    model = TASKS.get("digits_mlp")("tiny", init="sparse").build_model("maxout", pieces=3)
    for layer in _linears(model):
        assert torch.equal((layer.weight != 0).sum(1), torch.full((layer.out_features,), min(15, layer.in_features)))


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param({"init": "xavier"}, r"^Invalid init: 'xavier'\. Valid choices: default, sparse$", id="bad-init"),
        pytest.param({"init": 1}, r"^Invalid init: 1\. Valid choices: default, sparse$", id="init-not-a-string"),
        pytest.param({"sparse_connections": 0}, r"^Invalid sparse_connections: 0 \(need a positive integer\)$",
                     id="zero-connections"),
        pytest.param({"sparse_connections": 2.5}, r"^Invalid sparse_connections: 2.5", id="float-connections"),
        pytest.param({"initialisation": "sparse"}, r"Unknown option\(s\) \['initialisation'\].*init.*sparse_connections",
                     id="unknown-lists-generic"),
    ],
)
def test_bad_generic_options_raise_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        TASKS.get("digits_mlp")("tiny", **options)


@pytest.mark.parametrize("name", TASKS.names(), ids=lambda n: f"task={n}")
def test_every_registered_task_accepts_the_generic_options(name):
    task = TASKS.get(name)("tiny", init="sparse", sparse_connections=3)
    torch.manual_seed(0)
    for layer in _linears(task.build_model("relu")):
        assert torch.equal((layer.weight != 0).sum(1), torch.full((layer.out_features,), min(3, layer.in_features)))
