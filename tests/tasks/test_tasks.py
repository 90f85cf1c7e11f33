"""Tasks at size tiny: splits, determinism per seed, models for every activation, loss kind, metrics, target."""

from __future__ import annotations

import socket
import sys

import pytest
import torch
from torch import nn

from benchsuite.contracts.activation import ACTIVATIONS
from benchsuite.contracts.task import TASKS, LossKind, Task, TaskData
from benchsuite.errors import ConfigError
from benchsuite.run.runner import _evaluate

TASK_NAMES = TASKS.names()
LOSS_MODULES = {
    LossKind.MSE: nn.MSELoss,
    LossKind.SOFTMAX_CROSS_ENTROPY: nn.CrossEntropyLoss,
    LossKind.SIGMOID_CROSS_ENTROPY: nn.BCEWithLogitsLoss,
}
# Expected facts of the built-in tasks (plugins may add more tasks; they get the generic checks).
KNOWN = {
    "digits_mlp": dict(in_dim=64, out_dim=10, loss=LossKind.SOFTMAX_CROSS_ENTROPY, metrics={"error"},
                       counts=(1077, 360, 360)),
    "curves_autoencoder": dict(in_dim=196, out_dim=196, loss=LossKind.SIGMOID_CROSS_ENTROPY,
                               metrics={"sq_error"}, counts=(512, 128, 128)),
    "mnist_autoencoder": dict(in_dim=196, out_dim=196, loss=LossKind.SIGMOID_CROSS_ENTROPY,
                              metrics={"sq_error"}, counts=(512, 128, 128)),
    "mnist_mlp": dict(in_dim=196, out_dim=10, loss=LossKind.SOFTMAX_CROSS_ENTROPY, metrics={"error"},
                      counts=(512, 128, 128)),
    "mnist1d_mlp": dict(in_dim=40, out_dim=10, loss=LossKind.SOFTMAX_CROSS_ENTROPY, metrics={"error"},
                        counts=(600, 200, 200)),
    "teacher_student": dict(in_dim=8, out_dim=1, loss=LossKind.MSE, metrics=set(), counts=(512, 128, 128)),
    "linear_regression": dict(in_dim=16, out_dim=4, loss=LossKind.MSE, metrics=set(), counts=(512, 128, 128)),
    "tabular_classification": dict(in_dim=20, out_dim=4, loss=LossKind.SOFTMAX_CROSS_ENTROPY, metrics={"error"},
                                   counts=(768, 256, 256)),
    "tabular_regression": dict(in_dim=15, out_dim=1, loss=LossKind.MSE, metrics={"r2"}, counts=(768, 256, 256)),
}


def _tiny(name: str, **options) -> Task:
    return TASKS.get(name)("tiny", **options)


def _splits(data: TaskData):
    return {"train": data.train, "valid": data.valid, "test": data.test}


def _clear_data_caches(name: str) -> None:
    """Empty every cache (anything with ``cache_clear``, e.g. an lru_cache) in the task's module."""
    module = sys.modules[TASKS.get(name).__module__]
    for obj in list(vars(module).values()):
        clear = getattr(obj, "cache_clear", None)
        if callable(clear):
            clear()


@pytest.fixture(scope="module")
def tiny_data() -> dict[str, TaskData]:
    return {name: _tiny(name).make_data(0) for name in TASK_NAMES}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_shapes_and_dtypes(name, tiny_data):
    task, data = _tiny(name), tiny_data[name]
    in_dim = task.layer_sizes()[0][0]
    out_dim = task.layer_sizes()[0][-1]
    for split_name, split in _splits(data).items():
        assert len(split) > 0, split_name
        assert split.inputs.shape == (len(split), in_dim), split_name
        assert split.inputs.dtype == torch.float32
        assert torch.isfinite(split.inputs).all()
        if task.loss_kind is LossKind.SOFTMAX_CROSS_ENTROPY:
            assert split.targets.shape == (len(split),) and split.targets.dtype == torch.int64
            assert 0 <= int(split.targets.min()) and int(split.targets.max()) < out_dim
        else:
            assert split.targets.shape == (len(split), out_dim) and split.targets.dtype == torch.float32
    if name in KNOWN:
        assert (in_dim, out_dim) == (KNOWN[name]["in_dim"], KNOWN[name]["out_dim"])
        assert tuple(len(s) for s in _splits(data).values()) == KNOWN[name]["counts"]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_data_deterministic_per_seed_and_different_across_seeds(name):
    a, b, c = (_tiny(name).make_data(seed) for seed in (0, 0, 1))
    for split in ("train", "valid", "test"):
        sa, sb, sc = getattr(a, split), getattr(b, split), getattr(c, split)
        assert torch.equal(sa.inputs, sb.inputs) and torch.equal(sa.targets, sb.targets)
        assert not torch.equal(sa.inputs, sc.inputs), f"{split} is the same for seeds 0 and 1"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_data_not_aliased_across_calls(name):
    """Editing one call's tensors in place (e.g. normalising) must not change the next call's data."""
    same = False
    try:
        first = _tiny(name).make_data(3)
        reference = first.train.inputs.clone()
        first.train.inputs.mul_(0.0).add_(7.0)
        again = _tiny(name).make_data(3)
        same = torch.equal(again.train.inputs, reference)
        assert same, "make_data(3) returned the tensors edited by the previous caller (shared cache)"
    finally:
        if not same:
            _clear_data_caches(name)  # do not leave a corrupted cache behind for other tests


def test_network_block_is_effective(no_network):
    """Control for the test below: the fixture really refuses connections."""
    with pytest.raises(RuntimeError, match="network access attempted"):
        socket.create_connection(("example.org", 80), timeout=1)
    with socket.socket() as sock, pytest.raises(RuntimeError, match="network access attempted"):
        sock.connect(("127.0.0.1", 9))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_data_generation_needs_no_network(name, no_network):
    _clear_data_caches(name)  # force real generation (or loading), not a cached copy
    data = _tiny(name).make_data(11)
    assert len(data.train) > 0


@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("act", ACTIVATIONS.names())
def test_model_builds_for_every_activation_with_logits_shape(name, act, tiny_data):
    task = _tiny(name)
    torch.manual_seed(0)
    model = task.build_model(act)
    assert isinstance(model, nn.Sequential)
    assert isinstance(model[-1], nn.Linear)  # logits out: the sigmoid/softmax belongs to the loss
    x = tiny_data[name].train.inputs[:9]
    logits = model(x)
    out_dim = task.layer_sizes()[0][-1]
    assert logits.shape == (9, out_dim)
    assert torch.isfinite(logits).all()
    loss = task.loss_fn()(logits, tiny_data[name].train.targets[:9])
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_maxout_model_widens_linear_layers(name):
    task = _tiny(name)
    sizes, linear = task.layer_sizes()
    model = task.build_model("maxout", pieces=3)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(linears) == len(sizes) - 1
    for i, layer in enumerate(linears, start=1):
        hidden = i < len(sizes) - 1 and i not in linear
        assert layer.out_features == (3 * sizes[i] if hidden else sizes[i])
        assert layer.in_features == sizes[i - 1]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_loss_module_matches_loss_kind(name):
    task = _tiny(name)
    assert isinstance(task.loss_fn(), LOSS_MODULES[task.loss_kind])
    assert task.loss_fn(reduction="sum").reduction == "sum"
    if name in KNOWN:
        assert task.loss_kind is KNOWN[name]["loss"]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_metrics_and_target_come_out_of_an_evaluation(name, tiny_data):
    task = _tiny(name)
    torch.manual_seed(0)
    model = task.build_model("relu")
    data = tiny_data[name]
    metrics = task.metrics(model(data.valid.inputs), data.valid.targets)
    if name in KNOWN:
        assert set(metrics) == KNOWN[name]["metrics"]
    row = _evaluate(model, task.loss_fn(), task, _splits(data))
    for split in ("train", "valid", "test"):
        assert f"{split}_loss" in row
        for metric in metrics:
            assert f"{split}_{metric}" in row
    target = task.target
    assert target.metric in row, f"target metric {target.metric} is never produced; have {sorted(row)}"
    assert target.mode in ("min", "max")


def test_digits_error_metric_counts_misclassified():
    task = _tiny("digits_mlp")
    logits = torch.tensor([[0.0, 5.0], [5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    targets = torch.tensor([1, 1, 1, 0])
    assert task.metrics(logits, targets)["error"] == pytest.approx(0.25)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_unknown_size_lists_valid_sizes(name):
    cls = TASKS.get(name)
    with pytest.raises(ConfigError) as info:
        cls("enormous")
    assert "Unknown size 'enormous'" in str(info.value)
    for size in cls.sizes:
        assert size in str(info.value)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_unknown_option_lists_valid_options(name):
    cls = TASKS.get(name)
    with pytest.raises(ConfigError) as info:
        cls("tiny", widht=3)
    assert "['widht']" in str(info.value)
    for option in cls.sizes["default"]:
        assert option in str(info.value)


# Tasks without a width or depth option (e.g. linear_regression, mnist_mlp's ``widths``)
# reject those names as unknown options; their own options are checked in test_task_zoo.py.
BAD_OPTION_CASES = [
    pytest.param(name, option, value, id=f"{name}-{option}={value}")
    for name in TASK_NAMES
    for option, value in [("width", 0), ("depth", -1), ("width", 2.5)]
    if option in TASKS.get(name).sizes["default"]
]


@pytest.mark.parametrize("name, option, value", BAD_OPTION_CASES)
def test_bad_option_values_raise(name, option, value):
    with pytest.raises(ConfigError, match=f"Invalid {option}"):
        TASKS.get(name)("tiny", **{option: value})


def test_task_options_override_size_preset():
    task = _tiny("digits_mlp", width=8, depth=3)
    assert task.layer_sizes()[0] == [64, 8, 8, 8, 10]
