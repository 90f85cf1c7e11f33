"""Shared fixtures for the foundation tests (registry, tasks, runner, store, suites, CLI).

The one autouse fixture pins torch to one thread in every test. Test-only
registry entries are added by fixtures and removed again at teardown, so the registries
look exactly like a user's after every test.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.contracts.optimizer import (
    OPTIMIZERS,
    Capabilities,
    OptimizerConfig,
    register_optimizer,
)
from benchsuite.contracts.task import TASKS


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """One intra-op thread per test process.

    The models are tiny, so threads buy nothing; with ``-n 2`` on two cores (or any other load
    on the machine) torch's spinning worker threads make each step 10-100x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------
# Small specs
# --------------------------------------------------------------------------------------


@pytest.fixture
def make_spec() -> Callable[..., RunSpec]:
    """``make_spec(**overrides)``: a tiny digits/relu/sgd spec of 10 steps, eval every 5."""

    def factory(**overrides: Any) -> RunSpec:
        base: dict[str, Any] = dict(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny",
                                    budget=Budget(steps=10), eval_every=5)
        base.update(overrides)
        return RunSpec(**base)

    return factory


# --------------------------------------------------------------------------------------
# Test-only optimizers: misbehaving on purpose, to exercise divergence/failure handling
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeConfig(OptimizerConfig):
    lr: float = 0.1


class PoisonOptimizer(torch.optim.Optimizer):
    """Evaluates the closure, then writes NaN into every parameter: the *next* loss is NaN."""

    def __init__(self, params: Any, lr: float):
        super().__init__(params, {"lr": lr})

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(math.nan)
        return loss


class NonFiniteCurvature(torch.optim.Optimizer):
    """Raises FloatingPointError in ``step``, as a second-order method meeting NaN curvature does."""

    def __init__(self, params: Any, lr: float):
        super().__init__(params, {"lr": lr})

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        closure()
        raise FloatingPointError("non-finite curvature factor")


class SwitchableFailure(torch.optim.Optimizer):
    """Plain SGD that raises inside ``step`` while ``switch.fail`` is true."""

    def __init__(self, params: Any, lr: float, switch: SimpleNamespace):
        super().__init__(params, {"lr": lr})
        self.switch = switch

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        loss = closure()
        if self.switch.fail:
            raise RuntimeError("optimizer exploded on purpose")
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(p.grad, alpha=-group["lr"])
        return loss


@pytest.fixture
def bad_optimizers() -> Iterator[SimpleNamespace]:
    """Registers test-only optimizers and removes them after.

    ``test_poison``: NaN parameters after step 1; ``test_raise``: always raises in step;
    ``test_fpe``: FloatingPointError in step; ``test_flaky``: raises while ``.switch.fail``.
    """
    always = SimpleNamespace(fail=True)
    flaky = SimpleNamespace(fail=True)
    names = {"poison": "test_poison", "raising": "test_raise", "flaky": "test_flaky", "fpe": "test_fpe"}
    register_optimizer(names["poison"], ProbeConfig, description="test-only: NaN after step 1")(
        lambda model, loss_fn, c: PoisonOptimizer(model.parameters(), c.lr))
    register_optimizer(names["raising"], ProbeConfig, description="test-only: raises in step")(
        lambda model, loss_fn, c: SwitchableFailure(model.parameters(), c.lr, always))
    register_optimizer(names["fpe"], ProbeConfig, description="test-only: FloatingPointError in step")(
        lambda model, loss_fn, c: NonFiniteCurvature(model.parameters(), c.lr))
    register_optimizer(names["flaky"], ProbeConfig, Capabilities(), description="test-only: raises on demand")(
        lambda model, loss_fn, c: SwitchableFailure(model.parameters(), c.lr, flaky))
    try:
        yield SimpleNamespace(switch=flaky, **names)
    finally:
        for name in names.values():
            OPTIMIZERS.unregister(name)


# --------------------------------------------------------------------------------------
# No network
# --------------------------------------------------------------------------------------


class NetworkBlocked(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection raises :class:`NetworkBlocked`."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise NetworkBlocked(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------------------
# Report parsing
# --------------------------------------------------------------------------------------


def _table_rows(markdown: str) -> list[tuple[str, str, str]]:
    """(task, activation, optimizer) of every row of the first table under each '## <task>' heading."""
    rows: list[tuple[str, str, str]] = []
    task, state = None, "idle"  # idle -> header -> body -> done
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            task, state = (heading, "idle") if heading in TASKS.names() else (None, "done")
        elif task is None or state == "done":
            continue
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if state == "idle":
                assert cells[:2] == ["activation", "optimizer"], line
                state = "header"
            elif state == "header":
                state = "body"  # the |---| separator
            else:
                rows.append((task, cells[0], cells[1]))
        elif state == "body":
            state = "done"
    return rows


@pytest.fixture
def report_table_rows() -> Callable[[str], list[tuple[str, str, str]]]:
    """Parses report.md into its comparison rows: ``[(task, activation, optimizer), ...]``."""
    return _table_rows


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def png_magic() -> bytes:
    return PNG_MAGIC


# --------------------------------------------------------------------------------------
# CI: a test that skips because a package is missing is a defect of the install command
# --------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``CI``, turn ``pytest.importorskip`` skips into failures.

    The README's test command must install everything the tests use (BackPACK,
    curvlinops and their dependencies): a cross-check that silently skips for a
    newcomer is a hole in the suite, so CI, which runs that command verbatim, fails.
    """
    outcome = yield
    report = outcome.get_result()
    if not (os.environ.get("CI") and report.skipped and call.excinfo is not None):
        return
    message = str(call.excinfo.value)
    if message.startswith("could not import"):
        report.outcome = "failed"
        report.longrepr = f"{message} (the README's test command must install it)"
