"""The runner: determinism, budgets, timing bookkeeping, divergence/failure as recorded outcomes, targets."""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass

import pytest
import torch
from benchsuite.tasks.digits import DigitsMLP

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.optimizer import OptimizerConfig
from benchsuite.contracts.task import Target
from benchsuite.errors import ConfigError, UnknownNameError
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.run.executor import run_local
from benchsuite.run.runner import run

DETERMINISM_CASES = [
    pytest.param(dict(task="digits_mlp", activation="relu", optimizer="sgd"), id="task=digits_mlp-act=relu-opt=sgd"),
    pytest.param(dict(task="digits_mlp", activation="prelu", optimizer="adam"), id="task=digits_mlp-act=prelu-opt=adam"),
    pytest.param(dict(task="digits_mlp", activation="maxout", optimizer="rmsprop"),
                 id="task=digits_mlp-act=maxout-opt=rmsprop"),
    pytest.param(dict(task="curves_autoencoder", activation="tanh", optimizer="adam"),
                 id="task=curves_autoencoder-act=tanh-opt=adam"),
]


def _series(rec: RunRecord) -> tuple[list, list]:
    """Loss series without wall-clock times (those differ between runs by design)."""
    evals = [{k: v for k, v in e.items() if k != "time"} for e in rec.evals]
    return rec.step_log["loss"], evals


@pytest.mark.parametrize("case", DETERMINISM_CASES)
def test_same_spec_twice_gives_identical_series(make_spec, case):
    spec = make_spec(**case, budget=Budget(steps=8), eval_every=4)
    a, b = run(spec), run(spec)
    assert a.status == b.status == "completed", (a.reason, b.reason)
    assert a.run_id == b.run_id == spec.run_id
    assert a.step_log["step"] == b.step_log["step"] == list(range(1, 9))
    assert _series(a) == _series(b)
    assert [e["step"] for e in a.evals] == [0, 4, 8]


@pytest.mark.parametrize("case", DETERMINISM_CASES[:2])
def test_different_seeds_differ(make_spec, case):
    a = run(make_spec(**case, seed=0, budget=Budget(steps=4)))
    b = run(make_spec(**case, seed=1, budget=Budget(steps=4)))
    assert a.step_log["loss"] != b.step_log["loss"]
    assert a.run_id != b.run_id


def test_data_seed_changes_data_not_initialisation(make_spec):
    """Same training seed, other ``data_seed``: the model starts the same, the split differs."""
    base = run(make_spec(budget=Budget(steps=1)))
    other_data = run(make_spec(data_seed=5, budget=Budget(steps=1)))
    assert base.evals[0]["train_loss"] != other_data.evals[0]["train_loss"]


def test_float64_run(make_spec):
    rec = run(make_spec(dtype="float64", budget=Budget(steps=3)))
    assert rec.status == "completed", rec.reason


# --------------------------------------------------------------------------------------
# Budgets and timing bookkeeping
# --------------------------------------------------------------------------------------


def test_step_budget_respected(make_spec):
    rec = run(make_spec(budget=Budget(steps=7), eval_every=3))
    assert rec.status == "completed" and rec.reason == "budget"
    assert rec.steps == 7 and len(rec.step_log["loss"]) == 7
    assert [e["step"] for e in rec.evals] == [0, 3, 6, 7]  # cadence plus a final eval


@pytest.mark.parametrize(
    "epochs, batch_size, expected_steps",
    [pytest.param(1.5, 256, 6, id="epochs=1.5-bs=256"), pytest.param(0.5, 128, 4, id="epochs=0.5-bs=128")],
)
def test_epoch_budget_respected(make_spec, epochs, batch_size, expected_steps):
    # digits tiny has 1077 training examples: 1077 // 256 = 4 batches per epoch, 1077 // 128 = 8.
    rec = run(make_spec(budget=Budget(epochs=epochs), batch_size=batch_size, eval_every=100))
    assert rec.status == "completed", rec.reason
    assert rec.steps == expected_steps
    assert rec.evals[-1]["epoch"] == pytest.approx(expected_steps / (1077 // batch_size))


def test_seconds_budget_respected(make_spec):
    seconds = 0.05
    rec = run(make_spec(budget=Budget(seconds=seconds), eval_every=10_000))
    assert rec.status == "completed" and rec.reason == "budget"
    times = rec.step_log["time"]
    # The loop stops at the first check where the timed training work reached the budget:
    assert times[-1] >= seconds
    assert len(times) == 1 or times[-2] < seconds


def test_training_time_excludes_evaluation(make_spec):
    rec = run(make_spec(budget=Budget(steps=12), eval_every=2))
    times = rec.step_log["time"]
    assert all(t1 >= t0 for t0, t1 in zip(times, times[1:]))
    assert rec.train_seconds == pytest.approx(times[-1])
    assert 0 < rec.train_seconds <= rec.wall_seconds
    eval_times = [e["time"] for e in rec.evals]
    assert eval_times[0] == 0.0 and eval_times[-1] == pytest.approx(rec.train_seconds)


def test_eval_train_examples_changes_only_the_train_evaluation(make_spec):
    full = run(make_spec(budget=Budget(steps=4), eval_every=2))
    part = run(make_spec(budget=Budget(steps=4), eval_every=2, eval_train_examples=50))
    assert part.status == "completed", part.reason
    assert part.step_log["loss"] == full.step_log["loss"]  # training itself is untouched
    assert [e["valid_loss"] for e in part.evals] == [e["valid_loss"] for e in full.evals]
    assert part.evals[0]["train_loss"] != full.evals[0]["train_loss"]  # 50 examples, not 1077


# --------------------------------------------------------------------------------------
# Divergence, failure, timeout: recorded outcomes, never exceptions
# --------------------------------------------------------------------------------------


def _step_in_reason(reason: str) -> int:
    m = re.search(r"at step (\d+)", reason)
    assert m, f"no step in reason {reason!r}"
    return int(m.group(1))


def test_huge_learning_rate_diverges_with_step_in_reason(make_spec):
    rec = run(make_spec(hparams={"lr": 1e6}, budget=Budget(steps=50)))
    assert rec.status == "diverged"
    step = _step_in_reason(rec.reason)
    assert step == rec.steps < 50
    last = rec.step_log["loss"][-1]
    assert not math.isfinite(last) or last > 1e3 * rec.evals[0]["train_loss"]


def test_nan_parameters_diverge_at_the_step_that_wrote_them(make_spec, bad_optimizers):
    """The poisoning step returns the finite loss of its batch: only the parameter check sees the NaN."""
    rec = run(make_spec(optimizer=bad_optimizers.poison, budget=Budget(steps=20)))
    assert rec.status == "diverged"
    assert rec.reason == "non-finite parameters (0.weight) at step 1"
    assert rec.steps == 1
    assert math.isfinite(rec.step_log["loss"][0])


@dataclass(frozen=True)
class _LrConfig(OptimizerConfig):
    lr: float = 0.1


class _InfInLastBias(torch.optim.SGD):
    """Plain SGD that writes Inf into the last bias at step ``at`` (and keeps the loss finite)."""

    def __init__(self, params, lr: float, at: int):
        super().__init__(params, lr=lr)
        self.at, self.count = at, 0

    def step(self, closure):  # type: ignore[override]
        loss = super().step(closure)
        self.count += 1
        if self.count == self.at:
            with torch.no_grad():
                self.param_groups[0]["params"][-1][0] = math.inf
        return loss


@pytest.fixture
def inf_bias_optimizer():
    from benchsuite.contracts.optimizer import OPTIMIZERS, register_optimizer

    register_optimizer("test_inf_bias", _LrConfig, description="test-only: Inf in the last bias at step 3")(
        lambda model, loss_fn, c: _InfInLastBias(model.parameters(), c.lr, at=3))
    yield "test_inf_bias"
    OPTIMIZERS.unregister("test_inf_bias")


def test_one_inf_parameter_entry_is_named_in_the_reason(make_spec, inf_bias_optimizer):
    rec = run(make_spec(optimizer=inf_bias_optimizer, budget=Budget(steps=10), eval_every=100))
    assert rec.status == "diverged"
    assert rec.reason == "non-finite parameters (4.bias) at step 3"  # Linear, act, Linear, act, Linear
    assert rec.steps == 3 and all(math.isfinite(v) for v in rec.step_log["loss"])


def test_non_finite_final_evaluation_is_never_completed(make_spec, monkeypatch):
    """A final row with NaN on any split (here valid_loss) makes the run diverged, not completed."""
    import benchsuite.run.runner as runner

    real, calls = runner._evaluate, []

    def evaluate(*args, **kwargs):
        row = real(*args, **kwargs)
        calls.append(row)
        if len(calls) > 1:  # the initial evaluation stays finite
            row["valid_loss"] = math.nan
        return row

    monkeypatch.setattr(runner, "_evaluate", evaluate)
    rec = run(make_spec(budget=Budget(steps=4), eval_every=100))
    assert rec.status == "diverged"
    assert rec.reason == "non-finite evaluation valid_loss (nan) at step 4"
    assert rec.steps == 4 and len(rec.evals) == 2


def test_non_finite_metric_at_a_cadence_evaluation_diverges(make_spec, monkeypatch):
    import benchsuite.run.runner as runner

    real = runner._evaluate

    def evaluate(*args, **kwargs):
        row = real(*args, **kwargs)
        if evaluate.n > 0:  # the initial evaluation stays finite
            row["test_error"] = math.inf
        evaluate.n += 1
        return row

    evaluate.n = 0
    monkeypatch.setattr(runner, "_evaluate", evaluate)
    rec = run(make_spec(budget=Budget(steps=10), eval_every=5))
    assert rec.status == "diverged" and rec.reason == "non-finite evaluation test_error (inf) at step 5"


def test_floating_point_error_in_step_is_a_divergence(make_spec, bad_optimizers):
    rec = run(make_spec(optimizer=bad_optimizers.fpe))
    assert rec.status == "diverged", rec.reason
    assert "non-finite curvature factor" in rec.reason
    m = re.search(r"step (\d+)", rec.reason)
    assert m and int(m.group(1)) == 1, rec.reason  # the step that was being taken
    assert rec.finished


def test_exception_in_step_is_recorded_as_failed(make_spec, bad_optimizers):
    rec = run(make_spec(optimizer=bad_optimizers.raising))
    assert rec.status == "failed"
    assert "RuntimeError: optimizer exploded on purpose" in rec.reason
    assert "at step 0" in rec.reason
    assert not rec.finished  # a failed run is retried on resume


def test_failed_run_does_not_stop_a_suite(make_spec, bad_optimizers, tmp_path):
    specs = [make_spec(optimizer=bad_optimizers.raising), make_spec(budget=Budget(steps=3)),
             make_spec(optimizer=bad_optimizers.poison)]
    store = ResultStore(tmp_path)
    summary = run_local(specs, store)
    assert summary.ran == 3 and summary.skipped == 0
    assert dict(summary.statuses) == {"failed": 1, "completed": 1, "diverged": 1}
    assert sorted(s for _, s, _ in summary.problems) == ["diverged", "failed"]
    assert sorted(store.run_ids()) == sorted(s.run_id for s in specs)


def test_timeout_is_recorded(make_spec):
    rec = run(make_spec(timeout_s=1e-9, budget=Budget(steps=1000)))
    assert rec.status == "timeout"
    assert "timeout" in rec.reason and rec.steps < 1000
    assert rec.finished


def test_configuration_errors_raise_before_training(make_spec):
    with pytest.raises(UnknownNameError, match="Valid choices: .*digits_mlp"):
        run(make_spec(task="digits"))
    with pytest.raises(UnknownNameError, match="Valid choices: .*relu"):
        run(make_spec(activation="relu6"))
    with pytest.raises(ConfigError, match="Invalid learning rate"):
        run(make_spec(hparams={"lr": -1.0}))
    with pytest.raises(ConfigError, match="Unknown size"):
        run(make_spec(size="huge"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error message")
def test_cuda_device_without_cuda_is_a_config_error(make_spec):
    with pytest.raises(ConfigError, match=r"Invalid device: cuda \(CUDA is not available here\). Valid choices: cpu"):
        run(make_spec(device="cuda"))


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


@pytest.fixture
def easy_target(monkeypatch):
    monkeypatch.setattr(DigitsMLP, "target", property(lambda self: Target("valid_error", 0.99)))


def test_stop_at_target_stops_early(make_spec, easy_target):
    rec = run(make_spec(stop_at_target=True, budget=Budget(steps=100), eval_every=5))
    assert rec.status == "completed" and rec.reason == "target"
    assert rec.steps == 5
    assert rec.time_to_target is not None and rec.time_to_target["step"] == 5
    assert rec.time_to_target["seconds"] == pytest.approx(rec.train_seconds)
    assert rec.target == {"metric": "valid_error", "value": 0.99, "mode": "min"}


def test_target_reached_without_stopping_runs_the_budget(make_spec, easy_target):
    rec = run(make_spec(stop_at_target=False, budget=Budget(steps=10), eval_every=5))
    assert rec.reason == "budget" and rec.steps == 10
    assert rec.time_to_target["step"] == 5


def test_unreached_target_has_no_time_to_target(make_spec):
    rec = run(make_spec(stop_at_target=True, budget=Budget(steps=3)))
    assert rec.reason == "budget" and rec.time_to_target is None


# --------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------


def test_provenance(make_spec):
    rec = run(make_spec(budget=Budget(steps=1)))
    prov = rec.provenance
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", prov["git_commit"])
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["versions"]["benchsuite"]
    assert prov["device"] == "cpu"
    assert prov["host"] == socket.gethostname()
    assert rec.peak_rss_bytes and rec.peak_rss_bytes > 0
    assert rec.peak_memory_bytes is None  # CPU run


# --------------------------------------------------------------------------------------
# Warm-up (used on CUDA before the first timed step)


@pytest.mark.parametrize("optimizer", ["adam", "kfgn", "hf"])
def test_warm_up_leaves_model_optimizer_inputs_and_rngs_untouched(optimizer):
    import random

    import numpy as np

    from benchsuite.contracts.optimizer import OPTIMIZERS
    from benchsuite.contracts.task import TASKS
    from benchsuite.run.runner import warm_up

    task = TASKS.get("digits_mlp")("tiny")
    data = task.make_data(0)
    torch.manual_seed(0)
    model = task.build_model("relu")
    before = [p.detach().clone() for p in model.parameters()]
    states = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    hparams = {"variant": "kfac"} if optimizer == "kfgn" else {}  # kfac samples: it draws random numbers
    x, y = data.train.inputs[:16], data.train.targets[:16]
    warm_up(OPTIMIZERS.get(optimizer), hparams, model, task.loss_fn(), x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(states[0], torch.random.get_rng_state())
    assert (states[1] == np.random.get_state()[1]).all() and states[2] == random.getstate()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_is_the_same_as_without_warm_up(monkeypatch):
    """On CUDA the runner warms up first; the trained run must not notice (same losses)."""
    import benchsuite.run.runner as runner

    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="kfgn", size="tiny", device="cuda",
                   dtype="float64", budget=Budget(steps=5), eval_every=5)
    warm = runner.run(spec)
    monkeypatch.setattr(runner, "warm_up", lambda *a, **k: None)
    cold = runner.run(spec)
    assert warm.status == cold.status == "completed"
    assert warm.step_log["loss"] == pytest.approx(cold.step_log["loss"], rel=1e-10)
