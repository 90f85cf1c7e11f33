"""benchmarks/robustness_table.py: the robustness suite's outcome counts per optimizer column."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from benchsuite.config.spec import Budget, RunSpec
from benchsuite.records.record import RunRecord, Status
from benchsuite.records.store import ResultStore

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "robustness_table.py"


@pytest.fixture(scope="module")
def table_module():
    spec = importlib.util.spec_from_file_location("robustness_table", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(optimizer: str, seed: int, status: Status, initial: float, final: float, trial: int | None = None,
            label: str | None = None) -> RunRecord:
    spec = RunSpec(task="digits_mlp", activation="relu", optimizer=optimizer, size="tiny", seed=seed,
                   budget=Budget(steps=5), optimizer_label=label, trial=trial)
    rec = RunRecord(run_id=spec.run_id, spec=spec, status=status, reason="test")
    rec.evals = [{"step": 0, "train_loss": initial}, {"step": 5, "train_loss": final}]
    return rec


def test_counts_per_column(table_module):
    records = [
        _record("adam", 0, Status.COMPLETED, 2.0, 1.0),
        _record("adam", 1, Status.COMPLETED, 2.0, 1.0),
        _record("adam", 0, Status.COMPLETED, 2.0, 0.1, trial=3),  # a tuning trial: left out
        _record("hf", 0, Status.COMPLETED, 2.0, 0.5),  # lowered, better than Adam
        _record("hf", 1, Status.COMPLETED, 2.0, 1.5),  # lowered, worse than Adam
        _record("diag_gn", 0, Status.DIVERGED, 2.0, math.nan),  # diverged: not lowered, worse
        _record("diag_gn", 1, Status.COMPLETED, 2.0, 3.0),  # loss raised, worse
        _record("diag_gn", 2, Status.FAILED, 2.0, 2.0),  # no Adam run for seed 2: not compared
        _record("kfgn", 0, Status.COMPLETED, 2.0, 0.2, label="kfgn-kfra"),
    ]
    table = table_module.robustness_table(records)
    assert table.loc["adam"].to_dict() == {"runs": 2, "completed": 2, "diverged": 0, "failed": 0, "timeout": 0,
                                           "loss lowered": 2, "worse than baseline": 0, "compared": 2}
    assert table.loc["hf", "loss lowered"] == 2 and table.loc["hf", "worse than baseline"] == 1
    row = table.loc["diag_gn"]
    assert (row.runs, row.completed, row.diverged, row.failed) == (3, 1, 1, 1)
    assert row["loss lowered"] == 0 and row["worse than baseline"] == 2 and row.compared == 2
    assert table.loc["kfgn-kfra", "worse than baseline"] == 0  # columns by their suite label


def test_script_prints_the_table_of_a_results_directory(table_module, tmp_path, capsys):
    store = ResultStore(tmp_path)
    for rec in (_record("adam", 0, Status.COMPLETED, 2.0, 1.0), _record("hf", 0, Status.DIVERGED, 2.0, math.inf)):
        store.write(rec)
    table_module.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "| optimizer | runs | completed | diverged | failed | timeout | loss lowered | worse than adam |" in out
    assert "| hf | 1 | 0 | 1 | 0 | 0 | 0 | 1 | 1 |" in out
