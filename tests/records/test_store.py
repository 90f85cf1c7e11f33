"""Results store: atomic writes, round trips, tidy frames, broken files skipped (or raised when strict)."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.errors import ResultsError
from benchsuite.records.record import SCHEMA_VERSION, RunRecord
from benchsuite.records.store import ResultStore
from benchsuite.report.frames import evals_frame, runs_frame, stats_frame, steps_frame
from benchsuite.run.executor import run_local
from benchsuite.run.runner import run


def _record(run_id: str = "abc123", *, status: str = "completed", steps: int = 3, seed: int = 0,
            activation: str = "relu") -> RunRecord:
    spec = RunSpec(task="digits_mlp", activation=activation, optimizer="sgd", seed=seed, size="tiny")
    losses = [2.0 - 0.1 * i for i in range(steps)]
    return RunRecord(
        run_id=run_id, spec=spec, status=status, reason="budget", steps=steps,
        train_seconds=0.5, wall_seconds=1.0,
        step_log={"step": list(range(1, steps + 1)), "loss": losses, "time": [0.1 * i for i in range(1, steps + 1)]},
        evals=[{"step": 0, "time": 0.0, "epoch": 0.0, "train_loss": 2.3, "valid_loss": 2.3, "valid_error": 0.9},
               {"step": steps, "time": 0.5, "epoch": 0.1, "train_loss": 1.5, "valid_loss": 1.6, "valid_error": 0.4}],
        target={"metric": "valid_error", "value": 0.05, "mode": "min"},
        provenance={"git_commit": "0" * 40, "device": "cpu", "host": "h", "versions": {"torch": "x"}},
    )


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def test_write_then_load_round_trip(tmp_path):
    store = ResultStore(tmp_path / "results")
    rec = _record()
    path = store.write(rec)
    assert path == tmp_path / "results" / "abc123.json"
    assert store.load("abc123") == rec
    assert store.run_ids() == ["abc123"]
    assert store.is_finished("abc123")
    assert _leftovers(store.root) == []


def test_non_finite_values_survive_a_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    rec = _record(status="diverged")
    rec.step_log["loss"][-1] = math.nan
    rec.step_log["loss"][-2] = math.inf
    store.write(rec)
    back = store.load(rec.run_id)
    assert math.isnan(back.step_log["loss"][-1]) and back.step_log["loss"][-2] == math.inf


def test_real_run_record_round_trip(tmp_path):
    rec = run(RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", budget=Budget(steps=2)))
    store = ResultStore(tmp_path)
    store.write(rec)
    assert store.load(rec.run_id) == rec


@pytest.mark.parametrize("crash_in", ["os.replace", "RunRecord.to_json", "os.fsync"])
def test_crash_during_write_keeps_previous_record_and_leaves_no_temp_file(tmp_path, monkeypatch, crash_in):
    store = ResultStore(tmp_path)
    finished = _record(steps=3)
    store.write(finished)
    before = (tmp_path / "abc123.json").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash during write")

    if crash_in == "os.replace":
        monkeypatch.setattr(os, "replace", crash)
    elif crash_in == "os.fsync":
        monkeypatch.setattr(os, "fsync", crash)
    else:
        monkeypatch.setattr(RunRecord, "to_json", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.write(_record(steps=5, status="failed"))
    monkeypatch.undo()
    assert (tmp_path / "abc123.json").read_bytes() == before
    assert store.load("abc123") == finished
    assert _leftovers(tmp_path) == []


def test_interrupt_during_write_cleans_up(tmp_path, monkeypatch):
    """KeyboardInterrupt (Ctrl-C) between write and rename must not leave a temp file either."""
    store = ResultStore(tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.write(_record())
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_without_create_raises(tmp_path):
    with pytest.raises(ResultsError, match="Results directory not found"):
        ResultStore(tmp_path / "nope", create=False)


def test_load_missing_record_raises(tmp_path):
    with pytest.raises(ResultsError, match="No record for run deadbeef"):
        ResultStore(tmp_path).load("deadbeef")


@pytest.mark.parametrize(
    "status, finished",
    [("completed", True), ("diverged", True), ("timeout", True), ("failed", False)],
    ids=lambda v: str(v),
)
def test_finished_statuses(tmp_path, status, finished):
    store = ResultStore(tmp_path)
    store.write(_record(status=status))
    assert store.is_finished("abc123") is finished


# --------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------


def test_frames_have_one_row_per_run_step_and_eval(tmp_path):
    store = ResultStore(tmp_path)
    records = [_record("r1", steps=3, seed=0), _record("r2", steps=5, seed=1), _record("r3", steps=4, activation="tanh")]
    for rec in records:
        store.write(rec)
    loaded, problems = store.records()
    assert problems == [] and len(loaded) == 3
    runs = runs_frame(loaded)
    assert len(runs) == 3 and sorted(runs.run_id) == ["r1", "r2", "r3"]
    row = runs.set_index("run_id").loc["r2"]
    assert (row.task, row.activation, row.optimizer, row.seed, row.steps) == ("digits_mlp", "relu", "sgd", 1, 5)
    assert row.final_train_loss == 1.5 and row.best_train_loss == 1.5 and row.final_valid_error == 0.4
    assert row.sec_per_step == pytest.approx(0.5 / 5)
    steps = steps_frame(loaded)
    assert len(steps) == 3 + 5 + 4
    assert steps.groupby("run_id").size().to_dict() == {"r1": 3, "r2": 5, "r3": 4}
    assert {"step", "loss", "time", "task", "activation", "optimizer", "seed"} <= set(steps.columns)
    evals = evals_frame(loaded)
    assert len(evals) == 6 and {"train_loss", "valid_error"} <= set(evals.columns)
    assert stats_frame(loaded).empty


def test_frames_of_no_records_are_empty_with_columns():
    assert steps_frame([]).empty and "loss" in steps_frame([]).columns
    assert evals_frame([]).empty and "step" in evals_frame([]).columns
    assert runs_frame([]).empty


def test_optimizer_label_is_the_optimizer_column():
    rec = _record()
    rec.spec = replace(rec.spec, optimizer_label="sgd-nesterov")
    assert runs_frame([rec]).optimizer.tolist() == ["sgd-nesterov"]


# --------------------------------------------------------------------------------------
# Broken files
# --------------------------------------------------------------------------------------


def _good_dict() -> dict:
    return json.loads(_record("good").to_json())


BROKEN = [
    pytest.param("{ not json", "not valid JSON", id="invalid-json"),
    pytest.param("", "not valid JSON", id="empty-file"),
    pytest.param('{"run_id": "x", "spec"', "not valid JSON", id="truncated"),
    pytest.param("[1, 2, 3]", "expected a JSON object", id="json-array"),
    pytest.param(json.dumps({**_good_dict(), "schema_version": 99}), "schema_version 99", id="schema-version-99"),
    pytest.param(json.dumps({k: v for k, v in _good_dict().items() if k != "schema_version"}), "schema_version None",
                 id="schema-version-missing"),
    pytest.param(json.dumps({k: v for k, v in _good_dict().items() if k not in ("status", "spec")}),
                 "missing field(s) ['spec', 'status']", id="missing-fields"),
    pytest.param(json.dumps({**_good_dict(), "status": "exploded"}), "unknown status 'exploded'", id="unknown-status"),
    pytest.param(b"\xff\xfe\x00 not utf-8", "", id="not-utf8"),
    pytest.param(json.dumps({**_good_dict(), "spec": {}}), "", id="spec-without-task"),
]


@pytest.mark.parametrize("content, message", BROKEN)
def test_broken_file_skipped_with_message_naming_it(tmp_path, content, message):
    store = ResultStore(tmp_path)
    for i in range(2):
        store.write(_record(f"good{i}"))
    bad = tmp_path / "broken.json"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    records, problems = store.records()
    assert sorted(r.run_id for r in records) == ["good0", "good1"]
    assert len(problems) == 1
    assert str(bad) in problems[0]
    assert message in problems[0]


@pytest.mark.parametrize("content, message", BROKEN)
def test_broken_file_strict_raises(tmp_path, content, message):
    store = ResultStore(tmp_path)
    store.write(_record("good"))
    bad = tmp_path / "broken.json"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ResultsError) as info:
        store.records(strict=True)
    assert str(bad) in str(info.value)


def test_broken_record_is_redone_on_resume(tmp_path, caplog):
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", size="tiny", budget=Budget(steps=2))
    store = ResultStore(tmp_path)
    store.path(spec.run_id).write_text("{ half a record")
    with caplog.at_level(logging.WARNING, logger="benchsuite.records.store"):
        assert not store.is_finished(spec.run_id)
    assert any(str(store.path(spec.run_id)) in r.getMessage() for r in caplog.records)
    summary = run_local([spec], store)
    assert summary.ran == 1 and summary.skipped == 0
    assert store.load(spec.run_id).status == "completed"


def test_from_json_ignores_unknown_keys_for_forward_compatibility():
    d = {**_good_dict(), "a_future_field": 1}
    assert RunRecord.from_json(json.dumps(d)).run_id == "good"
    assert SCHEMA_VERSION == d["schema_version"]
