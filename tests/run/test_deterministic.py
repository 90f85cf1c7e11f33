"""Deterministic GPU mode: switched on for the run only, and on the CPU the same losses as without it."""

from __future__ import annotations

import os

import pytest
import torch

from benchsuite.config.spec import Budget
from benchsuite.run.runner import run
from benchsuite.run.seeding import CUBLAS_WORKSPACE, deterministic_mode

OPTIMIZERS = ["sgd", "adam", "rmsprop", "kfgn", "hf", "diag_gn"]


def test_mode_is_on_inside_and_restored_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_mode_is_restored_when_the_run_raises(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with pytest.raises(RuntimeError), deterministic_mode():
        raise RuntimeError("boom")
    assert not torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the user's own setting is kept


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_cpu_losses_equal_the_default_mode(make_spec, optimizer):
    """Every optimizer runs under ``use_deterministic_algorithms`` (no op of theirs raises) and,
    on the CPU, computes exactly what it computes without the mode."""
    spec = make_spec(optimizer=optimizer, budget=Budget(steps=4), eval_every=2)
    det = run(spec.__class__(**{**spec.__dict__, "deterministic": True}))
    plain = run(spec)
    assert det.status == plain.status == "completed", (det.reason, plain.reason)
    assert det.step_log["loss"] == plain.step_log["loss"]
    assert det.provenance["deterministic"] is True and plain.provenance["deterministic"] is False
    assert det.run_id != plain.run_id


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_cuda_runs_repeat_exactly(make_spec, optimizer):
    spec = make_spec(optimizer=optimizer, device="cuda", budget=Budget(steps=6), eval_every=3, deterministic=True)
    a, b = run(spec), run(spec)
    assert a.status == b.status == "completed", (a.reason, b.reason)
    assert a.step_log["loss"] == b.step_log["loss"]
