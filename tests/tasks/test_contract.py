"""The Task contract is checked when a run builds a task's data: broken toy tasks get a clear error.

Each toy task below breaks the contract in one way a plugin author might (targets
shaped or typed wrongly for the loss kind, labels out of range, a target metric the
evaluation never reports). Before these checks, the MSE one "completed" with a
silently broadcast N × N loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.task import (
    TASKS,
    LossKind,
    Split,
    Target,
    Task,
    TaskContractError,
    TaskData,
    check_contract,
    evaluation_columns,
)
from benchsuite.records.record import Status
from benchsuite.run.runner import run

N, D_IN = 40, 3


def _toy(loss_kind: LossKind, targets: Callable[[torch.Generator, int], Tensor], outputs: int,
         metric: str = "valid_loss") -> type[Task]:
    """A task of ``N`` Gaussian inputs, ``targets(gen, n)`` targets and ``outputs`` model outputs."""

    class Toy(Task):
        """Toy task for contract tests."""

        sizes = {"default": {}, "tiny": {}}
        batch_size = 8

        def make_data(self, seed: int) -> TaskData:
            gen = torch.Generator().manual_seed(seed)
            return TaskData(*(Split(torch.randn(N, D_IN, generator=gen), targets(gen, N)) for _ in range(3)))

        def layer_sizes(self) -> tuple[list[int], frozenset[int]]:
            return [D_IN, 5, outputs], frozenset()

        def metrics(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
            return {"error": 0.0} if self.loss_kind is LossKind.SOFTMAX_CROSS_ENTROPY else {}

        @property
        def target(self) -> Target:
            return Target(metric, 0.0)

    Toy.loss_kind = loss_kind
    return Toy


def _normal(*shape: int) -> Callable[[torch.Generator, int], Tensor]:
    return lambda gen, n: torch.randn(n, *shape, generator=gen)


def _labels(high: int, dtype: torch.dtype = torch.int64, low: int = 0) -> Callable[[torch.Generator, int], Tensor]:
    return lambda gen, n: torch.randint(low, high, (n,), generator=gen).to(dtype)


def _probabilities(*shape: int, scale: float = 1.0) -> Callable[[torch.Generator, int], Tensor]:
    return lambda gen, n: scale * torch.rand(n, *shape, generator=gen)


GOOD = [
    pytest.param(LossKind.MSE, _normal(1), 1, id="mse-(N,1)"),
    pytest.param(LossKind.MSE, _normal(4), 4, id="mse-(N,4)"),
    pytest.param(LossKind.SOFTMAX_CROSS_ENTROPY, _labels(3), 3, id="softmax-int64-labels"),
    pytest.param(LossKind.SIGMOID_CROSS_ENTROPY, _probabilities(2), 2, id="sigmoid-probabilities"),
]

BROKEN = [
    pytest.param(LossKind.MSE, _normal(), 1, ["targets of shape (40,)", "outputs (N, 1)", "(N, 1)", "float"],
                 id="mse-(N,)-targets-vs-(N,1)-outputs"),
    pytest.param(LossKind.MSE, _normal(2), 3, ["targets of shape (40, 2)", "outputs (N, 3)"], id="mse-wrong-width"),
    pytest.param(LossKind.MSE, _labels(3), 1, ["dtype int64", "float targets"], id="mse-integer-targets"),
    pytest.param(LossKind.SOFTMAX_CROSS_ENTROPY, _probabilities(3), 3, ["targets of shape (40, 3)", "(N,) int64"],
                 id="softmax-one-hot-float-targets"),
    pytest.param(LossKind.SOFTMAX_CROSS_ENTROPY, _labels(3, torch.int32), 3, ["dtype int32", "int64 class indices"],
                 id="softmax-int32-labels"),
    pytest.param(LossKind.SOFTMAX_CROSS_ENTROPY, _labels(5), 3, ["class indices from 0 to 4", "[0, 3)"],
                 id="softmax-label-out-of-range"),
    pytest.param(LossKind.SOFTMAX_CROSS_ENTROPY, _labels(3, low=-1), 3, ["class indices from -1", "[0, 3)"],
                 id="softmax-negative-label"),
    pytest.param(LossKind.SIGMOID_CROSS_ENTROPY, _probabilities(), 1, ["targets of shape (40,)", "outputs (N, 1)"],
                 id="sigmoid-(N,)-targets-vs-(N,1)-outputs"),
    pytest.param(LossKind.SIGMOID_CROSS_ENTROPY, _probabilities(2, scale=3.0), 2, ["in [0, 1]", "target values from"],
                 id="sigmoid-values-outside-[0,1]"),
    pytest.param(LossKind.SIGMOID_CROSS_ENTROPY, _labels(2), 1, ["dtype int64", "float targets"],
                 id="sigmoid-integer-targets"),
]


@pytest.fixture
def register() -> Iterator[Callable[[type[Task]], str]]:
    """``register(cls)`` adds a toy task as ``toy_contract`` and removes it after the test."""
    name = "toy_contract"

    def add(cls: type[Task]) -> str:
        TASKS.add(name, cls)
        return name

    yield add
    TASKS.unregister(name)


def _spec(task: str) -> RunSpec:
    return RunSpec(task=task, activation="relu", optimizer="sgd", size="tiny", budget=Budget(steps=3), eval_every=3)


@pytest.mark.parametrize("loss_kind, targets, outputs", GOOD)
def test_a_task_keeping_the_contract_runs(register, loss_kind, targets, outputs):
    rec = run(_spec(register(_toy(loss_kind, targets, outputs))))
    assert rec.status is Status.COMPLETED, rec.reason


@pytest.mark.parametrize("loss_kind, targets, outputs, fragments", BROKEN)
def test_broken_targets_are_a_clear_error_when_the_run_builds_the_data(register, loss_kind, targets, outputs,
                                                                       fragments):
    name = register(_toy(loss_kind, targets, outputs))
    with pytest.raises(TaskContractError) as info:
        run(_spec(name))
    message = str(info.value)
    assert f"Task '{name}' ({loss_kind.value} loss), split 'train'" in message
    for fragment in fragments:
        assert fragment in message, message


def test_targets_not_one_per_input_are_an_error():
    task = _toy(LossKind.MSE, _normal(1), 1)("tiny")
    data = task.make_data(0)
    short = TaskData(data.train, Split(data.valid.inputs, data.valid.targets[:-1]), data.test)
    with pytest.raises(TaskContractError, match=r"split 'valid': 40 inputs but 39 targets"):
        check_contract(task, short, task.build_model("relu"), name="toy")


def test_target_naming_a_metric_the_task_never_reports_is_an_error(register):
    name = register(_toy(LossKind.SOFTMAX_CROSS_ENTROPY, _labels(3), 3, metric="valid_accuracy"))
    with pytest.raises(TaskContractError) as info:
        run(_spec(name))
    message = str(info.value)
    assert f"Task '{name}': its target names metric 'valid_accuracy'" in message
    assert "valid_loss" in message and "valid_error" in message and "test_error" in message


def test_evaluation_columns_are_what_an_evaluation_reports():
    from benchsuite.run.runner import _evaluate

    task = TASKS.get("digits_mlp")("tiny")
    data = task.make_data(0)
    model = task.build_model("relu")
    row = _evaluate(model, task.loss_fn(), task, data.splits())
    x, y = data.valid.inputs[:4], data.valid.targets[:4]
    assert sorted(evaluation_columns(task, model(x), y)) == sorted(row)


@pytest.mark.parametrize("name", sorted(TASKS.names()))
def test_every_builtin_task_keeps_the_contract(name):
    task = TASKS.get(name)("tiny")
    check_contract(task, task.make_data(0), task.build_model("relu"), name=name)
