"""Stop reasons: each exception knows the status it records, and any exception maps to one."""

from __future__ import annotations

import pytest

from benchsuite.records.record import Status
from benchsuite.run.stops import (
    BudgetSpent,
    Diverged,
    Failed,
    StopRun,
    TargetReached,
    TimedOut,
    stop_for,
)

CASES = [
    pytest.param(BudgetSpent(), Status.COMPLETED, "budget", id="budget"),
    pytest.param(TargetReached(), Status.COMPLETED, "target", id="target"),
    pytest.param(Diverged("non-finite loss (nan)", 3), Status.DIVERGED, "non-finite loss (nan) at step 3", id="diverged"),
    pytest.param(TimedOut(2.5, 7), Status.TIMEOUT, "wall-clock timeout 2.5s at step 7", id="timeout"),
    pytest.param(stop_for(FloatingPointError("non-finite curvature factor"), 4), Status.DIVERGED,
                 "non-finite curvature factor during step 5", id="floating-point-error"),
    pytest.param(stop_for(RuntimeError("boom"), 2), Status.FAILED, "RuntimeError: boom (at step 2)", id="other-error"),
]


@pytest.mark.parametrize("stop, status, reason", CASES)
def test_each_stop_knows_its_status_and_reason(stop, status, reason):
    assert isinstance(stop, StopRun)
    assert stop.status is status and stop.reason == reason == str(stop)


def test_a_stop_maps_to_itself_and_failures_are_failed():
    stop = Diverged("loss blow-up", 1)
    assert stop_for(stop, 99) is stop
    assert isinstance(stop_for(KeyError("x"), 0), Failed)


def test_a_run_without_timeout_s_gets_the_default_wall_clock_limit(monkeypatch):
    """A pathological configuration cannot hold a suite forever: the default limit fires and says so."""
    import benchsuite.run.runner as runner
    from benchsuite.config.spec import Budget, RunSpec

    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", budget=Budget(steps=50))
    assert runner.timeout_of(spec) == runner.DEFAULT_TIMEOUT_S == 1800.0
    assert runner.timeout_of(RunSpec(task="t", activation="a", optimizer="o", timeout_s=5)) == 5.0
    monkeypatch.setattr(runner, "DEFAULT_TIMEOUT_S", 0.0)
    rec = runner.run(spec)
    assert rec.status == Status.TIMEOUT
    assert "the default limit; set timeout_s in the suite file" in rec.reason
