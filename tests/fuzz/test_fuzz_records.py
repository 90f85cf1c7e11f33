"""Fuzzing record files: any bytes at a record's path give a record or one ResultsError, never a traceback.

Three generators: arbitrary JSON documents, a valid record with one field (or one spec
field) replaced by arbitrary JSON, and a valid record's text cut or corrupted at an
arbitrary position. The store's reader must list every unreadable file as a problem
and keep every readable one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.errors import ResultsError
from benchsuite.records.record import RunRecord
from benchsuite.records.store import ResultStore

SPEC = RunSpec(task="digits_mlp", activation="relu", optimizer="sgd", seed=0, size="tiny", budget=Budget(steps=3))
GOOD = RunRecord(
    run_id=SPEC.run_id, spec=SPEC, status="completed", reason="budget", steps=3, train_seconds=0.5,
    wall_seconds=1.0, step_log={"step": [1, 2, 3], "loss": [2.0, 1.9, 1.8], "time": [0.1, 0.2, 0.3]},
    evals=[{"step": 0, "time": 0.0, "train_loss": 2.3, "valid_loss": 2.3},
           {"step": 3, "time": 0.5, "train_loss": 1.5, "valid_loss": 1.6}],
    target={"metric": "valid_error", "value": 0.05, "mode": "min"}, provenance={"versions": {"benchsuite": "x"}},
)
GOOD_DICT = json.loads(GOOD.to_json())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _read(text: str) -> RunRecord | None:
    """The record, or None after exactly one ResultsError (anything else fails the test)."""
    try:
        return RunRecord.from_json(text, source="fuzz.json")
    except ResultsError as exc:
        assert "\n" not in str(exc).strip() or "fuzz.json" in str(exc)
        assert "fuzz.json" in str(exc)
        return None


@given(json_values)
def test_any_json_document_is_a_record_or_one_results_error(value):
    _read(json.dumps(value, allow_nan=True))


@given(st.sampled_from(sorted(GOOD_DICT)), json_values)
def test_a_valid_record_with_one_field_replaced(field, value):
    rec = _read(json.dumps({**GOOD_DICT, field: value}, allow_nan=True))
    if rec is not None:  # what loads must be usable: it writes and reads back
        assert RunRecord.from_json(rec.to_json()) == rec or rec.to_json() == RunRecord.from_json(rec.to_json()).to_json()


@given(st.sampled_from(sorted(GOOD_DICT["spec"])), json_values)
def test_a_valid_record_with_one_spec_field_replaced(field, value):
    rec = _read(json.dumps({**GOOD_DICT, "spec": {**GOOD_DICT["spec"], field: value}}, allow_nan=True))
    if rec is not None:
        assert isinstance(rec.spec, RunSpec)


@given(st.integers(min_value=0, max_value=len(GOOD.to_json())), st.binary(max_size=8))
def test_a_record_cut_or_corrupted_anywhere(cut, junk):
    text = GOOD.to_json()
    _read(text[:cut])
    _read(text[:cut] + junk.decode("latin-1") + text[cut:])


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
                max_size=4))
def test_the_store_reader_lists_unreadable_files_and_never_raises(tmp_path_factory, files):
    root = Path(tmp_path_factory.mktemp("store"))
    store = ResultStore(root)
    store.write(GOOD)
    for k, content in enumerate(files):
        (root / f"junk{k}.json").write_bytes(content)
    records, problems = store.records()
    assert [r.run_id for r in records] == [GOOD.run_id]
    assert len(problems) == len(files)


@pytest.mark.slow
@settings(max_examples=20_000)
@given(st.sampled_from(sorted(GOOD_DICT)), json_values)
def test_many_more_replaced_fields(field, value):
    _read(json.dumps({**GOOD_DICT, field: value}, allow_nan=True))
