"""No result is ever lost: unreadable records are moved aside byte for byte, newer schemas are refused,
records are strict, compact, group-readable JSON, and wrong field types name the file and the field."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.errors import ResultsError
from benchsuite.records.record import SCHEMA_VERSION, NewerSchemaError, RunRecord, Status
from benchsuite.records.store import QUARANTINE, ResultStore
from benchsuite.run.executor import run_local
from benchsuite.run.runner import run


def _spec(seed: int = 0) -> RunSpec:
    return RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", seed=seed, size="tiny",
                   budget=Budget(steps=2), eval_every=2)


@pytest.fixture(scope="module")
def good_record() -> RunRecord:
    return run(_spec())


def _valid_dict(rec: RunRecord) -> dict:
    return json.loads(rec.to_json())


def _broken_files(rec: RunRecord) -> dict[str, bytes]:
    """Every kind of file the store cannot read, as the bytes found at the record's path."""
    good = _valid_dict(rec)
    text = rec.to_json()
    cases = {
        "empty": b"",
        "truncated": text[: len(text) // 2].encode(),
        "garbage": b"\x00\xff\xfe garbage \x80",
        "not_utf8": "{\"run_id\": \"\xe9\"}".encode("latin-1"),
        "json_array": b"[1, 2, 3]",
        "missing_fields": json.dumps({"schema_version": SCHEMA_VERSION, "run_id": rec.run_id}).encode(),
        "older_schema": json.dumps({**good, "schema_version": 0}).encode(),
        "no_schema": json.dumps({k: v for k, v in good.items() if k != "schema_version"}).encode(),
        "wrong_type_steps": json.dumps({**good, "steps": "many"}).encode(),
        "wrong_type_evals": json.dumps({**good, "evals": [{"step": "x"}]}).encode(),
        "wrong_type_spec": json.dumps({**good, "spec": {**good["spec"], "seed": "zero"}}).encode(),
        "unknown_status": json.dumps({**good, "status": "exploded"}).encode(),
    }
    return cases


def test_a_suite_over_every_kind_of_broken_file_touches_none_of_them(tmp_path, good_record):
    """Each broken file is renamed aside with its bytes intact, and the run is redone into a fresh file."""
    spec = _spec()
    for name, content in _broken_files(good_record).items():
        root = tmp_path / name
        store = ResultStore(root)
        store.path(spec.run_id).write_bytes(content)
        summary = run_local([spec], store)
        assert summary.ran == 1, name
        moved = [p for p in root.iterdir() if QUARANTINE in p.name]
        assert len(moved) == 1, name
        assert moved[0].read_bytes() == content, name  # byte for byte untouched
        assert moved[0].name.startswith(f"{spec.run_id}.json{QUARANTINE}")
        assert store.load(spec.run_id).status is Status.COMPLETED
        assert store.run_ids() == [spec.run_id]  # the quarantined file is no record


def test_a_record_of_a_newer_schema_is_refused_before_anything_runs(tmp_path, good_record):
    store = ResultStore(tmp_path)
    newer = {**_valid_dict(good_record), "schema_version": SCHEMA_VERSION + 1,
             "provenance": {"versions": {"benchsuite": "9.9.9"}}}
    content = json.dumps(newer).encode()
    first, second = _spec(seed=1), _spec(seed=0)  # the newer record belongs to the second spec
    store.path(second.run_id).write_bytes(content)
    with pytest.raises(NewerSchemaError, match=r"schema_version 2, written by benchsuite 9\.9\.9"):
        run_local([first, second], store)
    assert store.path(second.run_id).read_bytes() == content
    assert not store.path(first.run_id).exists()  # refused before the first run started
    assert not [p for p in tmp_path.iterdir() if QUARANTINE in p.name]


def test_records_are_strict_compact_json_and_non_finite_values_read_back_exactly(tmp_path, good_record):
    rec = RunRecord(**{**vars(good_record)})
    rec.status, rec.reason = Status.DIVERGED, "non-finite loss"
    rec.step_log = {"step": [1, 2, 3], "loss": [0.5, math.inf, math.nan], "time": [0.1, 0.2, -math.inf]}
    rec.evals = [{"step": 3, "train_loss": math.nan, "valid_loss": -math.inf}]
    store = ResultStore(tmp_path)
    text = store.write(rec).read_text()

    def reject(name: str) -> None:
        raise ValueError(f"bare {name}")

    json.loads(text, parse_constant=reject)  # a strict parser reads it
    assert "\n" not in text and ", " not in text  # compact
    back = store.load(rec.run_id)
    assert back.step_log["loss"][:2] == [0.5, math.inf] and math.isnan(back.step_log["loss"][2])
    assert back.step_log["time"][2] == -math.inf
    assert math.isnan(back.evals[0]["train_loss"]) and back.evals[0]["valid_loss"] == -math.inf


def test_a_literal_tag_lookalike_with_another_value_stays_a_table(good_record):
    rec = RunRecord(**{**vars(good_record)})
    rec.provenance = {"note": {"$float": "not a number word"}}
    assert RunRecord.from_json(rec.to_json()).provenance == rec.provenance


def test_records_are_group_readable(tmp_path, good_record):
    old = os.umask(0o022)
    try:
        path = ResultStore(tmp_path).write(good_record)
    finally:
        os.umask(old)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o644, oct(mode)


@pytest.mark.parametrize(("field", "value", "what"), [
    ("steps", "many", "a non-negative integer"),
    ("steps", -1, "a non-negative integer"),
    ("train_seconds", "fast", "a number"),
    ("step_log", {"loss": ["x"]}, "a table of number lists"),
    ("evals", {"step": 1}, "a list of tables of numbers"),
    ("peak_rss_bytes", 1.5, "an integer or null"),
    ("provenance", [], "a table"),
], ids=lambda v: str(v)[:20])
def test_a_wrong_field_type_names_the_file_and_the_field(good_record, field, value, what):
    text = json.dumps({**_valid_dict(good_record), field: value})
    with pytest.raises(ResultsError, match=rf"some/file\.json: field '{field}' is .*, not {what}"):
        RunRecord.from_json(text, source="some/file.json")


def test_the_report_reader_lists_a_wrong_type_record_instead_of_raising(tmp_path, good_record):
    store = ResultStore(tmp_path)
    store.write(good_record)
    (tmp_path / "bad.json").write_text(json.dumps({**_valid_dict(good_record), "run_id": "bad", "steps": "many"}))
    records, problems = store.records()
    assert [r.run_id for r in records] == [good_record.run_id]
    assert len(problems) == 1 and "bad.json" in problems[0] and "'steps'" in problems[0]
