"""The runner's side of the paper suite's features: the ℓ2 weight cost in the step closure,
full-batch steps (``batch_size = "full"``) and sparse initialisation through a spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from benchsuite.config.spec import Budget
from benchsuite.contracts.optimizer import (
    OPTIMIZERS,
    OptimizerConfig,
    StepClosure,
    register_optimizer,
)
from benchsuite.contracts.task import TASKS
from benchsuite.run.runner import l2_parameters, resolve, run

# --------------------------------------------------------------------------------------
# StepClosure: data loss + (c/2)·Σ‖W‖², against a dense float64 reference
# --------------------------------------------------------------------------------------


def _reference(theta: torch.Tensor, shapes: list[torch.Size], x: torch.Tensor, y: torch.Tensor,
               c: float) -> torch.Tensor:
    """Mean sigmoid cross-entropy of a Linear-ReLU-Linear net from one flat float64 vector, + (c/2)·‖θ_Linear‖²."""
    parts, start = [], 0
    for shape in shapes:
        n = torch.Size(shape).numel()
        parts.append(theta[start : start + n].view(shape))
        start += n
    w1, b1, w2, b2 = parts
    logits = torch.relu(x @ w1.T + b1) @ w2.T + b2  # (N, D)
    p = torch.sigmoid(logits)
    data = -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()  # mean over N·D entries
    return data + 0.5 * c * sum((t**2).sum() for t in (w1, b1, w2, b2))  # biases too, as Martens' maskp


@pytest.mark.parametrize("c", [0.0, 0.3], ids=lambda c: f"c={c}")
def test_closure_objective_and_gradient_match_dense_reference(c):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x, y = torch.randn(11, 5, dtype=torch.float64), torch.rand(11, 3, dtype=torch.float64)
    closure = StepClosure(model, nn.BCEWithLogitsLoss(), x, y, weight_cost=c, l2_params=l2_parameters(model))
    loss = closure()
    params = list(model.parameters())
    theta = torch.cat([p.detach().reshape(-1) for p in params]).requires_grad_(True)  # (P,)
    ref = _reference(theta, [p.shape for p in params], x, y, c)
    (ref_grad,) = torch.autograd.grad(ref, theta)
    assert torch.allclose(loss, ref.detach(), rtol=1e-12, atol=0)
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in params]), ref_grad, rtol=1e-10, atol=1e-14)
    assert closure.weight_cost == c and len(closure.l2_params) == 4


def test_default_closure_is_the_data_loss_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    closure = StepClosure(model, nn.CrossEntropyLoss(), x, y)
    assert closure.weight_cost == 0.0 and closure.l2_params == ()
    loss = closure()
    grads = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    plain = nn.CrossEntropyLoss()(model(x), y)
    plain.backward()
    assert torch.equal(loss, plain.detach())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_l2_parameters_are_linear_weights_and_biases_not_slopes():
    model = TASKS.get("digits_mlp")("tiny").build_model("prelu")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    chosen = l2_parameters(model)
    assert [id(w) for w in chosen] == [id(p) for m in linears for p in (m.weight, m.bias)]
    slopes = {id(m.weight) for m in model.modules() if isinstance(m, nn.PReLU)}
    assert slopes and not ({id(w) for w in chosen} & slopes)


# --------------------------------------------------------------------------------------
# The runner: what the optimizer is given
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SpyConfig(OptimizerConfig):
    lr: float = 0.05


class _Spy(torch.optim.SGD):
    """Plain SGD that keeps what each closure carried."""

    seen: ClassVar[list[dict]] = []

    def step(self, closure):  # type: ignore[override]
        _Spy.seen.append({"weight_cost": closure.weight_cost, "l2_params": closure.l2_params,
                          "n": closure.inputs.shape[0], "data_loss": float(closure.data_loss().detach())})
        return super().step(closure)


@pytest.fixture
def spy():
    _Spy.seen = []
    register_optimizer("test_spy", _SpyConfig, description="test-only: records its closures")(
        lambda model, loss_fn, c: _Spy(model.parameters(), lr=c.lr))
    yield _Spy
    OPTIMIZERS.unregister("test_spy")


@pytest.mark.parametrize(
    "task, scale",
    [
        pytest.param("curves_autoencoder", None, id="task=curves_autoencoder-bce-mean-s=1/D"),
        pytest.param("digits_mlp", 1.0, id="task=digits_mlp-ce-mean-s=1"),
    ],
)
def test_runner_passes_weight_cost_in_loss_module_units(make_spec, spy, task, scale):
    spec = make_spec(task=task, optimizer="test_spy", weight_cost=2e-5, budget=Budget(steps=2))
    rec = run(spec)
    assert rec.status == "completed", rec.reason
    t = TASKS.get(task)("tiny")
    sizes, _ = t.layer_sizes()
    s = 1.0 / sizes[-1] if scale is None else scale
    assert [seen["weight_cost"] for seen in spy.seen] == pytest.approx([s * 2e-5] * 2, rel=1e-12)
    assert all(len(seen["l2_params"]) == 2 * (len(sizes) - 1) for seen in spy.seen)  # weight and bias per layer
    # the step log holds the objective (data + weight cost) the optimizer was handed
    assert rec.step_log["loss"][0] > spy.seen[0]["data_loss"]


def test_weight_cost_changes_training_and_zero_is_the_old_run(make_spec):
    plain = run(make_spec(budget=Budget(steps=5)))
    zero = run(make_spec(budget=Budget(steps=5), weight_cost=0.0))
    assert zero.run_id == plain.run_id and zero.step_log["loss"] == plain.step_log["loss"]
    decayed = run(make_spec(budget=Budget(steps=5), weight_cost=5.0))
    assert decayed.run_id != plain.run_id
    assert decayed.step_log["loss"] != plain.step_log["loss"]
    # evaluations stay the data loss: the initial evaluation does not see the weight cost
    assert decayed.evals[0]["train_loss"] == plain.evals[0]["train_loss"]


def test_full_batch_steps_see_the_whole_training_split(make_spec, spy):
    spec = make_spec(optimizer="test_spy", batch_size="full", budget=Budget(steps=3))
    n_train = len(TASKS.get("digits_mlp")("tiny").make_data(0).train)
    assert resolve(spec).batch_size >= n_train
    rec = run(spec)
    assert rec.status == "completed", rec.reason
    assert [seen["n"] for seen in spy.seen] == [n_train] * 3
    assert [e["epoch"] for e in rec.evals][-1] == 3  # one step per epoch


def test_sparse_init_through_the_spec_is_reproducible(make_spec):
    spec = make_spec(task="curves_autoencoder", task_options={"init": "sparse"}, budget=Budget(steps=3))
    a, b = run(spec), run(spec)
    assert a.status == b.status == "completed", (a.reason, b.reason)
    assert a.step_log["loss"] == b.step_log["loss"]
    default = run(make_spec(task="curves_autoencoder", budget=Budget(steps=3)))
    assert default.evals[0]["train_loss"] != a.evals[0]["train_loss"]
