"""A killed run resumes from its last checkpoint, and its record equals an uninterrupted run's (CPU)."""

from __future__ import annotations

import pytest

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.records.store import ResultStore
from benchsuite.run.checkpoint import checkpoint_path
from benchsuite.run.executor import CHECKPOINTS, run_local
from benchsuite.run.runner import run


class Killed(BaseException):
    """Stands for kill -9: not an Exception, so the runner does not turn it into a record."""


def _comparable(rec):
    return (rec.run_id, rec.status, rec.reason, rec.steps, rec.step_log["step"], rec.step_log["loss"],
            [{k: v for k, v in e.items() if k != "time"} for e in rec.evals], rec.time_to_target is None)


@pytest.mark.parametrize(("task", "activation", "optimizer", "hparams"), [
    ("digits_mlp", "relu", "adam", {}),
    ("digits_mlp", "prelu", "kfgn", {"variant": "kfac"}),  # MC factors: the RNG must come back exactly
    ("curves_autoencoder", "tanh", "hf", {}),
    ("digits_mlp", "maxout", "diag_gn", {}),
], ids=["adam", "kfgn-kfac-prelu", "hf", "diag_gn"])
def test_a_killed_run_resumes_to_the_uninterrupted_record(tmp_path, task, activation, optimizer, hparams):
    spec = RunSpec(task=task, activation=activation, optimizer=optimizer, hparams=hparams, size="tiny",
                   budget=Budget(steps=14), eval_every=4, checkpoint_every=5, seed=3)
    whole = run(spec)

    def kill_at_12(step: int) -> None:
        if step == 12:
            raise Killed

    with pytest.raises(Killed):
        run(spec, checkpoint_dir=tmp_path, on_step=kill_at_12)
    assert checkpoint_path(tmp_path, spec.run_id).is_file()  # the one saved after step 10
    resumed = run(spec, checkpoint_dir=tmp_path)
    assert _comparable(resumed) == _comparable(whole)
    assert resumed.train_seconds > 0


def test_the_executor_passes_the_store_checkpoints_and_removes_them_after_the_record(tmp_path):
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", budget=Budget(steps=6),
                   checkpoint_every=2)
    store = ResultStore(tmp_path)
    assert run_local([spec], store).ran == 1
    assert store.load(spec.run_id).steps == 6
    assert not checkpoint_path(tmp_path / CHECKPOINTS, spec.run_id).exists()


def test_an_unreadable_checkpoint_starts_the_run_afresh(tmp_path):
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", budget=Budget(steps=6),
                   checkpoint_every=2)
    checkpoint_path(tmp_path, spec.run_id).write_bytes(b"not a checkpoint")
    assert _comparable(run(spec, checkpoint_dir=tmp_path)) == _comparable(run(spec))
