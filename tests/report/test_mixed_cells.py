"""The report survives several records in one cell, and winner lines count diverged seeds against a method."""

from __future__ import annotations

from dataclasses import replace

from benchsuite.cli import main
from benchsuite.config.spec import Budget
from benchsuite.records.store import ResultStore
from benchsuite.report.build import build_report
from benchsuite.report.cells import split_mixed_cells
from tests.report.test_report import _hand_record


def _with_steps(rec, steps: int):
    spec = replace(rec.spec, budget=Budget(steps=steps))
    return replace(rec, run_id=f"{rec.run_id}-s{steps}", spec=spec)


def test_records_of_one_cell_with_other_budgets_become_separate_columns():
    a5, a6 = _with_steps(_hand_record(0, 1.0, optimizer="adam"), 5), _with_steps(_hand_record(0, 0.9, optimizer="adam"), 6)
    sgd = _hand_record(0, 2.0)
    out, notes = split_mixed_cells([a5, a6, sgd])
    assert [r.spec.display_optimizer for r in out] == ["adam [budget.steps=5]", "adam [budget.steps=6]", "sgd"]
    assert len(notes) == 1 and "`adam`" in notes[0] and "budget.steps" in notes[0]
    assert [r.run_id for r in out] == [a5.run_id, a6.run_id, sgd.run_id]  # records keep their ids


def test_one_record_per_cell_is_left_alone():
    recs = [_hand_record(0, 1.0), _hand_record(1, 1.2), _hand_record(0, 0.8, optimizer="adam")]
    out, notes = split_mixed_cells(recs)
    assert out == recs and notes == []


def test_the_tour_case_reports_through_the_cli(tmp_path, capsys):
    """Two runs of the same columns with --steps 5 and --steps 6 into one directory (the README tour's failure)."""
    store = ResultStore(tmp_path / "res")
    for opt in ("adam", "sgd"):
        for seed in (0, 1):
            for steps in (5, 6):
                store.write(_with_steps(_hand_record(seed, 1.0 + steps / 10, optimizer=opt), steps))
    code = main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep"), "--no-plots"])
    out, err = capsys.readouterr()
    assert code == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## How records were grouped" in md and "adam [budget.steps=6]" in md and "sgd [budget.steps=5]" in md
    assert "note" in out


def test_a_column_with_a_diverged_seed_cannot_win_the_loss_line(tmp_path):
    store = ResultStore(tmp_path / "res")
    store.write(_hand_record(0, 0.1, optimizer="kfgn", ttt=0.01))
    store.write(_hand_record(1, 5.0, optimizer="kfgn", status="diverged"))
    for seed in (0, 1):
        store.write(_hand_record(seed, 0.5, optimizer="adam", ttt=0.5))
    md = build_report(tmp_path / "res", tmp_path / "rep", plots=False).markdown
    line = next(x for x in md.splitlines() if x.startswith("- **relu**"))
    assert "lowest final train loss: adam (0.5)" in line
    assert "fastest to target: adam" in line  # kfgn's median over its 2 seeds is +inf (one never got there)
    assert "not eligible: kfgn (1/2 seeds not completed)" in line
