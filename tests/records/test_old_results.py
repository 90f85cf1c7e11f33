"""Results written before records were typed still load, report and re-run to the same records.

``data/results_0964f01/`` holds three records (a completed run, a tuning trial, a
diverged run) written by the code of commit d369e99, when a record's ``spec`` was a
plain dict and its ``status`` a plain string. They must load as typed records, write
back the same values (now as compact strict JSON), report through ``benchsuite report``, and the runner
must still produce them (same run ids, fields, steps and losses).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchsuite.cli import main
from benchsuite.config.spec import RunSpec
from benchsuite.errors import ResultsError
from benchsuite.records.record import RunRecord, Status, dumps_strict
from benchsuite.records.store import ResultStore
from benchsuite.run.runner import run

OLD = Path(__file__).parent / "data" / "results_0964f01"
OLD_FILES = sorted(OLD.glob("*.json"))
IDS = {"786d0ff762b20064": Status.COMPLETED, "32e257e5c18e6207": Status.COMPLETED,
       "ddc18b945648aea5": Status.DIVERGED}


def test_the_fixture_is_there():
    assert {p.stem for p in OLD_FILES} == set(IDS)


@pytest.mark.parametrize("path", OLD_FILES, ids=lambda p: p.stem)
def test_old_record_loads_typed_and_writes_back_the_same_values(path):
    text = path.read_text(encoding="utf-8")
    rec = RunRecord.from_json(text, source=str(path))
    assert isinstance(rec.spec, RunSpec)
    assert rec.status is IDS[path.stem]
    assert rec.run_id == path.stem == rec.spec.run_id  # the content hash of the spec did not move
    assert rec.to_json() == dumps_strict(json.loads(text))  # same values; bare NaN now tagged


def test_old_results_report_through_the_cli(tmp_path, capsys):
    results = tmp_path / "old"
    shutil.copytree(OLD, results)
    code = main(["report", str(results), "--out", str(tmp_path / "report"), "--no-plots"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "skipped unreadable record" not in out
    md = (tmp_path / "report" / "report.md").read_text()
    assert "2 runs (and 1 tuning trials)" in md
    assert "**diverged** — loss blow-up" in md


@pytest.mark.parametrize("path", OLD_FILES, ids=lambda p: p.stem)
def test_the_runner_still_writes_the_old_records(path):
    """Same spec, same record: every field but wall-clock times and provenance."""
    old = RunRecord.from_json(path.read_text(encoding="utf-8"))
    new = run(old.spec)
    assert new.run_id == old.run_id
    assert (new.status, new.steps, new.target, new.time_to_target) == (old.status, old.steps, old.target,
                                                                         old.time_to_target)
    if old.status is Status.DIVERGED:  # the blown-up loss in the reason is chaotic across machines
        pattern = r"loss blow-up \(\S+ > 2 x initial 2\.344\) at step 2"
        assert re.fullmatch(pattern, new.reason) and re.fullmatch(pattern, old.reason)
    else:
        assert new.reason == old.reason
    assert new.step_log["step"] == old.step_log["step"]
    assert new.step_log["loss"] == pytest.approx(old.step_log["loss"], rel=1e-4)
    assert [sorted(e) for e in new.evals] == [sorted(e) for e in old.evals]
    for a, b in zip(new.evals, old.evals):
        assert {k: v for k, v in a.items() if k != "time"} == pytest.approx(
            {k: v for k, v in b.items() if k != "time"}, rel=1e-4)
    assert set(json.loads(new.to_json())) == set(json.loads(path.read_text()))


def _old_dict() -> dict:
    return json.loads(OLD_FILES[0].read_text(encoding="utf-8"))


@pytest.mark.parametrize("change, why", [
    pytest.param(lambda d: d["spec"].update(momentum_schedule="cosine"), "Unknown RunSpec field(s) ['momentum_schedule']",
                 id="spec-field-this-version-lacks"),
    pytest.param(lambda d: d["spec"].update(dtype="bfloat16"), "Invalid dtype: bfloat16", id="spec-value-now-invalid"),
    pytest.param(lambda d: d.update(schema_version=0), "schema_version 0", id="older-schema"),
])
def test_a_record_this_version_cannot_read_says_why_and_what_to_do(tmp_path, change, why):
    d = _old_dict()
    change(d)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ResultsError) as info:
        ResultStore(tmp_path).records(strict=True)
    message = str(info.value)
    assert str(path) in message and why in message
    assert "re-run the suite with this benchsuite" in message


def test_unreadable_old_record_is_listed_in_the_report_and_the_others_still_load(tmp_path, capsys):
    results = tmp_path / "old"
    shutil.copytree(OLD, results)
    d = _old_dict()
    d["spec"]["momentum_schedule"] = "cosine"
    (results / "future.json").write_text(json.dumps(d))
    code = main(["report", str(results), "--out", str(tmp_path / "report"), "--no-plots"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "skipped unreadable record" in out and "future.json" in out and "momentum_schedule" in out
    assert "2 runs" in (tmp_path / "report" / "report.md").read_text()


def test_status_is_typed_and_formats_as_stored():
    assert Status("completed") is Status.COMPLETED and f"{Status.TIMEOUT}" == "timeout"
    assert Status.is_completed("completed") and not Status.is_completed(Status.FAILED)
    assert [s.finished for s in Status] == [True, True, False, True]
